"""Helpers of the stream tests: a model fitted on clustered data, publishing it, running real
worker processes (`recsys stream`) and producing events with known partitions."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import SecretStr
from scipy.sparse import csr_matrix

from recsys.confidence import confidence, weight_of
from recsys.events import Event
from recsys.foldin import fold_in
from recsys.keys import Keys
from recsys.modelstore import activate_version, stage_model_version
from recsys.settings import Settings
from shell.harness import RoleProcess, Samples
from shell.localstack import free_port

REPO = Path(__file__).resolve().parents[2]
N_CLUSTERS = 6
ITEMS_PER_CLUSTER = 40
FACTORS = 16
REGULARIZATION = 0.1
ALPHA = 2.0


@dataclass
class Clustered:
    """Items in clusters; users who each stay inside one cluster; ALS fitted on them."""

    item_ids: list[str]
    cluster: dict[str, int]
    factors: np.ndarray  # float32 (n_items, k)
    als: AlternatingLeastSquares

    def items_of(self, c: int) -> list[str]:
        return [i for i in self.item_ids if self.cluster[i] == c]


def fit_clustered(seed: int) -> Clustered:
    rng = np.random.default_rng(seed)
    item_ids = [f"c{c}-i{j}" for c in range(N_CLUSTERS) for j in range(ITEMS_PER_CLUSTER)]
    cluster = {item: i // ITEMS_PER_CLUSTER for i, item in enumerate(item_ids)}
    rows, cols, vals = [], [], []
    for user in range(600):
        c = user % N_CLUSTERS
        picks = rng.choice(ITEMS_PER_CLUSTER, size=rng.integers(8, 16), replace=False)
        for p in picks:
            rows.append(user)
            cols.append(c * ITEMS_PER_CLUSTER + int(p))
            vals.append(float(confidence(rng.choice([1.0, 1.0, 4.0]), ALPHA)))
        noise = int(rng.integers(len(item_ids)))  # a little cross-cluster noise
        rows.append(user)
        cols.append(noise)
        vals.append(float(confidence(1.0, ALPHA)))
    matrix = csr_matrix((vals, (rows, cols)), shape=(600, len(item_ids)), dtype=np.float32)
    matrix.sum_duplicates()
    als = AlternatingLeastSquares(factors=FACTORS, regularization=REGULARIZATION, iterations=12,
                                  alpha=1.0, use_cg=False, random_state=seed)
    als.fit(matrix, show_progress=False)
    return Clustered(item_ids, cluster, np.asarray(als.item_factors, dtype=np.float32), als)


@pytest.fixture(scope="session")
def clustered() -> Clustered:
    return fit_clustered(seed=1)


@pytest.fixture(scope="session")
def clustered_v2() -> Clustered:
    """Another fit of the same catalogue (different seed): the next model version."""
    return fit_clustered(seed=2)


def manifest(version: str, model: Clustered, snapshot_ms: int = 0,
             offsets: dict[str, int] | None = None) -> dict[str, Any]:
    return {"version": version, "factors": FACTORS, "regularization": REGULARIZATION,
            "alpha": ALPHA, "iterations": 12, "n_items": len(model.item_ids),
            "snapshot": {"latest_event_ms": snapshot_ms, "offsets": offsets or {}}}


def publish(redis_client: Any, keys: Keys, version: str, model: Clustered, *,
            snapshot_ms: int = 0, user_ids: list[str] | None = None,
            user_factors: np.ndarray | None = None) -> None:
    stage_model_version(redis_client, keys, version, model.item_ids, model.factors,
                        manifest(version, model, snapshot_ms), user_ids=user_ids,
                        user_factors=user_factors)
    activate_version(redis_client, keys, version)


def expected_vector(events: list[Event], model: Clustered,
                    weights: dict[str, float]) -> np.ndarray | None:
    """From-scratch fold-in of a user's full deduplicated history (None: no known item)."""
    per_item: dict[str, float] = {}
    seen_ids: set[str] = set()
    for event in events:
        if event.event_id in seen_ids:
            continue
        seen_ids.add(event.event_id)
        per_item[event.item_id] = per_item.get(event.item_id, 0.0) + weight_of(event, weights)
    index = {item: row for row, item in enumerate(model.item_ids)}
    known = [(index[i], w) for i, w in per_item.items() if i in index]
    if not known:
        return None
    rows = np.array([r for r, _ in known])
    conf = np.asarray(confidence(np.array([w for _, w in known]), ALPHA))
    return fold_in(model.factors, model.factors.T.astype(np.float64) @ model.factors,
                   REGULARIZATION, rows, conf)


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included (urllib raises them)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


# --- producing ---------------------------------------------------------------------------
def produce(settings: Settings, events: list[Event], raw: list[tuple[bytes, bytes]] = ()
            ) -> list[int]:
    """Send events (then raw records) keyed by user; returns each event's partition."""
    producer = Producer(settings.kafka_config(**{"linger.ms": 2}))
    partitions: list[int] = [-1] * len(events)
    failed: list[str] = []

    def report(index: int):
        def on_delivery(err, msg):
            if err is not None:
                failed.append(str(err))
            elif index >= 0:
                partitions[index] = msg.partition()
        return on_delivery

    for n, event in enumerate(events):
        producer.produce(settings.interactions_topic, key=event.key, value=event.to_json(),
                         on_delivery=report(n))
        producer.poll(0)
    for key, value in raw:
        producer.produce(settings.interactions_topic, key=key, value=value,
                         on_delivery=report(-1))
    assert producer.flush(30) == 0 and not failed, failed
    return partitions


# --- worker processes --------------------------------------------------------------------
def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    values = {**settings.model_dump(), **overrides}
    for name, value in values.items():
        if value is None or isinstance(value, SecretStr):
            continue
        if isinstance(value, dict):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | tuple):  # list settings take comma-separated values
            text = ",".join(map(str, value))
        else:
            text = str(value)
        env[f"RECSYS_{name.upper()}"] = text
    env["KAFKA_BOOTSTRAP_SERVERS"] = env["RECSYS_KAFKA_BOOTSTRAP_SERVERS"]
    env["REDIS_URL"] = env["RECSYS_REDIS_URL"]
    return env


class WorkerProcess(RoleProcess):
    """One `recsys stream` process with its own metrics port and log file."""

    def __init__(self, settings: Settings, logdir: Path, name: str, **overrides: Any) -> None:
        port = free_port()
        env = {**os.environ,
               **settings_env(settings, stream_web_port=port, stream_worker_id=name,
                              stream_session_timeout_ms=6000, **overrides)}
        super().__init__(name, ["stream"], env, logdir, port=port, cwd=REPO)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def metrics(self, timeout: float = 2.0) -> Samples:
        return super().metrics(timeout)

    def stop(self, timeout: float = 20.0, wait: bool = True) -> None:
        super().stop(timeout, wait)

    def wait_assigned(self, timeout: float = 40.0) -> int:
        """Wait until the worker owns partitions and has recovered its table."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log_tail()}")
            try:
                owned = self.metric("recsys_stream_assigned_partitions")
                if owned > 0:
                    return int(owned)
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} got no partitions in {timeout}s:\n"
                             f"{self.log_tail()}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Collects the worker processes a test starts; stops them all afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:  # all at once: a group losing members one by one rebalances
        worker.stop(wait=False)
    for worker in started:
        worker.stop()


def wait_until(check, timeout: float, interval: float = 0.05, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
