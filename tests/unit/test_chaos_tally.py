"""The chaos bench's accounting (``bench.chaos.tally``): what counts as lost, duplicated or unexpected."""

from bench.chaos import Delivery, Expectation, tally

CREATED = Expectation("f0", "AppointmentCreated", "a1", "", made_at=10.0)
MOVED = Expectation("f2", "AppointmentUpdated", "a2", "2026-12-05T10:00:00Z", made_at=20.0)


def _delivery(flow: str, trigger: str, appointment: str, key: str, at: float, start: str = "") -> Delivery:
    return Delivery(flow, at, key, trigger, appointment, start)


def test_a_delivery_meets_its_expectation_and_its_delay_is_measured() -> None:
    counted = tally([CREATED], set(), [_delivery("f0", "Created", "a1", "k1", at=12.5)])
    assert (counted.delivered, counted.delays, counted.new_key, counted.unexpected) == (1, [2.5], 0, 0)


def test_an_update_must_carry_the_new_start_time() -> None:
    stale = _delivery("f2", "Updated", "a2", "k1", at=21, start="2026-12-04T10:00:00Z")
    assert tally([MOVED], set(), [stale]).delivered == 0
    fresh = _delivery("f2", "Updated", "a2", "k2", at=22, start=MOVED.start)
    assert tally([MOVED], set(), [stale, fresh]).delivered == 1


def test_same_key_repeats_are_allowed_new_keys_are_duplicates() -> None:
    repeats = [_delivery("f0", "Created", "a1", "k1", at=11), _delivery("f0", "Created", "a1", "k1", at=12)]
    assert (tally([CREATED], set(), repeats).same_key, tally([CREATED], set(), repeats).new_key) == (1, 0)
    twice = [_delivery("f0", "Created", "a1", "k1", at=11), _delivery("f0", "Created", "a1", "k2", at=12)]
    assert tally([CREATED], set(), twice).new_key == 1


def test_deliveries_nobody_asked_for_are_unexpected_and_missing_ones_lost() -> None:
    other = [_delivery("f0", "Updated", "a1", "k9", at=11), _delivery("f1", "Created", "a1", "k8", at=11)]
    counted = tally([CREATED], set(), other)
    assert (counted.delivered, counted.unexpected) == (0, 2)


def test_a_gone_flow_is_owed_nothing() -> None:
    assert tally([CREATED], {"f0"}, []).delivered == 0
    assert tally([CREATED], {"f0"}, [_delivery("f0", "Created", "a1", "k1", at=11)]).unexpected == 0
