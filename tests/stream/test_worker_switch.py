"""A model switch in the middle of a stream: no vector ever sits under a version it was not
computed against, and events between the trainer's snapshot and the switch are not lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from recsys.events import Event
from recsys.keys import Keys
from recsys.modelstore import activate_version, stage_model_version, unpack_vector
from tests.stream.conftest import (
    FACTORS,
    WorkerProcess,
    expected_vector,
    manifest,
    produce,
    publish,
    relative_error,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_USERS = 40


def _events(users, model, start_ms, n, tag):
    out = []
    for u in users:
        items = model.items_of(u % 6)
        for k in range(n):
            out.append(Event.create(f"user-{u}", items[(u + 3 * k + len(tag)) % len(items)],
                                    "addtocart" if k % 3 == 2 else "view",
                                    timestamp=start_ms + k * 10 + u, event_id=f"{tag}-{u}-{k}"))
    return out


def _matches_a_prefix(vector, history, model, weights) -> bool:
    for end in range(1, len(history) + 1):
        want = expected_vector(history[:end], model, weights)
        if want is not None and relative_error(vector, want) < 1e-5:
            return True
    return False


def test_switch_mid_stream_keeps_versions_apart_and_loses_nothing(
        settings, redis_client, clustered, clustered_v2, workers, tmp_path):
    keys = Keys(settings.redis_namespace)
    weights = settings.event_weights
    publish(redis_client, keys, "v1", clustered)
    worker = WorkerProcess(settings, tmp_path, "switcher")
    workers.append(worker)
    worker.wait_assigned()

    now = int(time.time() * 1000)
    phase_a = _events(range(N_USERS), clustered, now - 50_000, 4, "a")   # trainer saw these
    phase_b = _events(range(10, 30), clustered, now - 20_000, 3, "b")    # after the snapshot
    phase_c = _events(range(20, N_USERS), clustered, now - 5_000, 5, "c")  # during the switch
    history: dict[str, list[Event]] = {}
    for event in phase_a + phase_b + phase_c:
        history.setdefault(event.user_id, []).append(event)

    produce(settings, phase_a)
    wait_until(lambda: redis_client.hlen(keys.user_vectors("v1")) == N_USERS,
               timeout=10, message="phase A not folded in")

    # The trainer's snapshot ends with phase A; it fits users 0-19 and stages v2.
    snapshot_ms = max(e.timestamp for e in phase_a)
    trained = [f"user-{u}" for u in range(20)]
    trainer_vectors = np.stack([
        expected_vector([e for e in phase_a if e.user_id == user], clustered_v2, weights)
        for user in trained]).astype(np.float32)
    stage_model_version(redis_client, keys, "v2", clustered_v2.item_ids, clustered_v2.factors,
                        manifest("v2", clustered_v2, snapshot_ms), user_ids=trained,
                        user_factors=trainer_vectors)

    produce(settings, phase_b)  # between the snapshot and the switch
    wait_until(lambda: all(redis_client.zcard(keys.seen(f"user-{u}")) >= 1
                           for u in range(10, 30)), timeout=10)

    # Sample every vector of both versions while phase C streams and v2 is activated.
    samples: set[tuple[str, str, bytes]] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for version in ("v1", "v2"):
                users = [f"user-{u}" for u in range(N_USERS)]
                raws = redis_client.hmget(keys.user_vectors(version), users)
                samples.update((version, u, r)
                               for u, r in zip(users, raws, strict=True) if r is not None)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        feeder = threading.Thread(target=lambda: [produce(settings, phase_c[i:i + 10])
                                                  for i in range(0, len(phase_c), 10)])
        feeder.start()
        time.sleep(0.1)
        activate_version(redis_client, keys, "v2")
        feeder.join()

        def settled() -> bool:
            for u in range(10, N_USERS):
                raw = redis_client.hget(keys.user_vectors("v2"), f"user-{u}")
                want = expected_vector(history[f"user-{u}"], clustered_v2, weights)
                if raw is None or relative_error(unpack_vector(raw, FACTORS), want) > 1e-5:
                    return False
            return True

        wait_until(settled, timeout=15, interval=0.1,
                   message="events after the snapshot are not all reflected under v2")
        time.sleep(0.3)  # a few more samples of the settled state
    finally:
        stop.set()
        sampler.join()

    # Users the trainer fitted and who did nothing since keep the trainer's v2 vector.
    for u in range(10):
        raw = redis_client.hget(keys.user_vectors("v2"), f"user-{u}")
        assert np.array_equal(unpack_vector(raw, FACTORS), trainer_vectors[u])

    # Invariant 2 on every vector observed, of either version, at any time.
    trainer = {user: trainer_vectors[n] for n, user in enumerate(trained)}
    models = {"v1": clustered, "v2": clustered_v2}
    assert any(version == "v2" for version, _, _ in samples)
    for version, user, raw in samples:
        vector = unpack_vector(raw, FACTORS)
        if version == "v2" and user in trainer and np.array_equal(vector, trainer[user]):
            continue
        assert _matches_a_prefix(vector, history[user], models[version], weights), \
            f"{user}'s vector under {version} was not computed against {version}"
    assert worker.metric("recsys_stream_model_info", version="v2") == 1.0
    assert worker.metric("recsys_stream_recomputed_users_total") >= 20
