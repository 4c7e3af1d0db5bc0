"""Real-time popularity ("trending") by forward decay, one sorted set per window.

Forward decay (Cormode, Shkapenyuk, Srivastava & Xu, 2009): an event of weight w at time t
(seconds) adds w * exp((t - L) / tau) to its item's stored score S, where L is the set's
reference time ("landmark"). The decayed score at any time T is

    score(T) = S * exp(-(T - L) / tau)

Every item shares the factor exp(-(T - L) / tau), so the stored scores already rank the items
correctly at any moment: readers ZREVRANGE the set and only multiply when they want the
decayed value itself. Nothing has to be decayed on a timer. tau is the window's length (the
"1h" window forgets with a mean lifetime of an hour).

Stored scores grow like exp((t - L) / tau), so once t - L passes REBASE_AFTER_TAUS windows the
set is rebased: L moves to t, every score is multiplied by exp(-(t - L_old) / tau), and items
whose scaled score fell below PRUNE_BELOW are dropped (that also bounds the set's size).

Several workers update the same sets, so reading L, rebasing and adding must be one atomic
step: `LUA_APPLY` does that inside Redis. `apply_increments` below is the same algorithm in
Python, the reference the Lua is tested against (tests/stream/test_popularity.py).

No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

REBASE_AFTER_TAUS = 16.0  # exp(16) ~ 8.9e6: far from float trouble, rebase is rare
PRUNE_BELOW = 1e-6  # of an event weight, after scaling to the current landmark


def aggregate(events: Iterable[tuple[str, float, float]], tau: float, t0: float
              ) -> dict[str, float]:
    """Sum a batch's events (item, time s, weight) per item as increments relative to t0:
    sum of w * exp((t - t0) / tau). Times after t0 are allowed (t0 is usually the batch's
    latest time, so they do not occur)."""
    out: dict[str, float] = {}
    for item, t, w in events:
        out[item] = out.get(item, 0.0) + w * math.exp((t - t0) / tau)
    return out


class TrendingEvent(NamedTuple):
    partition: int
    offset: int
    item: str
    ts_ms: int
    weight: float


def by_partition(events: Iterable[TrendingEvent], tau: float, t0: float
                 ) -> dict[str, list[tuple[int, str, float]]]:
    """A batch's events as LUA_APPLY takes them: partition -> [(offset, item, increment
    relative to t0)], each partition's list in offset order. Per event, not summed per item:
    the script counts only the events above the partition's watermark."""
    out: dict[str, list[tuple[int, str, float]]] = {}
    for e in sorted(events, key=lambda e: (e.partition, e.offset)):
        inc = e.weight * math.exp((e.ts_ms / 1000.0 - t0) / tau)
        out.setdefault(str(e.partition), []).append((e.offset, e.item, inc))
    return out


def above_watermarks(watermarks: dict[str, int],
                     per_partition: dict[str, list[tuple[int, str, float]]]
                     ) -> dict[str, float]:
    """Reference of LUA_APPLY's first step. Sums, per item, the increments of the events whose
    offset is above their partition's watermark (the highest offset this window counted), and
    raises the watermarks in place. A batch replayed after a crash, whole or in part, so adds
    only what was not counted yet, however the replay is cut into batches."""
    increments: dict[str, float] = {}
    for partition, entries in per_partition.items():
        mark = watermarks.get(partition, -1)
        top = mark
        for offset, item, inc in entries:
            if offset > mark:
                increments[item] = increments.get(item, 0.0) + inc
                top = max(top, offset)
        if top > mark:
            watermarks[partition] = top
    return increments


def apply_increments(scores: dict[str, float], ref: int | None, t0: float,
                     increments: dict[str, float], tau: float) -> int:
    """Reference implementation of LUA_APPLY on a plain dict. Mutates `scores`; returns the
    (possibly new) landmark L, an integer number of seconds."""
    if ref is None:
        ref = math.floor(t0)
    if (t0 - ref) / tau > REBASE_AFTER_TAUS:
        new_ref = math.floor(t0)
        factor = math.exp(-(new_ref - ref) / tau)
        for item in list(scores):
            scaled = scores[item] * factor
            if scaled < PRUNE_BELOW:
                del scores[item]
            else:
                scores[item] = scaled
        ref = new_ref
    scale = math.exp((t0 - ref) / tau)
    for item, inc in increments.items():
        value = inc * scale
        if value >= PRUNE_BELOW:
            scores[item] = scores.get(item, 0.0) + value
    return ref


def decayed(stored: float, ref: float, now: float, tau: float) -> float:
    """A stored score's value at time `now` (seconds)."""
    return stored * math.exp(-(now - ref) / tau)


# KEYS[1] = the window's sorted set, KEYS[2] = its landmark (integer epoch seconds),
# KEYS[3] = the batch guard (recsys.keys popularity_batch),
# KEYS[4] = the window's offset watermarks (recsys.keys popularity_applied: partition -> the
# highest source offset counted)
# ARGV = tau, t0, REBASE_AFTER_TAUS, PRUNE_BELOW, JSON object {partition: [[offset, item,
# increment relative to t0], ...]} (`by_partition`), guard TTL in ms (one JSON argument rather
# than several per event: the Redis client's per-argument cost dominates).
# The guard makes a retried write of the same plan (after a timeout whose first attempt did
# execute) add nothing. The watermarks make trending idempotent by offset across processes: a
# worker killed after its table write and before or after this one replays the events, and only
# those above the watermark count (`above_watermarks` is the same step in Python).
# Errors must come before the first write: Redis keeps a failed script's earlier writes (no
# rollback), and a guard or watermark set by a script that then failed would make the retry
# add nothing. So the key types are checked first; OOM is refused at a script's first write
# (Redis 7), which is the guard.
LUA_APPLY = """
for _, key in ipairs({KEYS[1], KEYS[4]}) do
  local kind = redis.call('TYPE', key).ok
  local want = key == KEYS[1] and 'zset' or 'hash'
  if kind ~= 'none' and kind ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a ' .. want)
  end
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[6]) then
  return -1
end
local increments = {}
for partition, entries in pairs(cjson.decode(ARGV[5])) do
  local mark = tonumber(redis.call('HGET', KEYS[4], partition)) or -1
  local top = mark
  for _, e in ipairs(entries) do
    if e[1] > mark then
      increments[e[2]] = (increments[e[2]] or 0) + e[3]
      if e[1] > top then top = e[1] end
    end
  end
  if top > mark then
    redis.call('HSET', KEYS[4], partition, string.format('%d', top))
  end
end
local tau = tonumber(ARGV[1])
local t0 = tonumber(ARGV[2])
local rebase_after = tonumber(ARGV[3])
local prune = tonumber(ARGV[4])
local ref = tonumber(redis.call('GET', KEYS[2]))
if not ref then
  ref = math.floor(t0)
  redis.call('SET', KEYS[2], string.format('%d', ref))
end
if (t0 - ref) / tau > rebase_after then
  local new_ref = math.floor(t0)
  local factor = math.exp(-(new_ref - ref) / tau)
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local scaled = tonumber(members[i + 1]) * factor
    if scaled < prune then
      redis.call('ZREM', KEYS[1], members[i])
    else
      redis.call('ZADD', KEYS[1], scaled, members[i])
    end
  end
  ref = new_ref
  redis.call('SET', KEYS[2], string.format('%d', ref))
end
local scale = math.exp((t0 - ref) / tau)
for item, inc in pairs(increments) do
  local value = inc * scale
  if value >= prune then
    redis.call('ZINCRBY', KEYS[1], value, item)
  end
end
return ref
"""
