"""How a notification reaches a channel: the document, Slack's text, the HTTP POST and the e-mail.

No database writes here: ``alerting.services.delivery_attempt`` records each attempt's outcome.
"""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from alerting.models import Alert, ChannelKind, NotificationChannel, RuleKind
from controlplane import outbound
from controlplane.changes import BEFORE_ALERT, changes_between
from controlplane.redaction import redact_text

HTTP_TIMEOUT_SECONDS = 5.0
USER_AGENT = "controlplane-alerts/1"


class DeliveryError(Exception):
    """A failed attempt; ``transient`` ones are retried, the others are final."""

    def __init__(self, message: str, *, transient: bool, response_status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.response_status = response_status


@dataclass(frozen=True)
class SendResult:
    response_status: int | None = None


# --- The document -------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def alert_payload(alert: Alert, event: str) -> dict[str, Any]:
    """The JSON document a webhook receives (and the source of Slack's and the e-mail's text).

    Taken when the event happens, so a notification sent later still describes that moment. A firing
    one lists the changes of the hour before the alert fired (deployments, flag changes: what moved just
    before it broke) and names the rule's recovery plan with the page that runs it.
    """
    rule = alert.rule
    extra: dict[str, Any] = {}
    if event == "firing":
        fired = alert.fired_at or alert.started_at
        extra["changes"] = [change.as_dict() for change in changes_between(fired - BEFORE_ALERT, fired)]
        if rule.recovery_plan:
            # A link a chat message can follow once the control plane's address is known (PUBLIC_URL).
            url = f"{settings.PUBLIC_URL}{alert.recovery_url}" if alert.recovery_url else ""
            extra["recovery_plan"] = {"name": rule.recovery_plan, "auto": rule.recovery_auto, "url": url}
    if rule.kind == RuleKind.DRILL_FAILED and alert.measurement:
        extra.update(_drill_words(alert.measurement, event))
    return {
        "event": event,
        "alert": rule.name,
        "state": alert.state,
        "severity": rule.severity,
        "value": alert.last_value,
        "threshold": rule.threshold,
        "unit": rule.unit,
        "rule": {
            "id": rule.pk,
            "name": rule.name,
            "kind": rule.kind,
            "condition": rule.condition,
            "window_minutes": rule.window_minutes,
        },
        "component": alert.component or None,
        "measurement": alert.measurement or None,
        "started_at": _iso(alert.started_at),
        "fired_at": _iso(alert.fired_at),
        "resolved_at": _iso(alert.resolved_at),
        "dedup_key": alert.dedup_key,
        "alert_id": alert.pk,
        **extra,
    }


# A notification's line about a drill's error; the whole error is in its details.
MESSAGE_ERROR_CHARS = 300


def _drill_words(plan: str, event: str) -> dict[str, Any]:
    """A restore drill's alert in its own words (``message``, ``details``): the plan whose drill failed,
    the check that failed and the backup it restored."""
    from backups.selectors import drill_failure

    if event == "resolved":
        return {"message": f"The restore drill of recovery plan {plan} no longer fails."}
    failure = drill_failure(plan) if event == "firing" else None
    if failure is None:
        return {}
    error = failure["error"]
    if len(error) > MESSAGE_ERROR_CHARS:
        error = error[: MESSAGE_ERROR_CHARS - 3] + "..."
    if failure["backup"] is not None:
        restored = f"backup #{failure['backup']} of {failure['target']}, taken {failure['backup_taken_at']}"
        backup_words = f"It restored {restored}."
    else:
        restored = f"none (target {failure['target']} had no verified backup)"
        backup_words = f"It had no verified backup of {failure['target']} to restore."
    return {
        "message": (
            f"The restore drill of recovery plan {plan} failed at its {failure['check']} check: {error} {backup_words}"
        ),
        "details": {
            "plan": plan,
            "drill": f"#{failure['drill']}",
            "failed_check": failure["check"],
            "error": failure["error"],
            "backup_restored": restored,
        },
    }


def channel_test_payload(channel: NotificationChannel) -> dict[str, Any]:
    return {
        "event": "test",
        "alert": "test notification",
        "state": "test",
        "severity": "info",
        "value": None,
        "threshold": None,
        "unit": "",
        "rule": None,
        "component": None,
        "measurement": None,
        "started_at": None,
        "fired_at": None,
        "resolved_at": None,
        "dedup_key": f"test:{channel.pk}",
        "alert_id": None,
    }


def _value(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return "no data"
    unit = payload.get("unit") or ""
    return f"{value:g} {unit}".strip() if isinstance(value, int | float) else str(value)


def summary_line(payload: dict[str, Any]) -> str:
    """One line: ``[FIRING critical] error rate: 3.2 % (threshold 1 %) - error rate over 1 % for 5 min``."""
    if payload.get("event") == "test":
        return "Test notification from the control plane: this channel works."
    if payload.get("event") == "event":
        return f"[{str(payload.get('severity', 'info')).upper()}] {payload.get('alert')}"
    state = str(payload.get("state", "")).upper()
    target = ""
    if payload.get("component"):
        target = f" {payload['component']}" + (f":{payload['measurement']}" if payload.get("measurement") else "")
    condition = (payload.get("rule") or {}).get("condition", "")
    return (
        f"[{state} {payload.get('severity')}] {payload.get('alert')}{target}: {_value(payload, 'value')}"
        f" (threshold {_value(payload, 'threshold')}) - {condition}"
    )


def text_body(payload: dict[str, Any]) -> str:
    lines = [summary_line(payload), ""]
    if payload.get("message"):
        lines += [str(payload["message"]), ""]
    for key, value in (payload.get("details") or {}).items():
        if value not in (None, ""):
            lines.append(f"{key.replace('_', ' ')}: {value}")
    for key in ("started_at", "fired_at", "resolved_at", "dedup_key"):
        if payload.get(key):
            lines.append(f"{key.replace('_', ' ')}: {payload[key]}")
    plan = payload.get("recovery_plan")
    if isinstance(plan, dict):
        how = "started by itself" if plan.get("auto") else f"run it from {plan.get('url') or 'the Deployments page'}"
        lines.append(f"recovery plan: {plan.get('name')} ({how})")
    changes = payload.get("changes")
    if isinstance(changes, list):
        lines += ["", "Changes in the hour before it fired:" if changes else "No change in the hour before it fired."]
        lines += [f"- {c.get('time', '')[:16].replace('T', ' ')} {c.get('what')}, by {c.get('who')}" for c in changes]
    return "\n".join(lines)


# --- Transports ---------------------------------------------------------------------------------


# A webhook that redirects is misconfigured: reported rather than the body re-sent elsewhere.
_opener = outbound.opener


def post_json(url: str, document: dict[str, Any], *, timeout: float = HTTP_TIMEOUT_SECONDS) -> SendResult:
    """POST ``document`` as JSON. Connection errors, timeouts, 5xx and 429 are transient; other 3xx/4xx final."""
    if not url.startswith(("http://", "https://")):  # checked on save; never open file:// or ftp:// here
        raise DeliveryError("only http(s) URLs are accepted", transient=False)
    body = json.dumps(document).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(65536)
            return SendResult(response_status=response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        transient = status >= 500 or status == 429
        raise DeliveryError(f"HTTP {status} {exc.reason}", transient=transient, response_status=status) from None
    except TimeoutError as exc:
        raise DeliveryError(f"timed out after {timeout:g} s", transient=True) from exc
    except urllib.error.URLError as exc:
        raise DeliveryError(f"connection failed: {exc.reason}", transient=True) from None
    except (ConnectionError, OSError) as exc:
        raise DeliveryError(f"connection failed: {exc}", transient=True) from None


def send_email(recipients: list[str], payload: dict[str, Any]) -> SendResult:
    try:
        send_mail(
            subject=summary_line(payload)[:200],
            message=text_body(payload),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
            fail_silently=False,
        )
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"recipients refused: {', '.join(exc.recipients)}", transient=False) from None
    except smtplib.SMTPResponseException as exc:
        # 5xx SMTP replies are permanent, 4xx ones are "try again later".
        raise DeliveryError(f"SMTP {exc.smtp_code}", transient=exc.smtp_code < 500) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP failed: {exc}", transient=True) from None
    return SendResult()


def send(channel: NotificationChannel, payload: dict[str, Any]) -> SendResult:
    """Send one notification; raises DeliveryError (with a redacted message) when it does not go out."""
    try:
        if channel.kind == ChannelKind.SLACK:
            return post_json(channel.url, {"text": text_body(payload)})
        if channel.kind == ChannelKind.WEBHOOK:
            return post_json(channel.url, payload)
        if channel.kind == ChannelKind.EMAIL:
            return send_email(list(channel.email_recipients or []), payload)
    except DeliveryError as exc:
        # Error texts can carry a URL; the channel's own URL is a secret.
        message = redact_text(str(exc)).replace(channel.url, channel.masked_url) if channel.url else str(exc)
        raise DeliveryError(message, transient=exc.transient, response_status=exc.response_status) from None
    raise DeliveryError(f"unknown channel kind {channel.kind!r}", transient=False)
