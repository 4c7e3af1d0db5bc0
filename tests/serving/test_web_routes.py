"""The browser-facing routes over HTTP, without a browser: offline docs, pages, the friendly
404, the storefront's cookie-bound events, the admin API's key rule, rollback and stream
progress. Real Redis and broker; the real-browser tests are in tests/web."""

from __future__ import annotations

import re
import time

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from recsys.kafka import ensure_topics
from recsys.keys import Keys
from tests.serving.conftest import publish, running_app, with_overrides
from tests.serving.test_events_api import consume

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEY = "admin-secret-key"


async def test_docs_load_their_assets_from_the_api_itself(client):
    for page in ("/docs", "/redoc"):
        r = await client.get(page)
        assert r.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert sources, page
        assert all(src.startswith("/") for src in sources), sources  # no CDN, no fonts
        for src in sources:
            asset = await client.get(src)
            assert asset.status_code == 200, src
            assert len(asset.content) > 1000 or src.endswith(".png"), src


async def test_pages_are_html_and_unknown_product_is_a_friendly_404(client, published):
    home = await client.get("/")
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert "Recommended for you" in home.text
    known = await client.get(f"/product/{published.item_ids[0]}")
    # The catalog has no entry for model items in this fixture: only catalog items have pages.
    assert known.status_code == 404
    await client.put(f"/v1/items/{published.item_ids[0]}", json={"name": "Lamp"})
    assert (await client.get(f"/product/{published.item_ids[0]}")).status_code == 200
    missing = await client.get("/product/no-such-thing", headers={"accept": "text/html"})
    assert missing.status_code == 404 and "could not find" in missing.text
    lost = await client.get("/no/such/page", headers={"accept": "text/html"})
    assert lost.status_code == 404 and "text/html" in lost.headers["content-type"]
    # API clients keep JSON errors.
    api = await client.get("/v1/items/no-such-thing", headers={"accept": "text/html"})
    assert api.status_code == 404 and api.json()["detail"]


async def test_visitor_cookie_binds_shop_events_to_the_visitor(client, settings):
    ensure_topics(settings)
    assert (await client.post("/shop/api/events", json={"item_id": "i1", "event_type": "click"})
            ).status_code == 400  # no cookie yet
    me = (await client.get("/shop/api/me")).json()
    assert me["anonymous"] and me["user_id"].startswith("anon-")
    assert (await client.get("/shop/api/me")).json()["user_id"] == me["user_id"]  # kept
    before = int(time.time() * 1000)
    r = await client.post("/shop/api/events", json={"item_id": "i1", "event_type": "click"})
    assert r.status_code == 202
    # The browser cannot choose the user, the id or the time.
    bad = await client.post("/shop/api/events", json={"item_id": "i1", "event_type": "click",
                                                       "user_id": "someone-else"})
    assert bad.status_code == 422
    assert (await client.post("/shop/api/events", json={"item_id": "i1", "event_type": "rating"})
            ).status_code == 422
    login = await client.post("/shop/api/login", json={"user_id": "u7"})
    assert login.json() == {"user_id": "u7", "anonymous": False}
    assert (await client.post("/shop/api/events", json={"item_id": "i2",
                                                         "event_type": "transaction"})
            ).status_code == 202
    assert (await client.post("/shop/api/login", json={"user_id": "bad\nid"})).status_code == 422
    got = sorted(((key, value) for key, value in consume(settings, 2)),
                 key=lambda kv: kv[1]["timestamp"])
    assert [(k, v["item_id"], v["event_type"]) for k, v in got] == [
        (me["user_id"].encode(), "i1", "click"), (b"u7", "i2", "transaction")]
    assert all(v["timestamp"] >= before for _, v in got)


