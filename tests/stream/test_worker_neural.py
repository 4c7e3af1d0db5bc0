"""A neural model version in a real worker (real broker, real Redis): the worker writes the
user tower's vector of each user's recent items; a version it cannot read (unknown tower
format) is refused with an error log and a metric, and the worker keeps the one it has."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from recsys.events import Event
from recsys.keys import Keys
from recsys.modelstore import activate_version, stage_model_version, unpack_vector
from recsys.sequence_model import (
    UserTower,
    pack_tower,
    random_weights,
    recent_items,
    to_rows,
    tower_manifest,
)
from tests.stream.conftest import (
    FACTORS,
    WorkerProcess,
    manifest,
    produce,
    relative_error,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 5


def publish_neural(redis_client, keys, version, model, weights, tower_format=None) -> None:
    meta = {**manifest(version, model), "model_kind": "neural",
            "tower": tower_manifest(WINDOW, FACTORS, 24)}
    if tower_format is not None:
        meta["tower"]["format"] = tower_format
    stage_model_version(redis_client, keys, version, model.item_ids, model.factors, meta,
                        tower=pack_tower(weights))
    activate_version(redis_client, keys, version)


def expected(events: list[Event], model, tower: UserTower) -> np.ndarray:
    """From scratch: the user's distinct items by last touch, unknown ones skipped, the
    newest WINDOW, through the tower."""
    history: dict[str, list[float]] = {}
    for event in events:
        entry = history.setdefault(event.item_id, [0.0, event.timestamp])
        entry[1] = max(entry[1], event.timestamp)
    index = {item: row for row, item in enumerate(model.item_ids)}
    rows = to_rows([recent_items(history)], index, WINDOW).rows[0]
    return tower.user_vectors([rows])[0]


def test_worker_writes_the_towers_vector_and_keeps_it_over_an_unreadable_version(
        settings, redis_client, clustered, workers, tmp_path):
    keys = Keys(settings.redis_namespace)
    weights = random_weights(FACTORS, WINDOW, 24, seed=5)
    tower = UserTower(clustered.factors, weights)
    publish_neural(redis_client, keys, "n1", clustered, weights)
    worker = WorkerProcess(settings, tmp_path, "neural")
    workers.append(worker)
    worker.wait_assigned()

    now = int(time.time() * 1000)
    events: list[Event] = []
    for u in range(12):
        items = clustered.items_of(u % 6)
        # more items than the window, one repeat, and one item no version knows
        for k in range(8):
            events.append(Event.create(f"user-{u}", items[(u + 2 * k) % len(items)], "view",
                                       timestamp=now - 10_000 + 100 * k + u,
                                       event_id=f"n-{u}-{k}"))
        events.append(Event.create(f"user-{u}", items[u % len(items)], "view",
                                   timestamp=now - 1_000 + u, event_id=f"n-{u}-again"))
        events.append(Event.create(f"user-{u}", "never-seen-item", "view",
                                   timestamp=now - 500 + u, event_id=f"n-{u}-unknown"))
    produce(settings, events)
    wait_until(lambda: redis_client.hlen(keys.user_vectors("n1")) == 12, timeout=15,
               message="neural vectors not written")

    def matches() -> bool:
        for u in range(12):
            mine = [e for e in events if e.user_id == f"user-{u}"]
            raw = redis_client.hget(keys.user_vectors("n1"), f"user-{u}")
            if raw is None or relative_error(unpack_vector(raw, FACTORS),
                                             expected(mine, clustered, tower)) > 1e-4:
                return False
        return True

    wait_until(matches, timeout=10, message="worker vectors differ from the tower's")
    assert worker.metric("recsys_stream_tower_skipped_items_total", reason="unknown") >= 12
    assert worker.metric("recsys_stream_tower_skipped_items_total", reason="truncated") > 0
    assert redis_client.hlen(keys.user_vectors("n1")) == 12

    # a version whose tower this code cannot read: refused, n1 stays in use
    errors_before = worker.metric("recsys_stream_model_load_errors_total")
    publish_neural(redis_client, keys, "n2", clustered, weights, tower_format="sasrec9-npz")
    wait_until(lambda: worker.metric("recsys_stream_model_load_errors_total") > errors_before,
               timeout=15, message="the unreadable version was not reported")
    assert "unsupported tower format" in worker.log_tail(20_000)
    later = [Event.create("user-late", clustered.items_of(0)[k], "view",
                          timestamp=now + k, event_id=f"late-{k}") for k in range(3)]
    produce(settings, later)
    wait_until(lambda: redis_client.hexists(keys.user_vectors("n1"), "user-late"), timeout=15,
               message="the worker stopped serving n1")
    raw = redis_client.hget(keys.user_vectors("n1"), "user-late")
    assert relative_error(unpack_vector(raw, FACTORS), expected(later, clustered, tower)) < 1e-4
    assert not redis_client.exists(keys.user_vectors("n2"))
    assert orjson.loads(redis_client.get(keys.model_manifest("n2")))["model_kind"] == "neural"
