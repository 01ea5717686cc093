"""No secret reaches a log line: URL query strings, bearer tokens, JWTs, account keys are scrubbed."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from shared.adapters.logs import _PATTERNS, RedactingFilter, redact, redact_url

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


def test_keys_that_merely_end_like_a_secret_are_kept() -> None:
    """The event summaries carry errorCode=…: an error code is what an admin needs to read."""
    line = "DeliveryFailed errorCode=ServiceUnavailable status=503 and /cb?code=AUTHCODE&sig=SIG;AccountKey=KEY"
    scrubbed = redact(line)
    assert "errorCode=ServiceUnavailable" in scrubbed
    for secret in ("AUTHCODE", "SIG", "KEY"):
        assert secret not in scrubbed


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


_FRAGMENTS = ["https://x.test/p", "?", "sig=", "SIG=", "Code=", "AccountKey=", "sharedaccesssignature=",
              "client_secret=", "Bearer ", "bearer\t", "eyJ", "eyJabcde.fghij.k", "abc", "=", " ", ";", "&", "K",
              "\u212a", "İ", "s3cr3t"]


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=8).map("".join) | st.text(max_size=40))
def test_fast_path_never_skips_what_a_pattern_would_scrub(text: str) -> None:
    # redact() skips the substitutions when a cheap substring test finds no marker; that test must be a
    # superset of the patterns, or a secret would slip through.
    slow = text
    for pattern, replacement in _PATTERNS:
        slow = pattern.sub(replacement, slow)
    assert redact(text) == slow
