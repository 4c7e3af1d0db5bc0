"""Two workers on a four-partition topic: every user updated, by exactly one of them."""

from __future__ import annotations

import time

import pytest

from recsys.events import Event
from recsys.keys import Keys
from recsys.modelstore import unpack_vector
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


def _owned(worker: WorkerProcess) -> int:
    try:
        return int(worker.metric("recsys_stream_assigned_partitions"))
    except OSError:
        return 0


def _partitions_worked(worker: WorkerProcess) -> dict[int, float]:
    out = {}
    for (name, labels), value in worker.metrics().items():
        if name == "recsys_stream_partition_events_total" and value > 0:
            out[int(dict(labels)["partition"])] = value
    return out


def test_two_workers_share_the_users_each_updated_by_exactly_one(
        settings, redis_client, clustered, workers, tmp_path):
    assert settings.topic_partitions == 4
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", clustered)
    users = [f"user-{u}" for u in range(40)]
    now = int(time.time() * 1000)

    def events_for(phase: int) -> list[Event]:
        return [Event.create(user, clustered.items_of(u % 6)[3 * phase + k], "view",
                             timestamp=now + 10 * phase + k, event_id=f"{user}-{phase}-{k}")
                for u, user in enumerate(users) for k in range(3)]

    # Phase 0: one worker owns everything and builds every user's history. The events wait
    # in the topic, so it writes them in big batches: changelog record batches of many
    # records, the case where the local broker under-reports the end offset (transport.py).
    first = events_for(0)
    produce(settings, first)
    a = WorkerProcess(settings, tmp_path, "worker-a")
    workers.append(a)
    a.wait_assigned()
    wait_until(lambda: a.metric("recsys_stream_events_total", outcome="ok") == len(first),
               timeout=10, message="phase 0 not processed")
    before_a = _partitions_worked(a)

    # A second worker joins: half the partitions, and their users' histories, move to it.
    b = WorkerProcess(settings, tmp_path, "worker-b")
    workers.append(b)
    wait_until(lambda: _owned(a) > 0 and _owned(b) > 0 and _owned(a) + _owned(b) == 4,
               timeout=40, interval=0.2,
               message=f"the two workers never split the partitions:\n{b.log_tail()}")

    second = events_for(1)
    partitions = produce(settings, second)
    user_partition = {e.user_id: p for e, p in zip(second, partitions, strict=True)}
    assert len(set(user_partition.values())) >= 3, "users should spread over partitions"
    history = {user: [e for e in first + second if e.user_id == user] for user in users}

    def stale() -> list[tuple[str, int]]:
        out = []
        for user in users:
            raw = redis_client.hget(keys.user_vectors("v1"), user)
            want = expected_vector(history[user], clustered, settings.event_weights)
            if raw is None or relative_error(unpack_vector(raw, FACTORS), want) > 1e-5:
                out.append((user, user_partition[user]))
        return out

    # Each vector reflects phase 0 too: the worker that took a partition over recovered
    # its users' histories from the changelog.
    deadline = time.monotonic() + 20
    while (behind := stale()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not behind, (f"{len(behind)} users not up to date (user, partition): {behind[:8]}; "
                        f"a: {_partitions_worked(a)} b: {_partitions_worked(b)}\n"
                        f"{a.log_tail(1500)}\n{b.log_tail(1500)}")

    after_a = _partitions_worked(a)
    worked_a = {p: n - before_a.get(p, 0) for p, n in after_a.items() if n > before_a.get(p, 0)}
    worked_b = _partitions_worked(b)
    assert worked_a and worked_b, "both workers must have taken part"
    assert not set(worked_a) & set(worked_b), (worked_a, worked_b)
    for user, partition in user_partition.items():
        assert (partition in worked_a) != (partition in worked_b), user
    # Every phase-1 record was processed exactly once across the two workers.
    assert sum(worked_a.values()) + sum(worked_b.values()) == len(second)
    assert b.metric("recsys_stream_events_total", outcome="duplicate") == 0
