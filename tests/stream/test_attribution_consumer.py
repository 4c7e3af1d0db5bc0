"""The attribution consumer against the real broker and Redis: exact counts per variant."""

from __future__ import annotations

import threading
import time

import pytest
import redis as redis_lib
from prometheus_client import REGISTRY

from recsys.attribution import Impression
from recsys.events import Event
from recsys.eventtime import now_ms
from recsys.experiments import counts_from_hash
from recsys.kafka import ensure_topics
from recsys.keys import Keys
from recsys.producer import EventProducer
from stream.attribution import run

pytestmark = pytest.mark.integration


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_outcomes_are_counted_once_per_variant(settings, redis_client: redis_lib.Redis):
    ensure_topics(settings)
    keys = Keys(settings.redis_namespace)
    t = now_ms()
    lists = [Impression(f"r{n}", f"u{n}", ("a", "b", "c"), t, "user", "personalized", "v1",
                        "model" if n % 2 == 0 else "pop", "exp") for n in range(6)]
    events = [
        Event.create("u0", "b", "click", timestamp=t + 10, event_id="e0",
                     context={"recommendation_id": "r0"}),
        Event.create("u0", "b", "click", timestamp=t + 20, event_id="e0b",
                     context={"recommendation_id": "r0"}),  # second click on it: once
        Event.create("u1", "a", "click", timestamp=t + 10, event_id="e1"),  # by window
        Event.create("u1", "a", "transaction", timestamp=t + 30, event_id="e2"),
        Event.create("u2", "c", "click", timestamp=t + 10, event_id="e3",
                     context={"recommendation_id": "r1"}),  # u1's list: forged
        Event.create("u3", "z", "click", timestamp=t + 10, event_id="e4"),  # not recommended
        # Moves the stream's time on: what still waits for its list is given up.
        Event.create("u5", "z", "view", timestamp=t + 60_000, event_id="e5"),
    ]
    with EventProducer(settings) as producer:
        for imp in lists:
            producer.send_raw(imp.key, imp.to_json(), topic=settings.impressions_topic)
        producer.flush()
        for event in events:
            producer.send(event)
    before = sample("recsys_feedback_unattributed_total", outcome="click",
                    reason="unknown_recommendation")
    stop = threading.Event()
    worker = threading.Thread(target=run, args=(settings.model_copy(
        update={"attribution_web_port": 0}), stop), daemon=True)
    worker.start()
    expected = {"model": {"impressions": 3, "click": 1},
                "pop": {"impressions": 3, "click": 1, "purchase": 1}}
    deadline = time.monotonic() + 60
    counts: dict = {}
    while time.monotonic() < deadline and (counts != expected or sample(
            "recsys_feedback_unattributed_total", outcome="click",
            reason="unknown_recommendation") == before):
        counts = counts_from_hash(redis_client.hgetall(keys.experiment_counts("exp")))
        time.sleep(0.2)
    time.sleep(1.0)  # nothing more arrives later
    counts = counts_from_hash(redis_client.hgetall(keys.experiment_counts("exp")))
    stop.set()
    worker.join(15)
    assert counts == expected
    assert sample("recsys_feedback_unattributed_total", outcome="click",
                  reason="unknown_recommendation") == before + 1
    assert sample("recsys_feedback_unattributed_total", outcome="click",
                  reason="no_impression") >= 1  # e4
    assert sample("recsys_feedback_outcomes_total", outcome="purchase", endpoint="user",
                  model_version="v1", variant="pop", source="personalized", bucket="1") >= 1