async def test_catalog_page_lists_items_by_category(client):
    sizes = {"c0": 5, "c1": 3, "c2": 4}
    items = [{"item_id": f"p{c}{n}", "name": f"P {c}{n}", "category": c, "price": 1.5,
              "available": (c, n) != ("c0", 0)}
             for c, size in sizes.items() for n in range(size)]
    assert (await client.put("/v1/items", json=items)).status_code == 200
    page = (await client.get("/shop/api/catalog?limit=2")).json()
    # Largest categories first; unavailable items are not offered.
    assert page["categories"] == [{"category": "c0", "count": 5}, {"category": "c2", "count": 4},
                                  {"category": "c1", "count": 3}]
    assert [i["item_id"] for i in page["items"]] == ["pc01", "pc02", "pc20", "pc21", "pc10",
                                                     "pc11"]
    one = (await client.get("/shop/api/catalog?category=c2&limit=60")).json()
    assert {i["category"] for i in one["items"]} == {"c2"} and len(one["items"]) == 4
    assert (await client.get("/shop/api/catalog?limit=61")).status_code == 422
    svg = await client.get("/shop/api/img/pc00.svg?category=c0")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content


async def test_admin_api_is_off_without_a_configured_key(client):
    r = await client.get("/v1/admin/models", headers={"X-API-Key": "anything"})
    assert r.status_code == 403 and "RECSYS_API_KEY" in r.json()["detail"]


async def test_admin_models_rollback_and_key(settings, redis_client, fitted):
    items, users, item_factors, user_factors, *_ = fitted
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", items, item_factors, users, user_factors)
    publish(redis_client, keys, "v2", items, item_factors, users, user_factors)
    redis_client.set(keys.model_manifest("v2"), orjson.dumps({
        **orjson.loads(redis_client.get(keys.model_manifest("v2"))),
        "metrics": {"ndcg@10": 0.31}, "leaderboard": [{"candidate": "als", "ndcg@10": 0.31}]}))
    async with running_app(with_overrides(settings, api_key=KEY)) as http:
        assert (await http.get("/v1/admin/models")).status_code == 401
        assert (await http.get("/v1/admin/models", headers={"X-API-Key": "wrong"})
                ).status_code == 401
        auth = {"X-API-Key": KEY}
        data = (await http.get("/v1/admin/models", headers=auth)).json()
        assert data["current"] == "v2"
        assert [(v["version"], v["role"]) for v in data["versions"]] == [
            ("v2", "current"), ("v1", "previous")]
        assert data["versions"][0]["metrics"] == {"ndcg@10": 0.31}
        assert data["versions"][0]["leaderboard"][0]["candidate"] == "als"
        r = await http.post("/v1/admin/models/rollback", headers=auth)
        assert r.json() == {"restored": "v1", "replaced": "v2"}
        assert redis_client.get(keys.current_model) == b"v1"
        again = await http.post("/v1/admin/models/rollback", headers=auth)
        assert again.status_code == 409 and "no previous" in again.json()["detail"]


async def test_admin_stream_progress_reads_the_groups_committed_offsets(settings):
    ensure_topics(settings)
    producer = Producer(settings.kafka_config())
    for n in range(6):
        producer.produce(settings.interactions_topic, key=b"u", value=b"{}", partition=0,
                         timestamp=1_700_000_000_000 + n * 1000)
    producer.flush(10)
    # The stream's group has processed and committed the first 2 records of partition 0.
    group = Consumer(settings.kafka_config(**{"group.id": settings.stream_app_id,
                                              "enable.auto.commit": False}))
    group.commit(offsets=[TopicPartition(settings.interactions_topic, 0, 2)], asynchronous=False)
    group.close()
    async with running_app(with_overrides(settings, api_key=KEY)) as http:
        data = (await http.get("/v1/admin/stream", headers={"X-API-Key": KEY})).json()
    assert data["group"] == settings.stream_app_id
    by_partition = {p["partition"]: p for p in data["partitions"]}
    assert len(by_partition) == settings.topic_partitions
    assert by_partition[0]["committed"] == 2 and by_partition[0]["end"] == 6
    assert by_partition[0]["lag"] == 4
    assert by_partition[0]["behind_ms"] == 4000  # record 1 at +1 s, record 5 at +5 s
    assert data["lag"] == 4 and data["behind_ms"] == 4000
    assert all(p["lag"] == 0 for n, p in by_partition.items() if n != 0)


