"""The ``mailbox-changes`` format's packer: bundles within the queue's limit, in order, a lone message as
itself, change sizes counted as JSON counts them, and only well-formed members read back."""

from __future__ import annotations

import json

from shared.messages import mailbox_changes
from shared.messages.mailbox_changes import MAX_MESSAGE_JSON_BYTES, Change, MailboxChangeMessage


def hint(number: int, event_id_length: int = 150) -> MailboxChangeMessage:
    changes: list[Change] = [{"changeType": "updated", "eventId": f"{number:04d}".ljust(event_id_length, "x")}]
    return mailbox_changes.change_message(f"m{number}@contoso.test", subscription_id="s", changes=changes,
                                          reason="notification")


def test_a_lone_message_is_written_as_itself() -> None:
    only = hint(1)
    assert mailbox_changes.packed([only]) == [only]


def test_bundles_stay_within_the_limit_keep_the_order_and_are_full() -> None:
    messages = [hint(n, event_id_length=150 + 37 * (n % 50)) for n in range(400)]
    packed = mailbox_changes.packed(messages)
    groups = [body["bundle"] for body in packed]  # type: ignore[typeddict-item]  # all bundles here
    assert len(packed) > 3 and [m for group in groups for m in group] == messages
    for body, group, following in zip(packed, groups, groups[1:], strict=False):
        assert body == {"version": 1, "bundle": group}
        assert len(json.dumps(body)) <= MAX_MESSAGE_JSON_BYTES
        # The next message did not fit (the packer counts a ", " for every member, one more than JSON has).
        assert mailbox_changes.json_bytes(mailbox_changes.bundle([*group, following[0]])) + 2 > MAX_MESSAGE_JSON_BYTES
    assert len(json.dumps(packed[-1])) <= MAX_MESSAGE_JSON_BYTES


def test_bundle_groups_count_what_the_caller_says_a_message_costs() -> None:
    items = ["a", "b", "c", "d"]
    half = (MAX_MESSAGE_JSON_BYTES - len('{"version": 1, "bundle": []}')) // 2 - 2
    assert mailbox_changes.bundle_groups(items, lambda _: half) == [["a", "b"], ["c", "d"]]
    assert mailbox_changes.bundle_groups(items, lambda _: half + 1) == [["a"], ["b"], ["c"], ["d"]]
    assert mailbox_changes.bundle_groups([], lambda _: 1) == []


def test_a_change_is_counted_as_its_json_adds_to_a_message() -> None:
    first: Change = {"changeType": "created", "eventId": "AAMk-first"}
    one = mailbox_changes.change_message("m@contoso.test", changes=[first], reason="notification")

    def added(change: Change) -> int:
        return len(json.dumps({**one, "changes": [first, change]})) - len(json.dumps(one))

    for change in ({"changeType": "deleted", "eventId": 'a"b\\c'}, {"changeType": "updated", "eventId": "予約-1"},
                   {"changeType": "updated", "eventId": "tab\there"}):  # escaped in JSON: serialised, exact
        assert mailbox_changes.change_json_bytes(change) == added(change)
    # Plain text is counted without serialising, one byte short (the 2 KiB under the queue's 48 KiB covers
    # that for the at most ~1,000 changes a message holds).
    plain: Change = {"changeType": "updated", "eventId": "AAMkAD=="}
    assert mailbox_changes.change_json_bytes(plain) == added(plain) - 1


def test_only_well_formed_members_of_a_bundle_are_read() -> None:
    good, other = hint(1), hint(2)
    body = {"version": 1, "bundle": [good, "text", {"mailbox": 7}, {"changes": []}, other]}
    assert mailbox_changes.is_bundle(body) and not mailbox_changes.is_bundle(good)
    assert mailbox_changes.bundle_messages(body) == [good, other]  # type: ignore[arg-type]
