"""Logging set-up and redaction: no secret reaches a log line.

Callback URLs carry signatures in their query strings, tokens are bearer credentials, and storage
connection strings hold account keys. Code that logs a URL logs ``redact_url(url)`` (host and path
only); as a second line of defence ``RedactingFilter`` scrubs anything that still looks like a secret
from every record before any handler formats it.

Application Insights export (azure-monitor-opentelemetry) is configured in ``shared.adapters.monitoring``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # query strings of URLs: signatures (sig=), function keys (code=), anything else
    (re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']*", re.IGNORECASE), r"\1?[redacted]"),
    (re.compile(r"(bearer\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    # A whole key only: an event's "errorCode=ServiceUnavailable" is not an authorization code.
    (re.compile(r"(?<![A-Za-z0-9_])((?:AccountKey|SharedAccessSignature|client_secret|sig|code)=)[^;&\s\"']+",
                re.IGNORECASE),
     r"\1[redacted]"),
    # The same keys percent-encoded ("%3Fsig%3D…", "sig%253D…" twice over), the value ending at an encoded "&"
    (re.compile(r"(?:(?<![A-Za-z0-9_])|(?<=%26)|(?<=%3F)|(?<=%2526)|(?<=%253F))"
                r"((?:AccountKey|SharedAccessSignature|client_secret|sig|code)%(?:25)*3D)"
                r"(?:(?!%(?:25)*26)[^;&\s\"'<>])+", re.IGNORECASE),
     r"\1[redacted]"),
    # ... and as JSON members: {"sig": "…"} (not "code", which in JSON is an error's code, not a key)
    (re.compile(r"(\"(?:AccountKey|SharedAccessSignature|client_secret|sig)\"\s*:\s*\")(?:[^\"\\]|\\.)*",
                re.IGNORECASE),
     r"\1[redacted]"),
)


# Every pattern above needs one of these (lower-cased) to match; plain substring tests clear the common
# case — mailboxes, ids, ordinary log lines — at a tenth of the four substitutions' cost, and this runs on
# every log line and telemetry dimension.
_KEY_MARKERS = ("accountkey=", "sharedaccesssignature=", "client_secret=", "sig=", "code=")
_JSON_KEYS = ('"accountkey"', '"sharedaccesssignature"', '"client_secret"', '"sig"')


def _may_hold_secret(text: str) -> bool:
    lowered = text.lower()
    return ("?" in lowered or "bearer" in lowered or "eyj" in lowered or ("%" in lowered and "3d" in lowered)
            or ("=" in lowered and any(marker in lowered for marker in _KEY_MARKERS))
            or ('"' in lowered and any(key in lowered for key in _JSON_KEYS)))


def redact(text: str) -> str:
    if not _may_hold_secret(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: str) -> str:
    """Scheme, host and path of ``url``: what may be shown or logged of a callback URL."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return "[not-a-url]"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedactingFilter(logging.Filter):
    """Formats the record's message once, scrubbed, so handlers never see the raw arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the line
            message = str(record.msg)
        try:
            message = redact(message)
        except Exception:  # at interpreter shutdown even re.sub can fail; drop the line rather than leak it
            return False
        record.msg = message
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_configured = False


def configure_logging(level: str = "INFO") -> None:
    """Install the redacting filter on the root logger's handlers (idempotent, cheap: runs on import)."""
    global _configured
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if not _configured:
        logging.getLogger("shared").setLevel(level)
        # The Azure SDK logs full request URLs and headers at INFO; they can carry SAS tokens.
        logging.getLogger("azure").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        _configured = True
