"""No secret reaches a log line: URL query strings, bearer tokens, JWTs, account keys are scrubbed."""

from __future__ import annotations

import logging

from shared.telemetry import RedactingFilter, redact, redact_url

CALLBACK = "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=SECRETSIG"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"


def test_redact_url_keeps_host_and_path_only() -> None:
    assert redact_url(CALLBACK) == "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
    assert redact_url("not a url") == "[not-a-url]"


def test_redact_scrubs_each_kind() -> None:
    text = (f"calling {CALLBACK} with Authorization: Bearer {JWT} and "
            "AccountKey=abc123==;EndpointSuffix=x and client_secret=s3cr3t&x=1 and token " + JWT)
    scrubbed = redact(text)
    for secret in ("SECRETSIG", "abc123", "s3cr3t", JWT):
        assert secret not in scrubbed
    assert "prod-12.westeurope.logic.azure.com" in scrubbed


def test_filter_scrubs_arguments_and_tracebacks(caplog) -> None:
    logger = logging.getLogger("test.redaction")
    handler_filter = RedactingFilter()
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.addFilter(handler_filter)
    logger.addHandler(handler)
    try:
        logger.warning("posting to %s", CALLBACK)
        try:
            raise ValueError(f"bad callback {CALLBACK}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records and all("SECRETSIG" not in line for line in records)
    assert "ValueError" in records[1]
