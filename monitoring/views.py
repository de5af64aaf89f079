"""The operator's dashboard at ``/``: the product's services and jobs first, then health, alerts and the
control plane's own request charts, with backups and flags read
through their selectors and what other apps register as panels (``controlplane.panels``: deployments,
which nothing but the composition root imports). Its panels refresh in place every 10 seconds (htmx
asks for ``/dashboard/panels``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from alerting.selectors import alert_get, open_alerts
from alerting.services import InvalidAlertSetting, alert_acknowledge
from backups.selectors import all_readiness
from controlplane.access import operator_page
from controlplane.audit import Actor
from controlplane.changes import changes_before
from controlplane.panels import read_panels
from flags.selectors import flags_summary
from monitoring import services_panel
from monitoring.dashboard import chart_list, endpoint_uptime, health, recent_changes, slo_budgets
from monitoring.models import Heartbeat

REFRESH_SECONDS = 10
# The dashboard is a monitoring page first (health, alerts); reading alerts is what it takes to open it.
VIEW_PERMISSION = "alerting.view_alert"
ACK_PERMISSION = "alerting.change_alert"


def _is_htmx(request: HttpRequest) -> bool:
    # Read where it is needed rather than by a middleware on every request.
    return request.headers.get("HX-Request") == "true"


def _score_tone(score: int | None, deductions: list[Any], tiles: list[Any]) -> str:
    """The score's colour agrees with the tiles beside it: a failing component makes it bad and
    anything that lowers it makes it at least a warning, whatever the number; no score yet is neutral."""
    if score is None:
        return "neutral"
    rank = ["ok", "warn", "bad"]
    band = "ok" if score >= 90 else "warn" if score >= 60 else "bad"
    worst = max(
        [band, "warn" if deductions else "ok"] + [{"fail": "bad", "warn": "warn"}.get(t.status, "ok") for t in tiles],
        key=rank.index,
    )
    return worst


def _context(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    alerts = open_alerts()
    since, changes = recent_changes(now)  # one query for every chart's markers and the alerts' changes
    charts, computed_at = chart_list(now, changes)
    product = services_panel.read(now, endpoint_uptime, slo_budgets(now), changes)
    fired = {alert.pk: alert.fired_at for alert in alerts if alert.fired_at is not None}
    before = changes_before(fired, known=changes, known_since=since)
    score, deductions, tiles = health(now, alerts, product.services, product.jobs)
    return {
        "now": now,
        "product": product,
        "score": score,
        "score_tone": _score_tone(score, deductions, tiles),
        "deductions": deductions,
        "tiles": tiles,
        "tiles_reported": sum(1 for t in tiles if not t.waiting),
        "tiles_waiting": sum(1 for t in tiles if t.waiting),
        "charts": charts,
        "charts_computed_at": computed_at,
        "alerts": alerts,
        "alert_changes": before,
        "registered_panels": read_panels(now),
        "backups": all_readiness(now=now),
        "flags": flags_summary(),
        "heartbeat": Heartbeat.objects.filter(name="celery").first(),
        "refresh_seconds": REFRESH_SECONDS,
        "can_ack": request.user.has_perm(ACK_PERMISSION),
        "htmx": _is_htmx(request),
    }


@operator_page(VIEW_PERMISSION)
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/index.html", _context(request))


@operator_page(VIEW_PERMISSION)
def panels(request: HttpRequest) -> HttpResponse:
    """The dashboard's changing part, for the in-place refresh."""
    return render(request, "dashboard/_panels.html", _context(request))


@operator_page(VIEW_PERMISSION)
@require_POST
def acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    if not request.user.has_perm(ACK_PERMISSION):
        raise PermissionDenied(f"acknowledging alerts needs the {ACK_PERMISSION} permission")
    alert = alert_get(alert_id)
    if alert is None:
        raise Http404("no such alert")
    try:
        alert_acknowledge(alert=alert, actor=Actor.for_user(request.user))
    except InvalidAlertSetting as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Alert {alert.rule.name} acknowledged.")
    if _is_htmx(request):
        return panels(request)
    return redirect("monitoring:dashboard")
