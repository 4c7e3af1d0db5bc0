"""Forward-decay popularity: the maths, the rebase, and the Lua that applies it in Redis."""

import math
import random

import orjson
import pytest

from recsys.keys import Keys
from stream.trending import (
    LUA_APPLY,
    PRUNE_BELOW,
    REBASE_AFTER_TAUS,
    TrendingEvent,
    above_watermarks,
    aggregate,
    apply_increments,
    by_partition,
    decayed,
)

TAU = 3600.0


def _batches(seed=3, n_batches=60, span_taus=40.0):
    """Batches of (item, time s, weight) spread over `span_taus` windows (forces rebases)."""
    rng = random.Random(seed)
    start = 1_700_000_000.0
    out = []
    for b in range(n_batches):
        t_batch = start + (b / n_batches) * span_taus * TAU
        events = [(f"i{rng.randrange(12)}", t_batch + rng.uniform(-30, 0), rng.choice([1.0, 4.0]))
                  for _ in range(rng.randrange(1, 8))]
        out.append(events)
    return out


def _direct(all_events, now):
    """What the decayed score of each item should be: sum of w * exp(-(now - t) / tau)."""
    out = {}
    for item, t, w in all_events:
        out[item] = out.get(item, 0.0) + w * math.exp(-(now - t) / TAU)
    return out


def _run_reference(batches):
    scores, ref, refs = {}, None, []
    for events in batches:
        t0 = max(t for _, t, _ in events)
        ref = apply_increments(scores, ref, t0, aggregate(events, TAU, t0), TAU)
        refs.append(ref)
    return scores, ref, refs


def test_aggregate_is_relative_to_t0():
    inc = aggregate([("a", 100.0, 2.0), ("a", 100.0 - TAU, 1.0), ("b", 100.0, 1.0)], TAU, 100.0)
    assert inc["a"] == pytest.approx(2.0 + math.exp(-1.0))
    assert inc["b"] == pytest.approx(1.0)


def test_watermarks_count_each_offset_once_however_a_replay_is_cut():
    events = [TrendingEvent(p, o, f"i{o % 3}", 1_000_000 + o, 1.0)
              for p in (0, 1) for o in range(10)]
    t0 = 1_000.0
    marks: dict[str, int] = {}
    first = above_watermarks(marks, by_partition(events[:6] + events[10:13], TAU, t0))
    assert marks == {"0": 5, "1": 2}
    # A replay from offset 3 of partition 0 and 0 of partition 1, in two other batches.
    second = above_watermarks(marks, by_partition(events[3:8] + events[10:15], TAU, t0))
    third = above_watermarks(marks, by_partition(events[3:10] + events[10:20], TAU, t0))
    assert marks == {"0": 9, "1": 9}
    total: dict[str, float] = {}
    for part in (first, second, third):
        for item, inc in part.items():
            total[item] = total.get(item, 0.0) + inc
    once = aggregate([(e.item, e.ts_ms / 1000.0, e.weight) for e in events], TAU, t0)
    assert total.keys() == once.keys()
    for item, value in once.items():
        assert total[item] == pytest.approx(value, rel=1e-12)


def test_decayed_scores_equal_the_direct_sum_across_rebases():
    batches = _batches()
    scores, ref, refs = _run_reference(batches)
    assert len(set(refs)) > 1, "the sequence must exercise at least one rebase"
    all_events = [e for batch in batches for e in batch]
    now = max(t for _, t, _ in all_events)
    expected = _direct(all_events, now)
    for item, stored in scores.items():
        assert decayed(stored, ref, now, TAU) == pytest.approx(expected[item], rel=1e-9)
    # Items whose decayed weight fell far below one event were pruned, the rest are there.
    for item, value in expected.items():
        if value * math.exp((now - ref) / TAU) >= 10 * PRUNE_BELOW:
            assert item in scores


def test_stored_scores_rank_items_like_decayed_scores():
    batches = _batches(seed=5, span_taus=3.0)
    scores, ref, _ = _run_reference(batches)
    now = max(t for b in batches for _, t, _ in b) + 0.5 * TAU
    by_stored = sorted(scores, key=lambda i: -scores[i])
    by_decayed = sorted(scores, key=lambda i: -decayed(scores[i], ref, now, TAU))
    assert by_stored == by_decayed


def test_a_rebase_keeps_values_and_moves_the_landmark():
    scores = {"a": 5.0}
    ref = apply_increments(scores, 1000, 1000 + (REBASE_AFTER_TAUS + 1) * TAU, {"b": 1.0}, TAU)
    assert ref == math.floor(1000 + (REBASE_AFTER_TAUS + 1) * TAU)
    assert scores["b"] == pytest.approx(1.0)
    # a's value at the new landmark: 5 * exp(-(17 windows)) ~ 2e-7 < PRUNE_BELOW -> dropped
    assert "a" not in scores


def test_events_far_in_the_past_add_nothing():
    scores = {}
    ref = apply_increments(scores, 10_000_000, 10_000_000.0, {"a": 1.0}, TAU)
    apply_increments(scores, ref, 10_000_000.0, {"old": math.exp(-50)}, TAU)
    assert "old" not in scores


@pytest.mark.integration
def test_lua_script_matches_the_reference(redis_client, unique_name):
    keys = Keys(unique_name)
    script = redis_client.register_script(LUA_APPLY)
    # whole milliseconds, as events carry them
    batches = [[(i, round(t * 1000) / 1000, w) for i, t, w in b] for b in _batches(seed=11)]
    expected, expected_ref, _ = _run_reference(batches)
    zset, ref_key = keys.popularity("1h"), keys.popularity_ref("1h")
    marks = keys.popularity_applied("1h", "t")
    offset = 0
    for n, events in enumerate(batches):
        t0 = max(t for _, t, _ in events)
        trending = []
        for item, t, w in events:
            trending.append(TrendingEvent(0, offset, item, int(round(t * 1000)), w))
            offset += 1
        per_partition = by_partition(trending, TAU, t0)
        for replay in (False, True):  # the same events again under another batch id count 0
            script(keys=[zset, ref_key, keys.popularity_batch("1h", f"b{n}-{replay}"), marks],
                   args=[TAU, t0, REBASE_AFTER_TAUS, PRUNE_BELOW,
                         orjson.dumps(per_partition), 60_000])
    stored = {k.decode(): v for k, v in redis_client.zrange(zset, 0, -1, withscores=True)}
    assert int(redis_client.get(ref_key)) == expected_ref
    assert stored.keys() == expected.keys()
    for item, value in expected.items():
        assert stored[item] == pytest.approx(value, rel=1e-9)
