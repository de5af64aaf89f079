"""Registers the demo product that ``make run`` starts beside the control plane (development only).

``demo_product_ensure`` creates what is missing: the service ``wingmanmatch-demo`` with a scrape source on the
demo's /metrics, two SLOs, the job monitor the demo pings every minute, a monitored endpoint on its
/api/health, and a flags:read token; then it writes the demo's configuration (the token and the ping
path are credentials: the file is readable by its owner only, and neither is ever printed). Run again,
it keeps what exists, and moves only the demo's own URLs when its port changed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models, transaction

from controlplane.audit import Actor, audit_record, snapshot

SERVICE = "wingmanmatch-demo"
JOB = "wingmanmatch-demo-match-refresh"
ENDPOINT = "wingmanmatch-demo-api"
TOKEN_NAME = "wingmanmatch-demo"  # noqa: S105 - a token's name, not a token
SCRAPE_INTERVAL_SECONDS = 15
CONFIG_DIR = "demo-product"
SECRET_FIELDS = ["ping_key"]


class DemoRefusedInProduction(Exception):
    """The demo product is for a developer's machine: never registered where DJANGO_ENV is production."""


@dataclass(frozen=True)
class DemoRegistration:
    config_file: Path
    metrics_url: str
    created: list[str]


def demo_dir() -> Path:
    return Path(settings.VAR_DIR) / CONFIG_DIR


def releases_file() -> Path:
    """Where the demo pipeline's backend step records what it deployed (one version a line, the last serves)."""
    return demo_dir() / "releases"


def _create(model: type[models.Model], actor: Actor, created: list[str], **values: Any) -> Any:
    obj = model._default_manager.create(**values)
    audit_record(
        actor=actor,
        action=f"{model._meta.model_name}.create",
        obj=obj,
        after=snapshot(obj, exclude=SECRET_FIELDS),
    )
    created.append(f"{model._meta.verbose_name} {obj}")
    return obj


def _move_url(obj: models.Model, field: str, url: str, actor: Actor) -> None:
    """The demo's own URL, when DEMO_PRODUCT_PORT changed since it was registered."""
    if getattr(obj, field) == url:
        return
    before = snapshot(obj, fields=[field])
    setattr(obj, field, url)
    obj.save(update_fields=[field])
    audit_record(actor=actor, action=f"{obj._meta.model_name}.change", obj=obj, before=before, after={field: url})


def demo_product_ensure(*, port: int, control_plane_url: str, actor: Actor) -> DemoRegistration:
    """Register the demo product and write its configuration; raises DemoRefusedInProduction in production."""
    from monitoring.models import (
        JobMonitor,
        MetricSource,
        MonitoredEndpoint,
        ObjectiveKind,
        ScheduleKind,
        Service,
        ServiceLevelObjective,
        SourceKind,
    )

    if settings.PRODUCTION:
        _remove_config()
        raise DemoRefusedInProduction("the demo product is for development only, and DJANGO_ENV is production")
    base = f"http://127.0.0.1:{port}"
    metrics_url = f"{base}/metrics"
    created: list[str] = []
    with transaction.atomic():
        service = Service.objects.filter(name=SERVICE).first() or _create(
            Service,
            actor,
            created,
            name=SERVICE,
            description="The demo product make run starts (development only): deploy slow-* or flaky-* to it.",
        )
        source = service.sources.filter(kind=SourceKind.SCRAPE).first()
        if source is None:
            _create(
                MetricSource,
                actor,
                created,
                service=service,
                kind=SourceKind.SCRAPE,
                urls=metrics_url,
                interval_seconds=SCRAPE_INTERVAL_SECONDS,
                timeout_seconds=5.0,
            )
        elif source.urls.startswith("http://127.0.0.1:") and source.url_list() != [metrics_url]:
            _move_url(source, "urls", metrics_url, actor)
        if not service.objectives.filter(name="availability").exists():
            _create(
                ServiceLevelObjective,
                actor,
                created,
                service=service,
                name="availability",
                kind=ObjectiveKind.AVAILABILITY,
                target_percent=99.0,
                window_days=28,
            )
        if not service.objectives.filter(name="latency-2s").exists():
            _create(
                ServiceLevelObjective,
                actor,
                created,
                service=service,
                name="latency-2s",
                kind=ObjectiveKind.LATENCY,
                target_percent=95.0,
                threshold_ms=2000,
                window_days=28,
            )
        job = JobMonitor.objects.filter(name=JOB).first() or _create(
            JobMonitor,
            actor,
            created,
            name=JOB,
            schedule_kind=ScheduleKind.PERIOD,
            period_seconds=60,
            grace_seconds=60,
        )
        endpoint = MonitoredEndpoint.objects.filter(name=ENDPOINT).first()
        health_url = f"{base}/api/health"
        if endpoint is None:
            _create(
                MonitoredEndpoint,
                actor,
                created,
                name=ENDPOINT,
                url=health_url,
                expected_status=200,
                body_contains="ok",
            )
        elif endpoint.url.startswith("http://127.0.0.1:"):
            _move_url(endpoint, "url", health_url, actor)
    token = _usable_token(actor, created)  # outside: revoking takes a transaction of its own (durable)
    config = _write_config(
        {
            "port": port,
            "control_plane_url": control_plane_url.rstrip("/"),
            "token": token,
            "ping_path": job.ping_path(),
            "releases_file": str(releases_file()),
        }
    )
    return DemoRegistration(config_file=config, metrics_url=metrics_url, created=created)


def _usable_token(actor: Actor, created: list[str]) -> str:
    """The token in the demo's configuration while it still works; else a new one (the old ones revoked)."""
    from controlplane.models import ApiToken, Scope
    from controlplane.services import api_token_create, api_token_revoke

    raw = _read_config().get("token")
    if isinstance(raw, str):
        kept = ApiToken.objects.usable().filter(token_hash=ApiToken.hash(raw), name=TOKEN_NAME).first()
        if kept is not None and kept.has_scope(Scope.FLAGS_READ):
            return raw
    for stale in ApiToken.objects.usable().filter(name=TOKEN_NAME):
        api_token_revoke(token=stale, actor=actor)
    token, raw = api_token_create(name=TOKEN_NAME, scopes=[Scope.FLAGS_READ.value], actor=actor)
    created.append(f"API token {token.name} (flags:read)")
    return raw


def config_file() -> Path:
    return demo_dir() / "config.json"


def _read_config() -> dict[str, Any]:
    try:
        data = json.loads(config_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_config(data: dict[str, Any]) -> Path:
    """Readable by its owner only from its first byte: it holds a token and a ping URL."""
    file = config_file()
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, json.dumps(data, indent=2).encode())
    finally:
        os.close(descriptor)
    os.replace(temporary, file)
    return file


def _remove_config() -> None:
    config_file().unlink(missing_ok=True)
