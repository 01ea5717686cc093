"""A callback's error body that quotes its URL's signature never puts it in a dead letter or a log line: redacted
where the attempt's error text is made (shared.adapters.callback_client), in every form a body may quote it (as
it is, in a JSON member, percent-encoded once or twice in upper or lower case, inside the whole URL, across the
excerpt's end), and by the log filter as a second line (shared.adapters.logs). Issue 25 found the JSON and the
percent-encoded forms stored and logged in clear."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from shared.adapters import callback_client
from shared.adapters.logs import RedactingFilter, redact
from shared.records.dead_letters import DeadLetters
from testing.receiver import SECRET, Reply
from testing.rows import CLINIC, add_event, add_flow
from tests.delivery.conftest import fan_out, run_worker
from tests.delivery.test_dead_letters import table


def quoting(url: str, sig: str) -> dict[str, str]:
    """Error bodies a callback might answer, each quoting the signature (or the URL holding it) once."""
    once = quote(url, safe="")
    return {
        "raw": f"signature {sig} is not valid",
        "json": json.dumps({"error": {"code": "InvalidSignature", "sig": sig, "url": url}}),
        "json-escaped": json.dumps({"message": f"bad sig '{sig}'"}, ensure_ascii=True),
        "encoded-url": f"redirect_uri={once}",
        "encoded-lower": f"target={once.lower()}",
        "encoded-twice": f"next={quote(once, safe='')}",
        "encoded-value": f"s={quote(sig, safe='')}",
        "at-the-cut": "x" * (callback_client.RESPONSE_EXCERPT_BYTES - 20) + sig,
    }


def forms(sig: str) -> set[str]:
    return {sig, quote(sig, safe=""), quote(quote(sig, safe=""), safe=""), sig[:12], quote(sig, safe="")[:12]}


@pytest.mark.parametrize("kind", sorted(quoting("https://x/y?sig=s", "s")))
async def test_an_error_body_quoting_the_signature_is_redacted_at_the_source(env, receiver, kind: str) -> None:
    flow = f"quoting-{kind}"
    url = receiver.url(flow)
    sig = f"{SECRET}-{flow}"
    receiver.plan(flow, Reply(400, body=quoting(url, sig)[kind]))
    attempt = await callback_client.post(url, b"{}", {"content-type": "application/json"})
    assert attempt.outcome == "deadLetter" and attempt.error_text.startswith("HTTP 400: ")
    lowered = attempt.error_text.lower()
    assert not [form for form in forms(sig) if form.lower() in lowered], attempt.error_text
    assert "[redacted]" in attempt.error_text or "[callback URL]" in attempt.error_text


async def test_the_dead_letter_and_the_log_lines_hold_no_signature(env, receiver, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for handler in logging.getLogger().handlers:  # as configure_logging installs it
        handler.addFilter(RedactingFilter())
    flow = await add_flow(receiver.url("refuses"))
    sig = f"{SECRET}-refuses"
    receiver.plan("refuses", Reply(400, body=json.dumps({"sig": sig, "at": quote(receiver.url("refuses"), safe="")})))
    await fan_out(CLINIC, [await add_event("Created")], "cid")
    await run_worker(lambda: len(receiver.requests("refuses")) == 1)
    [letter] = await DeadLetters(table()).list(CLINIC)
    assert letter.flow_id == flow.webhook_id and "HTTP 400" in letter.last_error
    assert SECRET not in letter.last_error and quote(SECRET) not in letter.last_error
    assert SECRET not in caplog.text


@pytest.mark.parametrize("line", [
    '{"error": {"sig": "S3CRET+/=", "code": "InvalidSignature"}}',
    "callback https%3A%2F%2Fprod.logic.azure.com%2Fw%3Fapi-version%3D1%26sig%3DS3CRET%2Bx%26sv%3D1 failed",
    "callback https%3a%2f%2fprod%3fsig%3dS3CRET failed",
    "next=sig%253DS3CRET%2526sv%253D1",
])
def test_the_log_filter_redacts_a_signature_in_json_and_percent_encoded(line: str) -> None:
    assert "S3CRET" not in redact(line) and "[redacted]" in redact(line)
    assert "InvalidSignature" in redact('{"code": "InvalidSignature", "sig": "S3CRET"}')  # error codes stay
