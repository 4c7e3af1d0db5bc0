"""Fixtures of the Redis Cluster tests: one real local cluster for the session (three
`redis-server` masters in cluster mode, joined with `redis-cli --cluster create`, on free
ports), or the cluster named by RECSYS_TEST_REDIS_CLUSTER_URL; each test gets its own
namespace (the `settings` fixture) switched to cluster mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from recsys.keys import Keys
from recsys.redis_client import redis_client
from recsys.settings import Settings
from shell.localstack import LocalStack
from tests.stream.conftest import clustered  # noqa: F401 - the stream tests' fitted model

# Few buckets: enough to land on every master, few enough to list in an assertion message.
TEST_BUCKETS = 16


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    url = os.environ.get("RECSYS_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    with LocalStack(with_broker=False, redis_cluster=True) as stack:
        yield stack.redis_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster_url: str) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "redis_url": redis_cluster_url,
                                    "redis_cluster": True,
                                    "redis_user_buckets": TEST_BUCKETS})


@pytest.fixture
def cluster_keys(cluster_settings: Settings) -> Keys:
    return Keys.for_settings(cluster_settings)


@pytest.fixture
def cluster_client(cluster_settings: Settings) -> Iterator[Any]:
    client = redis_client(cluster_settings, socket_timeout=10)
    yield client
    client.close()


def nodes_holding(client: Any, keys: list[str]) -> set[str]:
    """The masters that hold `keys` (by slot)."""
    return {client.get_node_from_key(key).name for key in keys}
