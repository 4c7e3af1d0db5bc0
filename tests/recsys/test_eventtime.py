"""The producer's clock is not trusted: event times beyond a tolerance clamp to arrival."""

from recsys.eventtime import FUTURE, EventClock, arrival_ms

HOUR = 3_600_000


def test_times_beyond_the_tolerance_clamp_to_arrival():
    clock = EventClock.from_seconds(300)
    arrival = 1_700_000_000_000
    assert clock.clamp(arrival + 299_000, arrival) == (arrival + 299_000, None)
    assert clock.clamp(arrival + 23 * HOUR, arrival) == (arrival, FUTURE)
    # The past is data (backfills): never clamped.
    assert clock.clamp(arrival - 400 * 24 * HOUR, arrival) == (arrival - 400 * 24 * HOUR, None)


def test_arrival_is_the_record_time_but_never_past_the_local_clock():
    assert arrival_ms(1_000, clock_ms=5_000) == 1_000
    assert arrival_ms(9_000, clock_ms=5_000) == 5_000  # a producer's CreateTime in the future
    assert arrival_ms(None, clock_ms=5_000) == 5_000
    assert arrival_ms(-1, clock_ms=5_000) == 5_000  # librdkafka's "no timestamp"


def test_a_reference_time_never_passes_the_clock_plus_tolerance():
    clock = EventClock.from_seconds(60)
    assert clock.reference(10_000, clock_ms=100_000) == 10_000
    assert clock.reference(100_000 + 23 * HOUR, clock_ms=100_000) == 160_000
