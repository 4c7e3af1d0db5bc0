"""kill -9 of a worker in the middle of a stream, restart: every event reflected exactly once."""

from __future__ import annotations

import math
import random
import signal
import threading
import time

import pytest
import redis

from recsys.events import Event
from recsys.keys import Keys
from recsys.modelstore import unpack_vector
from shell.localstack import start_redis
from tests.stream.conftest import (
    FACTORS,
    WorkerProcess,
    expected_vector,
    produce,
    publish,
    relative_error,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stream(clustered, n_users=30, per_user=40, seed=5):
    rng = random.Random(seed)
    start = int(time.time() * 1000) - 60_000
    events = []
    for u in range(n_users):
        items = clustered.items_of(u % 6)
        for n in range(per_user):
            kind = rng.choice(["view"] * 6 + ["click", "addtocart", "transaction"])
            events.append(Event.create(f"user-{u}", rng.choice(items), kind,
                                       timestamp=start + n * 100 + u, event_id=f"u{u}-e{n}"))
    rng.shuffle(events)  # users interleaved; each user's own order does not matter to the sums
    # Producer retries: about one event in ten is sent twice in a row (same event id).
    with_resends = []
    for event in events:
        with_resends.append(event)
        if rng.random() < 0.1:
            with_resends.append(event)
    return with_resends


def test_kill_9_mid_stream_then_restart_reflects_every_event_exactly_once(
        settings, redis_client, clustered, workers, tmp_path):
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", clustered)
    events = _stream(clustered)
    by_user: dict[str, list[Event]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append(event)
    n_resent = len(events) - len({e.event_id for e in events})
    phase1, phase2, phase3 = events[:500], events[500:1000], events[1000:]

    # A long commit interval: nothing the first worker processed gets committed, so the
    # restarted worker re-reads all of it. Users have ~17 events by then and only the last 4
    # ids are remembered, so those replays are recognised by offset; the re-sent ids by id.
    small_memory = {"stream_dedupe_ids": 4}
    first = WorkerProcess(settings, tmp_path, "first", stream_commit_interval_s=30.0,
                          **small_memory)
    workers.append(first)
    first.wait_assigned()
    produce(settings, phase1)
    wait_until(lambda: first.metric("recsys_stream_events_total") >= len(phase1), timeout=10,
               message="phase 1 not processed")

    feeder = threading.Thread(target=lambda: [produce(settings, phase2[i:i + 50])
                                              for i in range(0, len(phase2), 50)])
    feeder.start()
    time.sleep(0.15)
    first.kill()  # SIGKILL: no clean leave, no final commit, no flush
    feeder.join()
    assert first.proc.returncode == -9

    second = WorkerProcess(settings, tmp_path, "second", **small_memory)
    workers.append(second)
    produce(settings, phase3)

    deadline = time.monotonic() + 60
    while (bad := _mismatches(redis_client, keys, by_user, clustered, settings)) \
            and time.monotonic() < deadline:
        assert second.proc.poll() is None, second.log_tail()
        time.sleep(0.25)
    assert not bad, f"{len(bad)} users differ from a from-scratch fold-in, e.g. {bad[:3]}\n" \
                    f"{second.log_tail()}"
    for user, history in by_user.items():
        assert {m.decode() for m in redis_client.zrange(keys.seen(user), 0, -1)} == \
            {e.item_id for e in history}
    # Trending by event id: each distinct event counted exactly once, whatever the kill hit.
    assert not (wrong := _trending_mismatches(redis_client, keys, events, settings)), wrong
    # The restarted worker re-read what the first never committed: far more duplicates than
    # the re-sent ids alone.
    duplicates = second.metric("recsys_stream_events_total", outcome="duplicate")
    assert n_resent > 50 and duplicates > 2 * n_resent, (n_resent, duplicates)


def test_offsets_wait_for_redis_even_across_a_kill_9(
        settings, clustered, workers, tmp_path):
    """Redis freezes: batches hang in their write while the agent keeps reading ahead and the
    consumer keeps committing every 100 ms. Nothing read during the freeze may be committed:
    after a kill -9 and a restart, every event is reflected."""
    own = start_redis(tmp_path)
    try:
        own_url = f"redis://127.0.0.1:{own.port}/0"
        client = redis.Redis.from_url(own_url, socket_timeout=30)
        keys = Keys(settings.redis_namespace)
        publish(client, keys, "v1", clustered)
        events = _stream(clustered, n_users=20, per_user=20, seed=8)
        by_user: dict[str, list[Event]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        before, during = events[:200], events[200:]

        first = WorkerProcess(settings, tmp_path, "frozen-redis", redis_url=own_url,
                              stream_commit_interval_s=0.1)
        workers.append(first)
        first.wait_assigned()
        produce(settings, before)
        wait_until(lambda: _consumed(first) >= len(before), timeout=10,
                   message=f"the first events were not processed:\n{first.log_tail()}")

        own.proc.send_signal(signal.SIGSTOP)
        try:
            produce(settings, during)
            time.sleep(2.0)  # twenty commit intervals with the events read, not written
            first.kill()
        finally:
            own.proc.send_signal(signal.SIGCONT)

        second = WorkerProcess(settings, tmp_path, "after-freeze", redis_url=own_url)
        workers.append(second)
        deadline = time.monotonic() + 60
        while (bad := _mismatches(client, keys, by_user, clustered, settings)) \
                and time.monotonic() < deadline:
            assert second.proc.poll() is None, second.log_tail()
            time.sleep(0.25)
        assert not bad, f"{len(bad)} users lost events, e.g. {bad[:3]}\n{second.log_tail()}"
        assert not (wrong := _trending_mismatches(client, keys, events, settings)), wrong
        client.close()
    finally:
        own.stop()


def _consumed(worker: WorkerProcess) -> float:
    try:
        return worker.metric("recsys_stream_events_total")
    except OSError:
        return 0.0


def _mismatches(redis_client, keys, by_user, clustered, settings) -> list[str]:
    bad = []
    for user, history in by_user.items():
        raw = redis_client.hget(keys.user_vectors("v1"), user)
        want = expected_vector(history, clustered, settings.event_weights)
        if raw is None or relative_error(unpack_vector(raw, FACTORS), want) > 1e-5:
            bad.append(user)
    return bad


def _trending_mismatches(client, keys, events, settings) -> list[tuple[str, float, float]]:
    """Items whose 1h trending score differs from every distinct event (by id) counted once:
    (item, stored, expected). Lost events make it lower, double-counted ones higher."""
    raw_ref = client.get(keys.popularity_ref("1h"))
    ref = float(raw_ref) if raw_ref is not None else 0.0
    expected: dict[str, float] = {}
    for event in {e.event_id: e for e in events}.values():
        add = settings.event_weights[event.event_type] * math.exp(
            (event.timestamp / 1000.0 - ref) / 3600.0)
        expected[event.item_id] = expected.get(event.item_id, 0.0) + add
    stored = {k.decode(): v for k, v in
              client.zrange(keys.popularity("1h"), 0, -1, withscores=True)}
    return [(item, stored.get(item, 0.0), want) for item, want in sorted(expected.items())
            if abs(stored.get(item, 0.0) - want) > 1e-6 * want]
