"""Invariant 6: with Redis gone the API still answers every read from memory (with a source
that says so), readiness says 503, and nothing returns a 500."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis as redis_lib

from recsys.keys import Keys
from shell.localstack import free_port, start_redis
from tests.serving.conftest import publish, running_app, with_overrides

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_redis_lost_after_start_serves_in_memory_fallbacks(fitted, settings, tmp_path):
    items, users, item_factors, user_factors, _, _ = fitted
    server = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{server.port}/0"
    own = with_overrides(settings, redis_url=url, api_redis_retry_after_s=0.2)
    keys = Keys(own.redis_namespace)
    direct = redis_lib.Redis.from_url(url)
    publish(direct, keys, "v1", items, item_factors, users, user_factors,
            popularity={"i05": 30.0, "i17": 20.0, "i22": 10.0})
    try:
        async with running_app(own) as client:
            r = await client.get("/v1/users/u1/recommendations", params={"k": 3})
            assert r.json()["source"] == "personalized"
            server.stop()  # Redis is gone; its port is closed

            # Still in rotation: fallbacks answer. It says so, and why.
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["degraded"] == ["redis_unavailable"]
            assert ready.json()["redis"] is False and ready.json()["model_version"] == "v1"
            started = time.perf_counter()
            r = await client.get("/v1/users/u1/recommendations", params={"k": 3})
            assert time.perf_counter() - started < 2.0
            body = r.json()
            assert r.status_code == 200 and body["source"] == "fallback:redis_unavailable"
            assert [i["item_id"] for i in body["items"]] == ["i05", "i17", "i22"]
            assert body["fallback_sources"] == ["popular:alltime"]
            assert body["model_version"] == "v1"
            # Reads that need only the in-memory model still answer from it.
            r = await client.get("/v1/items/i00/similar", params={"k": 4})
            assert r.status_code == 200 and r.json()["source"] == "similar"
            assert len(r.json()["items"]) == 4
            r = await client.post("/v1/recommendations/anonymous",
                                  json={"items": [{"item_id": "i10"}]})
            assert r.status_code == 200 and r.json()["source"] == "anonymous"
            r = await client.get("/v1/popular", params={"k": 2})
            assert r.json()["source"] == "fallback:redis_unavailable"
            assert [i["item_id"] for i in r.json()["items"]] == ["i05", "i17"]
            r = await client.get("/api/recommendations", params={"user_id": "u1"})
            assert r.status_code == 200 and r.json()["source"] == "fallback:redis_unavailable"
            # Writes cannot be done: a clear 503, not a 500.
            r = await client.put("/v1/items/i00", json={"name": "x"})
            assert r.status_code == 503 and "Redis" in r.json()["detail"]
            assert (await client.get("/v1/items/i00")).status_code == 503
            text = (await client.get("/metrics")).text
            assert 'recsys_api_fallbacks_total{reason="redis_unavailable"}' in text
            assert "recsys_api_redis_errors_total" in text
            assert 'status="500"' not in text

            # Redis comes back on the same port: personalised answers resume by themselves.
            server = start_redis(tmp_path, port=server.port)
            publish(redis_lib.Redis.from_url(url), keys, "v1", items, item_factors, users,
                    user_factors)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                body = (await client.get("/v1/users/u1/recommendations")).json()
                if body["source"] == "personalized":
                    break
                await asyncio.sleep(0.1)
            assert body["source"] == "personalized"
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            assert ready.json()["degraded"] == []
    finally:
        server.stop()


async def test_start_with_redis_unreachable_answers_without_500(settings):
    closed = with_overrides(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.perf_counter()
    async with running_app(closed) as client:
        assert time.perf_counter() - started < 5.0
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["redis"] is False
        assert ready.json()["degraded"] == ["redis_unavailable", "no_model"]
        for path in ["/v1/users/u1/recommendations", "/v1/popular",
                     "/api/recommendations?user_id=u1", "/v1/items/i1/similar"]:
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["source"] == "fallback:redis_unavailable"
            body = r.json()
            # Nothing in memory yet: an empty list, but an answer.
            assert body.get("items", body.get("recommendations")) == []
        r = await client.post("/v1/recommendations/anonymous", json={"items": [{"item_id": "a"}]})
        assert r.status_code == 200 and r.json()["source"] == "fallback:redis_unavailable"


async def test_an_uncached_placement_while_redis_is_down_is_503_not_unknown(
        fitted, settings, tmp_path):
    """422 "unknown placement" only when Redis answered that it has none: while Redis is
    stopped or paused the name may exist (written through another replica), so 503; a
    placement this process has cached still applies."""
    items, users, item_factors, user_factors, _, _ = fitted
    server = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{server.port}/0"
    own = with_overrides(settings, redis_url=url, api_redis_retry_after_s=0.2,
                         api_redis_timeout_s=0.3)
    publish(redis_lib.Redis.from_url(url), Keys(own.redis_namespace), "v1", items,
            item_factors, users, user_factors, popularity={"i05": 3.0, "i17": 2.0})
    unknown = [
        ("GET", "/v1/users/u1/recommendations", {"params": {"placement": "elsewhere"}}),
        ("POST", "/v1/users/u1/recommendations", {"json": {"placement": "elsewhere"}}),
        ("POST", "/v1/recommendations/batch",
         {"json": {"user_ids": ["u1"], "placement": "elsewhere"}}),
        ("GET", "/v1/popular", {"params": {"placement": "elsewhere"}}),
    ]
    try:
        async with running_app(own) as client:
            r = await client.put("/v1/placements/home", json={"max_per": 1})
            assert r.status_code == 200, r.text
            for method, path, kwargs in unknown:  # Redis answers: it has none
                r = await client.request(method, path, **kwargs)
                assert r.status_code == 422 and r.json()["detail"].startswith("placement:")

            # ... and the spec says so on every route that takes a placement.
            spec = (await client.get("/openapi.json")).json()["paths"]
            for method, path in [("get", "/v1/users/{user_id}/recommendations"),
                                 ("post", "/v1/users/{user_id}/recommendations"),
                                 ("post", "/v1/recommendations/batch"),
                                 ("post", "/v1/recommendations/anonymous"),
                                 ("get", "/v1/items/{item_id}/similar"),
                                 ("get", "/v1/popular")]:
                assert "503" in spec[path][method]["responses"], (method, path)

            for outage in ("paused", "stopped"):
                if outage == "paused":
                    os.kill(server.pid, signal.SIGSTOP)
                else:
                    server.stop()
                try:
                    for method, path, kwargs in unknown:
                        r = await client.request(method, path, **kwargs)
                        assert r.status_code == 503, (outage, path, r.text)
                        assert r.json()["detail"].startswith("placement:")
                        assert "Redis" in r.json()["detail"]
                    # The cached placement still applies (to a fallback list).
                    r = await client.get("/v1/users/u1/recommendations",
                                         params={"placement": "home", "k": 2})
                    assert r.status_code == 200 and r.json()["placement"] == "home"
                finally:
                    if outage == "paused":
                        os.kill(server.pid, signal.SIGCONT)
            server = start_redis(tmp_path, port=server.port)
            await asyncio.sleep(0.3)  # past api_redis_retry_after_s
            r = await client.get("/v1/users/u1/recommendations",
                                 params={"placement": "elsewhere"})
            assert r.status_code == 422 and "no placement named" in r.json()["detail"]
            assert 'status="500"' not in (await client.get("/metrics")).text
    finally:
        server.stop()
