"""POST /v1/events and the classic POST /api/feedback against the real broker: what the API
accepts is what a consumer of the interactions topic reads back."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from recsys.kafka import ensure_topics
from recsys.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def event(**overrides):
    return {"event_id": uuid.uuid4().hex, "user_id": "u1", "item_id": "i9",
            "event_type": "view", "timestamp": int(time.time() * 1000), **overrides}


def consume(settings: Settings, expected: int, timeout: float = 15.0) -> list[tuple[bytes, dict]]:
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"check-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "fetch.wait.max.ms": 20}))
    consumer.assign([TopicPartition(settings.interactions_topic, p, OFFSET_BEGINNING)
                     for p in range(settings.topic_partitions)])
    out: list[tuple[bytes, dict]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append((msg.key(), orjson.loads(msg.value())))
        # A short extra wait catches anything produced beyond what was expected.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append((msg.key(), orjson.loads(msg.value())))
    finally:
        consumer.close()
    return out


@pytest.fixture
def topics(settings):
    ensure_topics(settings)


async def test_single_event_is_produced_keyed_by_user(settings, topics, client):
    sent = event(event_type="addtocart", value=2)
    r = await client.post("/v1/events", json=sent)
    assert r.status_code == 202
    assert r.json() == {"accepted": 1, "rejected": 0, "event_ids": [sent["event_id"]],
                        "errors": []}
    [(key, got)] = consume(settings, 1)
    assert key == b"u1"
    assert got["event_id"] == sent["event_id"] and got["event_type"] == "addtocart"
    assert got["value"] == 2.0


async def test_batch_reports_each_bad_event_and_produces_the_good_ones(settings, topics, client):
    good = [event(user_id=f"u{n}") for n in range(3)]
    batch = [good[0], event(event_type="teleport"), good[1], "not an object",
             event(timestamp=12), event(event_type="rating", value=9), good[2],
             {"event_id": "x", "user_id": "u", "event_type": "view", "timestamp": 1}]
    r = await client.post("/v1/events", json=batch)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 3 and body["rejected"] == 5
    assert body["event_ids"] == [e["event_id"] for e in good]
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert reasons == {1: "unknown_event_type", 3: "not_an_object",
                       4: "timestamp_out_of_range", 5: "rating_out_of_range", 7: "missing_field"}
    assert all(e["message"] for e in body["errors"])
    got = consume(settings, 3)
    assert sorted(g["event_id"] for _, g in got) == sorted(e["event_id"] for e in good)
    metrics = (await client.get("/metrics")).text
    assert 'recsys_api_events_total{reason="",result="accepted"} 3.0' in metrics
    assert 'recsys_api_events_total{reason="unknown_event_type",result="rejected"} 1.0' in metrics


async def test_nothing_valid_is_422_and_nothing_is_produced(settings, topics, client):
    r = await client.post("/v1/events", json=event(user_id=""))
    assert r.status_code == 422
    assert r.json()["errors"][0] == {"index": 0, "reason": "empty_id", "field": "user_id",
                                     "message": "must not be empty"}
    assert (await client.post("/v1/events", json=[])).status_code == 422
    r = await client.post("/v1/events", json="just a string")
    assert r.status_code == 422
    r = await client.post("/v1/events", content=b"{broken")
    assert r.status_code == 422
    r = await client.post("/v1/events", json=[event()] * 1001)
    assert r.status_code == 422 and "at most 1000" in r.json()["detail"]
    r = await client.post("/v1/events", json=event(context={f"k{n}": "x" * 600 for n in range(30)}))
    assert r.status_code == 422 and r.json()["errors"][0]["reason"] == "oversized_payload"
    assert consume(settings, 0, timeout=0.5) == []


async def test_classic_feedback_becomes_a_rating_event(settings, topics, client):
    r = await client.post("/api/feedback", json={"user_id": 17, "product_id": "p-3", "rating": 4})
    assert r.status_code == 202
    event_id = r.json()["event_id"]
    [(key, got)] = consume(settings, 1)
    assert key == b"17"
    assert got["event_id"] == event_id and got["event_type"] == "rating"
    assert got["item_id"] == "p-3" and got["value"] == 4.0
    for bad in [{"user_id": "u", "product_id": "p", "rating": 0},
                {"user_id": "u", "rating": 3}, {"user_id": "", "product_id": "p", "rating": 3}]:
        assert (await client.post("/api/feedback", json=bad)).status_code == 422, bad


async def test_feedback_retries_with_an_idempotency_key_keep_one_event_id(settings, topics,
                                                                          client):
    first = {"user_id": "u5", "product_id": "p-1", "rating": 5}
    ids = []
    for _ in range(3):  # a client retrying after a lost answer
        r = await client.post("/api/feedback", json=first, headers={"Idempotency-Key": "k-77"})
        assert r.status_code == 202
        ids.append(r.json()["event_id"])
    r = await client.post("/api/feedback", json={**first, "idempotency_key": "k-77"})
    ids.append(r.json()["event_id"])
    assert len(set(ids)) == 1
    # Another user's identical key is another event; no key: a new id each time.
    other = await client.post("/api/feedback", json={**first, "user_id": "u6"},
                              headers={"Idempotency-Key": "k-77"})
    plain = [(await client.post("/api/feedback", json=first)).json()["event_id"]
             for _ in range(2)]
    assert other.json()["event_id"] != ids[0] and len(set(plain)) == 2
    got = consume(settings, 7)
    assert sorted(g["event_id"] for _, g in got).count(ids[0]) == 4  # same id: deduped later
    r = await client.post("/api/feedback", json={**first, "idempotency_key": "a"},
                          headers={"Idempotency-Key": "b"})
    assert r.status_code == 422 and "differ" in r.json()["detail"]
    r = await client.post("/api/feedback", json=first, headers={"Idempotency-Key": "x" * 200})
    assert r.status_code == 422


async def test_a_client_clock_a_day_ahead_is_clamped_to_arrival_and_counted(settings, topics,
                                                                           client):
    before = int(time.time() * 1000)
    ahead = event(timestamp=before + 23 * 3_600_000)
    close = event(timestamp=before + 60_000)  # within the tolerance: kept as sent
    naive = event(timestamp="2026-01-01T10:00:00")
    r = await client.post("/v1/events", json=[ahead, close, naive])
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 2
    assert body["errors"][0]["index"] == 2
    assert body["errors"][0]["reason"] == "timestamp_without_timezone"
    got = {g["event_id"]: g for _, g in consume(settings, 2)}
    assert before <= got[ahead["event_id"]]["timestamp"] <= int(time.time() * 1000)
    assert got[close["event_id"]]["timestamp"] == close["timestamp"]
    metrics = (await client.get("/metrics")).text
    assert 'recsys_api_events_clamped_total{reason="future"} 1.0' in metrics
