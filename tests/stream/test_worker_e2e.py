"""A real worker process (`recsys stream`) on the real broker and Redis: freshness for a new
user, recommendations that follow what they viewed, fold-in equal to the maths (and to
implicit), malformed records in the dead-letter topic while good ones keep flowing."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np
import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from scipy.sparse import csr_matrix

from recsys.confidence import confidence, weight_of
from recsys.events import Event
from recsys.foldin import score_items
from recsys.keys import Keys
from recsys.modelstore import unpack_vector
from recsys.settings import Settings, load_settings
from recsys.topk import top_k
from tests.stream.conftest import (
    FACTORS,
    Clustered,
    WorkerProcess,
    expected_vector,
    produce,
    publish,
    relative_error,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Live:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    worker: WorkerProcess
    model: Clustered

    def vector(self, user: str, version: str = "v1") -> np.ndarray | None:
        raw = self.redis.hget(self.keys.user_vectors(version), user)
        return None if raw is None else unpack_vector(raw, FACTORS)

    def seen(self, user: str) -> set[str]:
        return {m.decode() for m in self.redis.zrange(self.keys.seen(user), 0, -1)}


@pytest.fixture(scope="module")
def live(kafka_bootstrap_servers, redis_url, tmp_path_factory, clustered):
    name = f"t{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap_servers, redis_url=redis_url,
        redis_namespace=name, interactions_topic=f"{name}.interactions",
        dead_letter_topic=f"{name}.dlq", stream_app_id=f"{name}-stream", topic_partitions=2)
    client = redis.Redis.from_url(redis_url)
    keys = Keys(name)
    publish(client, keys, "v1", clustered)
    worker = WorkerProcess(settings, tmp_path_factory.mktemp("live"), "live")
    try:
        worker.wait_assigned()
        yield Live(settings, keys, client, worker, clustered)
    finally:
        worker.stop()
        client.close()


def test_new_user_gets_a_vector_within_two_seconds_and_related_recommendations(live):
    user = f"fresh-{uuid.uuid4().hex[:6]}"
    viewed = live.model.items_of(3)[:5]
    events = [Event.create(user, item, "view") for item in viewed]
    started = time.monotonic()
    produce(live.settings, events)
    wait_until(lambda: live.vector(user) is not None and live.seen(user) == set(viewed),
               timeout=2.0, interval=0.005, message="no complete vector within 2 s")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0

    index = {item: row for row, item in enumerate(live.model.item_ids)}
    scores = score_items(live.vector(user), live.model.factors)
    top = top_k(scores, 10, exclude=np.array([index[i] for i in viewed]))
    same_cluster = sum(live.model.cluster[live.model.item_ids[row]] == 3 for row in top)
    assert same_cluster >= 8, [live.model.item_ids[row] for row in top]
    # Observed right after the Redis write the test just saw: allow the worker that moment.
    wait_until(lambda: live.worker.metric("recsys_stream_freshness_seconds_count") >= 5,
               timeout=2.0, message="freshness not recorded")


def test_stream_fold_in_equals_the_maths_and_implicit(live):
    user = f"mix-{uuid.uuid4().hex[:6]}"
    items = live.model.items_of(1)
    kinds = ["view", "click", "addtocart", "view", "transaction", "rating", "view"]
    picks = [items[0], items[1], items[0], items[2], items[0], items[3], "not-in-model"]
    now = int(time.time() * 1000)
    events = [Event.create(user, item, kind, timestamp=now - 1000 + n,
                           value=5.0 if kind == "rating" else None)
              for n, (item, kind) in enumerate(zip(picks, kinds, strict=True))]
    resent = [events[2], events[4]]  # a producer retry: same event ids again
    produce(live.settings, events + resent)
    expected = expected_vector(events, live.model, live.settings.event_weights)
    wait_until(lambda: (v := live.vector(user)) is not None
               and relative_error(v, expected) < 1e-5, timeout=5.0,
               message="stream vector never matched the from-scratch fold-in")

    # The same user through implicit's exact solver on the same factors and confidences.
    weights: dict[int, float] = {}
    index = {item: row for row, item in enumerate(live.model.item_ids)}
    for event in events:
        if event.item_id in index:
            row = index[event.item_id]
            weights[row] = weights.get(row, 0.0) + weight_of(event, live.settings.event_weights)
    cols = sorted(weights)
    row = csr_matrix((confidence(np.array([weights[c] for c in cols]), 2.0).astype(np.float32),
                      ([0] * len(cols), cols)), shape=(1, len(index)))
    theirs = live.model.als.recalculate_user(0, row)
    assert relative_error(live.vector(user), np.asarray(theirs)) < 1e-4
    assert live.worker.metric("recsys_stream_events_total", outcome="duplicate") >= 2
    assert live.worker.metric("recsys_stream_events_total", outcome="unknown_item") >= 1


def _dead_letters(settings: Settings, expected: int, timeout: float = 10.0) -> list[dict]:
    consumer = Consumer(settings.kafka_config(**{"group.id": f"dlq-{uuid.uuid4().hex[:6]}",
                                                 "enable.auto.commit": False}))
    consumer.assign([TopicPartition(settings.dead_letter_topic, 0, 0)])
    letters: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(letters) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                letters.append(orjson.loads(msg.value()))
    finally:
        consumer.close()
    return letters


def test_malformed_events_go_to_the_dead_letter_topic_and_the_worker_keeps_going(live):
    user = f"after-bad-{uuid.uuid4().hex[:6]}"
    bad = [(user.encode(), b"{this is not json"),
           (user.encode(), orjson.dumps({"event_id": "x1", "user_id": user, "item_id": "i",
                                         "event_type": "teleport", "timestamp": 1})),
           (user.encode(), b"\xff\xfe binary")]
    produce(live.settings, [], raw=bad)
    good = [Event.create(user, item, "view") for item in live.model.items_of(0)[:2]]
    produce(live.settings, good)
    wait_until(lambda: live.vector(user) is not None, timeout=5.0,
               message="the good events after the bad ones were not processed")

    letters = _dead_letters(live.settings, expected=3)
    mine = [d for d in letters if d["key"] == user]
    assert [d["reason"] for d in mine] == ["malformed_json", "unknown_event_type",
                                           "malformed_json"]
    assert mine[0]["payload"] == "{this is not json"
    assert mine[1]["field"] == "event_type" and mine[1]["topic"] == live.settings.interactions_topic
    assert mine[2]["payload_encoding"] == "base64"
    assert all(isinstance(d["offset"], int) and d["partition"] >= 0 for d in mine)
    assert live.worker.metric("recsys_stream_dead_letters_total", reason="malformed_json") >= 2
    assert live.worker.proc.poll() is None
