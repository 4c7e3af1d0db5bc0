"""Impressions and experiments through the real app, the real broker and the real Redis."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from recsys.attribution import Impression
from recsys.kafka import ensure_topics
from recsys.settings import Settings
from tests.serving.conftest import running_app, with_overrides

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
KEY = {"X-API-Key": "s3cret"}


def read_impressions(settings: Settings, expected: int, timeout: float = 15.0
                     ) -> list[tuple[bytes, Impression]]:
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"check-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "fetch.wait.max.ms": 20}))
    consumer.assign([TopicPartition(settings.impressions_topic, p, OFFSET_BEGINNING)
                     for p in range(settings.topic_partitions)])
    out: list[tuple[bytes, Impression]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expected:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append((msg.key(), Impression.from_json(msg.value())))
        end = time.monotonic() + 0.5  # anything beyond what was expected
        while time.monotonic() < end:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append((msg.key(), Impression.from_json(msg.value())))
    finally:
        consumer.close()
    return out


async def test_every_recommendation_response_is_recorded_as_an_impression(settings, published):
    ensure_topics(settings)
    user, item = published.user_ids[0], published.item_ids[0]
    before = int(time.time() * 1000)
    async with running_app(settings) as http:
        answers = {
            "user": await http.get(f"/v1/users/{user}/recommendations?k=5"),
            "similar": await http.get(f"/v1/items/{item}/similar?k=3&session_id=s-1"),
            "popular": await http.get("/v1/popular?k=4&session_id=s-2"),
            "anonymous": await http.post("/v1/recommendations/anonymous?k=4&session_id=s-3",
                                         json={"items": [{"item_id": item}]}),
            "classic": await http.get(f"/api/recommendations?user_id={user}&k=3"),
            "batch": await http.post("/v1/recommendations/batch",
                                     json={"user_ids": [user], "k": 3}),
        }
        metrics = (await http.get("/metrics")).text
    bodies = {name: r.json() for name, r in answers.items()}
    bodies["batch"] = bodies["batch"]["results"][0]
    assert all(r.status_code == 200 for r in answers.values()), bodies
    ids = {name: body["recommendation_id"] for name, body in bodies.items()}
    assert len(set(ids.values())) == 6 and all(len(i) == 32 for i in ids.values())
    assert all(body["variant"] is None for body in bodies.values())
    got = {imp.endpoint: (key, imp) for key, imp in read_impressions(settings, 6)}
    assert set(got) == set(ids)
    subjects = {"user": user, "similar": "s-1", "popular": "s-2", "anonymous": "s-3",
                "classic": user, "batch": user}
    for name, (key, imp) in got.items():
        body = bodies[name]
        listed = [e["item_id"] for e in body["items"]] if "items" in body else [
            e["product_id"] for e in body["recommendations"]]
        assert imp.recommendation_id == ids[name]
        assert key == subjects[name].encode() and imp.subject == subjects[name]
        assert list(imp.items) == listed and imp.source == body["source"]
        assert imp.model_version == body["model_version"]
        assert before <= imp.served_at_ms <= int(time.time() * 1000)
    assert 'recsys_api_impressions_total{endpoint="user",outcome="queued"} 1.0' in metrics


async def test_impressions_off_records_nothing_but_still_names_the_list(settings, published):
    ensure_topics(settings)
    off = with_overrides(settings, impressions_enabled=False)
    async with running_app(off) as http:
        r = await http.get(f"/v1/users/{published.user_ids[0]}/recommendations?k=5")
        metrics = (await http.get("/metrics")).text
    assert r.status_code == 200 and len(r.json()["recommendation_id"]) == 32
    assert read_impressions(settings, 0, timeout=1.0) == []
    assert 'recsys_api_impressions_total{endpoint="user",outcome="off"} 1.0' in metrics


async def test_experiment_config_assignment_and_report(settings, published):
    ensure_topics(settings)
    keyed = with_overrides(settings, api_key="s3cret")
    async with running_app(keyed) as http:
        bad = await http.put("/v1/admin/experiments/e1", headers=KEY, json={"variants": [
            {"name": "model", "kind": "model", "share": 0.5},
            {"name": "pop", "kind": "popularity", "share": 0.6}]})
        assert bad.status_code == 422 and "sum to 1; they sum to 1.1" in bad.json()["detail"]
        unknown = await http.put("/v1/admin/experiments/e1", headers=KEY, json={"variants": [
            {"name": "a", "kind": "model_version", "value": "v404", "share": 0.5},
            {"name": "pop", "kind": "popularity", "share": 0.5}]})
        assert unknown.status_code == 422 and "v404" in unknown.json()["detail"]
        assert (await http.put("/v1/admin/experiments/e1", json={})).status_code == 401
        ok = await http.put("/v1/admin/experiments/e1", headers=KEY, json={"variants": [
            {"name": "model", "kind": "model", "share": 0.5},
            {"name": "pop", "kind": "popularity", "share": 0.5}]})
        assert ok.status_code == 200, ok.text
        clash = await http.put("/v1/admin/experiments/e2", headers=KEY, json={"variants": [
            {"name": "a", "kind": "model", "share": 0.5},
            {"name": "b", "kind": "popularity", "share": 0.5}]})
        assert clash.status_code == 409 and "'e1' is active" in clash.json()["detail"]
        seen: dict[str, set[str]] = {}
        for user in published.user_ids[:40]:
            for _ in range(2):  # sticky: the same variant twice
                body = (await http.get(f"/v1/users/{user}/recommendations?k=5")).json()
                seen.setdefault(user, set()).add(body["variant"])
                expected = "popular" if body["variant"] == "pop" else "personalized"
                assert body["source"].startswith(expected) or body["source"].startswith(
                    "fallback"), body
        assert all(len(v) == 1 for v in seen.values())
        assert {v for s in seen.values() for v in s} == {"model", "pop"}
        listing = (await http.get("/v1/admin/experiments", headers=KEY)).json()
        assert [row["variant"] for row in listing["variants"]] == ["model", "pop"]
        assert listing["experiments"][0]["enough_data"] is False
        assert (await http.delete("/v1/admin/experiments/e1", headers=KEY)).status_code == 200
        after = (await http.get(f"/v1/users/{published.user_ids[0]}/recommendations")).json()
        assert after["variant"] is None
    impressions = read_impressions(settings, 81)
    variants = {imp.subject: imp.variant for _, imp in impressions if imp.variant}
    assert {u: {v} for u, v in variants.items()} == seen
    assert {imp.experiment for _, imp in impressions if imp.variant} == {"e1"}
