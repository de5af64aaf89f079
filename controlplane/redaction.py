"""Keep secrets out of logs, pages, audit diffs and Sentry events: by key name and by value."""

from __future__ import annotations

import os
import re
from functools import cache
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "[redacted]"

_SECRET_KEY_NAME = re.compile(
    r"passw(or)?d|passphrase|secret|token|api[-_]?key|apikey|authorization|cookie|sessionid|dsn|credential"
    r"|private[-_]?key|signature",
    re.IGNORECASE,
)
# The control plane's own API tokens, and any user:password@ in a URL.
_TOKEN_VALUE = re.compile(r"\bcpt_[A-Za-z0-9_-]{16,}")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I)
# A job monitor's ping URL (mounted at /ping/<key> by the URL conf) is its credential: the key is hidden,
# the rest of the path (/start, /fail, an exit status) kept.
_PING_KEY = re.compile(r"(/ping/)[^/\s\"'?#]+")


def is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY_NAME.search(name))


@cache
def _configured_secrets() -> tuple[str, ...]:
    """Secret values from the settings (database password, Sentry key, ...), longest first."""
    from django.conf import settings

    values: list[str] = [settings.SECRET_KEY]
    for db in settings.DATABASES.values():
        values.append(db.get("PASSWORD") or "")
    for url in (getattr(settings, "REDIS_URL", ""), getattr(settings, "CELERY_BROKER_URL", "")):
        values.append(urlsplit(url).password or "")
    dsn = getattr(settings, "SENTRY_DSN", "")
    values.append(urlsplit(dsn).username or "")
    values.append(getattr(settings, "EMAIL_HOST_PASSWORD", "") or "")
    # The off-site backup bucket's secret, given to the control plane or found by boto3 in the environment.
    values.append(getattr(settings, "BACKUP_S3_SECRET_ACCESS_KEY", "") or "")
    values.append(os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    # The values of the variables pipeline steps may read as ${NAME} (deploy hooks, a product's
    # database URL): the control plane holds them, so its logs and Sentry events must not show them.
    values.extend(os.environ.get(name, "") for name in getattr(settings, "DEPLOY_SECRETS", ()))
    # Short values would redact ordinary words; a real secret is longer than this.
    return tuple(sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True))


def redact_text(text: str) -> str:
    if not text:
        return text
    # Whole configured values first: a secret that is itself a URL with a password (a DEPLOY_SECRETS
    # database URL) is hidden whole, not left with only its password masked by the pattern below.
    for secret in _configured_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    # Substring tests first: the regular expressions run only where they could match (every log
    # line passes through here).
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    if "cpt_" in text:
        text = _TOKEN_VALUE.sub(REDACTED, text)
    if "/ping/" in text:
        text = _PING_KEY.sub(rf"\g<1>{REDACTED}", text)
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` (JSON-like) with secret keys' values and secret-looking strings hidden."""
    if key and is_secret_key(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


# Query parameters named like a credential beyond is_secret_key's names: ?key= (Google APIs), ?sig=
# (Azure SAS), ?auth=, ?code= (OAuth).
_SECRET_QUERY_NAME = re.compile(r"key|sig|auth|code", re.IGNORECASE)
# A URL in a sentence: up to a space, a quote, a bracket, or punctuation that ends the sentence.
_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s<>\"'()]+?(?=[.,;:!?]*(?:[\s<>\"'()]|$))", re.IGNORECASE)


def _redact_params(params: str) -> str:
    redacted = []
    for param in params.split("&"):
        name, equals, value = param.partition("=")
        if equals and value and (is_secret_key(unquote_plus(name)) or _SECRET_QUERY_NAME.fullmatch(name)):
            param = f"{name}={REDACTED}"
        redacted.append(param)
    return "&".join(redacted)


def redact_url(url: str) -> str:
    """``url`` as a page or log may show it: no user information's password (a user name alone is
    hidden whole: it is often a token) and no value of a secret-looking query or fragment parameter."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [ in the host: not a URL to take apart
        return redact_text(url)
    netloc, query, fragment = parts.netloc, parts.query, parts.fragment
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    if "=" in query:
        query = _redact_params(query)
    if "=" in fragment:
        fragment = _redact_params(fragment)
    return redact_text(urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment)))


def redact_urls(text: str) -> str:
    """``text`` with every URL in it passed through redact_url (for messages that may quote one)."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)
    return redact_text(text)
