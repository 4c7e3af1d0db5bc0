"""HTTP ingest while the broker is paused (SIGSTOP on the real local broker process): the
event loop never waits on Kafka, reads stay fast, nothing answered 202 is lost, and past the
configured bounds the API answers 503 with Retry-After at once.

Each test runs its own broker (pausing the session's would stall every other test) and the
API as its own uvicorn process, over real HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from recsys.kafka import ensure_topics
from recsys.settings import Settings
from shell.harness import scrape, total
from shell.localstack import ManagedProcess, free_port, start_broker
from tests.serving.conftest import with_overrides
from tests.stream.conftest import settings_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ManagedProcess]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    proc = start_broker(workdir)
    yield proc
    os.kill(proc.pid, signal.SIGCONT)  # never leave it stopped for the teardown
    proc.stop()


@contextmanager
def paused(proc: ManagedProcess) -> Iterator[None]:
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


@contextmanager
def api_process(settings: Settings, logdir: Path) -> Iterator[str]:
    port = free_port()
    log = open(logdir / f"api-{port}.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                             "serving.main:app_from_env", "--host", "127.0.0.1",
                             "--port", str(port), "--no-access-log"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                (logdir / f"api-{port}.log").read_text()
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def own_settings(settings: Settings, broker: ManagedProcess, **changes) -> Settings:
    ours = with_overrides(settings, kafka_bootstrap_servers=f"127.0.0.1:{broker.port}",
                          **changes)
    ensure_topics(ours)
    return ours


def event(user: int) -> dict:
    return {"event_id": uuid.uuid4().hex, "user_id": f"u{user % 80}", "item_id": "i01",
            "event_type": "view", "timestamp": int(time.time() * 1000)}


def read_ids(settings: Settings, expected: set[str], timeout: float = 30.0) -> set[str]:
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"check-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "fetch.wait.max.ms": 20}))
    consumer.assign([TopicPartition(settings.interactions_topic, p, OFFSET_BEGINNING)
                     for p in range(settings.topic_partitions)])
    got: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while not expected <= got and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    got.add(orjson.loads(msg.value())["event_id"])
    finally:
        consumer.close()
    return got


def metric(base: str, name: str, **labels: str) -> float:
    return total(scrape(f"{base}/metrics"), name, **labels)


def test_a_broker_pause_keeps_reads_fast_and_loses_no_accepted_event(
        settings, broker, published, tmp_path):
    ours = own_settings(settings, broker)
    accepted: set[str] = set()
    statuses: list[int] = []
    latencies: list[float] = []
    with api_process(ours, tmp_path) as base:
        post, get = requests.Session(), requests.Session()
        stop_reads = False

        def reads() -> None:
            while not stop_reads:
                t0 = time.perf_counter()
                r = get.get(f"{base}/v1/users/u3/recommendations?k=5", timeout=10)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
                time.sleep(0.005)

        def writes(n_batches: int) -> None:
            for b in range(n_batches):
                batch = [event(b * 20 + n) for n in range(20)]
                r = post.post(f"{base}/v1/events", json=batch, timeout=10)
                statuses.append(r.status_code)
                if r.status_code == 202:
                    accepted.update(r.json()["event_ids"])

        with ThreadPoolExecutor(2) as pool:
            reader = pool.submit(reads)
            writes(20)  # broker up
            with paused(broker):
                pause_started = time.monotonic()
                writes(60)  # 1,200 events while the broker is stopped
                time.sleep(max(0.0, 3.0 - (time.monotonic() - pause_started)))
            writes(20)
            stop_reads = True
            reader.result()

        assert statuses == [202] * 100  # within the bounds: every POST taken, none waited
        got = read_ids(ours, accepted)
        assert accepted <= got, f"{len(accepted - got)} accepted events were lost"
        assert metric(base, "recsys_api_events_delivery_failed_total") == 0
    p99 = float(np.quantile(latencies, 0.99))
    # The reads went on through the pause; without a blocked loop they take milliseconds.
    assert len(latencies) > 50 and p99 < 0.5, f"GET p99 {p99 * 1000:.0f} ms during the pause"


def test_past_the_bounds_the_api_answers_503_with_retry_after(settings, broker, tmp_path):
    ours = own_settings(settings, broker, api_produce_queue_max=30, api_produce_stall_s=1.0,
                        api_retry_after_s=3)
    with api_process(ours, tmp_path) as base:
        accepted: set[str] = set()
        with paused(broker):
            r = requests.post(f"{base}/v1/events", json=[event(n) for n in range(20)])
            assert r.status_code == 202
            accepted.update(r.json()["event_ids"])
            # 20 wait; 20 more do not fit in 30: refused at once, none of them taken.
            t0 = time.perf_counter()
            r = requests.post(f"{base}/v1/events", json=[event(n) for n in range(20)])
            assert time.perf_counter() - t0 < 1.0
            assert r.status_code == 503 and r.headers["Retry-After"] == "3"
            assert "queue" in r.json()["detail"]
            time.sleep(1.5)  # the broker has acknowledged nothing for longer than the bound
            r = requests.post(f"{base}/v1/events", json=event(1))
            assert r.status_code == 503 and r.headers["Retry-After"] == "3"
            assert "acknowledged nothing" in r.json()["detail"]
            assert requests.get(f"{base}/healthz", timeout=2).status_code == 200
            ready = requests.get(f"{base}/readyz", timeout=2)
            assert ready.status_code == 200 and "kafka_stalled" in ready.json()["degraded"]
        assert metric(base, "recsys_api_events_refused_total", reason="queue_full") == 20
        assert metric(base, "recsys_api_events_refused_total", reason="broker_stalled") == 1
        assert read_ids(ours, accepted) >= accepted
        # Delivered: the queue is empty again and POSTs are taken.
        deadline = time.monotonic() + 10
        while True:
            r = requests.post(f"{base}/v1/events", json=event(2))
            if r.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 202


def test_events_kafka_never_acknowledges_are_counted_as_lost(settings, broker, tmp_path):
    ours = own_settings(settings, broker, api_produce_delivery_timeout_s=1.0,
                        api_produce_stall_s=60.0)
    with api_process(ours, tmp_path) as base:
        with paused(broker):
            r = requests.post(f"{base}/v1/events", json=[event(n) for n in range(5)])
            assert r.status_code == 202
            deadline = time.monotonic() + 15
            while (metric(base, "recsys_api_events_delivery_failed_total") < 5
                   and time.monotonic() < deadline):
                time.sleep(0.3)
        assert metric(base, "recsys_api_events_delivery_failed_total") == 5
