"""Schema-driven fuzzing of the whole OpenAPI spec (schemathesis): whatever it sends, the
API never answers 5xx. Runs against a real uvicorn server, Redis and broker, with a fitted
model loaded, so the model paths (not just validation) are exercised."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from recsys.kafka import ensure_topics
from recsys.keys import Keys
from recsys.settings import load_settings
from serving.main import create_app
from shell.localstack import free_port
from tests.serving.conftest import publish

pytestmark = pytest.mark.integration

# The spec is the app's own, built without connecting to anything.
schema = schemathesis.openapi.from_dict(create_app(load_settings()).openapi())


@pytest.fixture(scope="module")
def live_url(kafka_bootstrap_servers: str, redis_url: str, fitted) -> Iterator[str]:
    name = f"fz{uuid.uuid4().hex[:8]}"
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap_servers,
                             redis_url=redis_url, redis_namespace=name,
                             interactions_topic=f"{name}.interactions",
                             dead_letter_topic=f"{name}.dlq")
    ensure_topics(settings)
    items, users, item_factors, user_factors, seen, _ = fitted
    client = redis_lib.Redis.from_url(redis_url)
    keys = Keys(name)
    publish(client, keys, "v1", items, item_factors, users, user_factors,
            similar={items[0]: [(items[1], 0.9)]}, popularity={i: 1.0 for i in items})
    client.zadd(keys.popularity("24h"), {items[3]: 5.0, items[4]: 2.0})
    for user, user_items in seen.items():
        client.zadd(keys.seen(user), {item: n for n, item in enumerate(user_items)})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False, loop="asyncio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    client.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@schema.parametrize()
@hypothesis_settings(max_examples=50, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx(case, live_url, http):
    response = case.call(base_url=live_url, session=http, timeout=10)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}")


def test_the_fuzz_run_reached_the_app_with_good_and_bad_input(live_url, http):
    """Runs after the fuzz cases (same module): the server's own metrics show what it saw."""
    text = http.get(f"{live_url}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("recsys_api_request_duration_seconds_count{"):
            status = line.split('status="')[1].split('"')[0]
            counts[status[0]] = counts.get(status[0], 0.0) + float(line.rsplit(" ", 1)[1])
    assert counts.get("2", 0) >= 50 and counts.get("4", 0) >= 50, counts
    assert "5" not in counts, counts
