"""Pure rules of a user's stream state: dedupe (offset and event id), bounding, encoding."""

import numpy as np
import pytest

from recsys.userstate import Limits, StateDecodeError, UserState, event_id_hash

LIMITS = Limits(max_items=3, max_ids=4)


def _apply(state, event_id, item, offset, *, weight=1.0, ts=1_000, partition=0, limits=LIMITS):
    return state.apply(event_id, item, weight, ts, partition, offset, limits)


def test_events_accumulate_weight_and_latest_time():
    state = UserState()
    assert _apply(state, "e1", "a", 0, weight=1.0, ts=2_000)
    assert _apply(state, "e2", "a", 1, weight=4.0, ts=1_500)  # late event: time stays 2000
    assert _apply(state, "e3", "b", 2, weight=8.0, ts=3_000)
    assert state.items == {"a": [5.0, 2_000], "b": [8.0, 3_000]}
    assert state.last_event_ms == 3_000
    assert (state.partition, state.offset) == (0, 2)


def test_replayed_offsets_are_duplicates_however_many():
    state = UserState()
    for offset in range(10):
        assert _apply(state, f"e{offset}", "a", offset)
    before = state.to_bytes()
    # A restart re-reads all ten records: more than max_ids, still all recognised.
    assert not any(_apply(state, f"e{offset}", "a", offset) for offset in range(10))
    assert state.to_bytes() == before
    assert state.items["a"][0] == 10.0


def test_resent_event_id_with_new_offset_is_a_duplicate_and_advances_the_watermark():
    state = UserState()
    assert _apply(state, "e1", "a", 5)
    assert not _apply(state, "e1", "a", 9)
    assert state.items["a"][0] == 1.0
    assert state.offset == 9


def test_event_id_memory_is_bounded_to_the_most_recent():
    state = UserState()
    for n in range(6):
        _apply(state, f"e{n}", "a", n)
    assert len(state.recent_ids) == LIMITS.max_ids
    assert state.recent_ids == [event_id_hash(f"e{n}") for n in range(2, 6)]
    assert not _apply(state, "e5", "a", 100)  # recent: recognised
    assert _apply(state, "e0", "a", 101)      # forgotten: a re-send this old counts again


def test_history_keeps_the_most_recently_touched_items():
    state = UserState()
    for n, item in enumerate(["a", "b", "c"]):
        _apply(state, f"e{n}", item, n, ts=1_000 + n)
    _apply(state, "e3", "a", 3, ts=5_000)   # a is fresh again; b is now the oldest
    _apply(state, "e4", "d", 4, ts=6_000)
    assert set(state.items) == {"a", "c", "d"}
    # A new item always enters, even when its own event is older than the rest.
    _apply(state, "e5", "z", 5, ts=10)
    assert "z" in state.items and len(state.items) == 3


def test_a_different_partition_resets_the_offset_watermark():
    state = UserState()
    _apply(state, "e1", "a", 50, partition=1)
    assert _apply(state, "e2", "a", 3, partition=2)  # offsets of another partition
    assert (state.partition, state.offset) == (2, 3)
    assert not state.is_replay(1, 10)


def test_round_trip_and_corrupt_values():
    state = UserState()
    _apply(state, "e1", "a", 0, weight=1.5, ts=123)
    state.version = "v7"
    again = UserState.from_bytes(state.to_bytes())
    assert again == state
    assert UserState.from_bytes(None) == UserState()
    short_entry = b'{"i": {"a": [1]}, "d": [], "p": 0, "o": 0, "t": 0}'
    for bad in (b"", b"{", b"[]", b'{"i": 3}', short_entry):
        with pytest.raises(StateDecodeError):
            UserState.from_bytes(bad)


def test_known_history_skips_items_the_model_does_not_know():
    state = UserState()
    _apply(state, "e1", "a", 0, weight=2.0)
    _apply(state, "e2", "new", 1, weight=4.0)
    _apply(state, "e3", "b", 2, weight=1.0)
    rows, weights, unknown = state.known_history({"a": 7, "b": 3})
    assert rows.tolist() == [7, 3] and weights.tolist() == [2.0, 1.0] and unknown == 1
    rows, weights, unknown = state.known_history({})
    assert rows.dtype == np.int64 and len(rows) == 0 and unknown == 3


def test_events_after_a_snapshot_by_time_or_by_offset():
    state = UserState()
    _apply(state, "e1", "a", 41, ts=5_000, partition=2)
    assert state.has_events_after(4_999, {}, "t")
    assert not state.has_events_after(5_000, {}, "t")
    # Same event time as the snapshot's latest, but an offset the snapshot did not read.
    assert state.has_events_after(5_000, {"t:2": 41}, "t")
    assert not state.has_events_after(5_000, {"t:2": 42, "t:1": 0}, "t")


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Limits(max_items=0)


def test_encoded_states_do_not_carry_a_large_buffer():
    import tracemalloc

    state = UserState()
    _apply(state, "e1", "a", 0)
    tracemalloc.start()
    try:
        kept = [state.to_bytes() for _ in range(1000)]
        per_value = tracemalloc.get_traced_memory()[0] / len(kept)
    finally:
        tracemalloc.stop()
    # A table holds one per user: ~len + header, not orjson's whole output buffer (~4 KB).
    assert per_value < len(kept[0]) + 200, per_value


def test_fold_in_inputs_are_known_rows_and_confidences():
    from recsys.userstate import fold_in_inputs

    a, b, c = UserState(), UserState(), UserState()
    _apply(a, "e1", "x", 0, weight=1.0)
    _apply(a, "e2", "gone", 1, weight=5.0)
    _apply(a, "e3", "y", 2, weight=2.0)
    _apply(b, "e4", "gone", 0)  # nothing the model knows: left out
    index = {"x": 7, "y": 3}
    users, histories = fold_in_inputs([("a", a), ("b", b), ("c", c)], index, alpha=2.0)
    assert users == ["a"]
    (rows, conf), = histories
    assert rows.tolist() == [7, 3]
    assert conf.tolist() == [3.0, 5.0]  # 1 + alpha * weighted count
