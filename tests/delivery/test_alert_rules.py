"""The delivery alert rules driven into their states: a flow answering 5xx time after time (more failed
attempts than the rule's threshold) and a flow refusing an event (a dead letter). The rules' KQL runs over the
rows Application Insights would store of what the app emitted (tests/app_insights.py)."""

from __future__ import annotations

from testing.receiver import Reply
from testing.rows import CLINIC, add_event, add_flow
from tests.app_insights import alert_rows, capture, fires
from tests.delivery.conftest import fan_out, run_worker


async def test_a_flow_failing_more_often_than_the_threshold_fires_the_alert(env, receiver) -> None:
    flow = await add_flow(receiver.url("down"))
    receiver.plan("down", *([503] * 11), 200)
    event = await add_event()
    with capture() as captured:
        await fan_out(CLINIC, [event], "cid-down")
        await run_worker(lambda: any(r.status == 200 for r in receiver.requests("down")), timeout=30)
    rows = alert_rows("delivery-failures", captured)
    assert len(rows) == 11 and fires("delivery-failures", rows)  # threshold 10 in 15 minutes
    assert {(r["mailbox"], r["flowId"], r["status"], r["willRetry"]) for r in rows} == {
        (CLINIC, flow.webhook_id, 503, "true")}
    # Ten would not have fired it.
    assert not fires("delivery-failures", rows[:10])


async def test_a_flow_refusing_an_event_fires_the_dead_letter_alert(env, receiver) -> None:
    flow = await add_flow(receiver.url("picky"))
    receiver.plan("picky", Reply(400, body='{"error":{"code":"InvalidTemplate","message":"bad schema"}}'))
    event = await add_event("Created", number=3)
    with capture() as captured:
        await fan_out(CLINIC, [event], "cid-400")
        await run_worker(lambda: len(receiver.requests("picky")) == 1)
    (row,) = alert_rows("dead-letters", captured)
    assert fires("dead-letters", [row])
    assert (row["mailbox"], row["flowId"], row["trigger"], row["status"], row["errorCode"]) == (
        CLINIC, flow.webhook_id, "AppointmentCreated", 400, "Rejected")
