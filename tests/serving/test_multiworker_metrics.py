"""`recsys serve --workers 2` for real: /metrics reports every worker's requests, whichever
worker answers the scrape (prometheus-client multiprocess mode), and the CLI's temporary
metrics directory is gone after shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from recsys.settings import Settings
from shell.harness import Samples, parse_metrics
from shell.localstack import free_port

pytestmark = pytest.mark.integration

ROUTE = "/v1/users/{user_id}/recommendations"
N_REQUESTS = 60
N_SCRAPES = 12


def _get(url: str, **kwargs) -> requests.Response:
    # A new connection every time: the kernel hands each one to either worker.
    return requests.get(url, headers={"Connection": "close"}, timeout=10, **kwargs)


def _scrape(base: str) -> Samples:
    response = _get(f"{base}/metrics")
    assert response.status_code == 200
    return parse_metrics(response.text)


def _per_worker(metrics_dir: Path, scratch: Path) -> dict[str, Samples]:
    """Each worker's own histograms, read from a copy of its file alone (pid -> samples)."""
    out = {}
    for path in metrics_dir.glob("histogram_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        one = scratch / pid
        shutil.rmtree(one, ignore_errors=True)
        one.mkdir(parents=True)
        shutil.copy(path, one / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(one))
        out[pid] = parse_metrics(generate_latest(registry).decode())
    return out


def _route_count(samples: Samples, route: str, status: str | None = None) -> float:
    return sum(value for (name, labels), value in samples.items()
               if name == "recsys_api_request_duration_seconds_count"
               and dict(labels).get("route") == route
               and status in (None, dict(labels).get("status")))


@contextmanager
def recsys_serve_two_workers(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`recsys serve --workers 2` on a free port, against the test's Redis and namespace;
    stopped with SIGTERM. Yields the base URL and the TMPDIR given to it."""
    port = free_port()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "RECSYS_REDIS_NAMESPACE": settings.redis_namespace,
        "RECSYS_INTERACTIONS_TOPIC": settings.interactions_topic,
        "RECSYS_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "TMPDIR": str(tmpdir),  # where the CLI's metrics directory goes
    })
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "serve", "--workers", "2", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        # Both workers ready: each has answered /readyz with 200 (read from its own file in
        # the CLI's metrics directory; fresh connections land on either worker).
        deadline = time.monotonic() + 60
        ready: set[str] = set()
        while len(ready) < 2:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (
                f"workers ready: {ready}; {list(tmpdir.iterdir())}\n"
                + (tmp_path / "serve.log").read_text())
            try:
                _get(f"{base}/readyz")
            except requests.ConnectionError:
                time.sleep(0.1)
                continue
            for metrics_dir in tmpdir.glob("recsys-metrics-*"):
                ready |= {pid for pid, samples in
                          _per_worker(metrics_dir, tmp_path / "scratch").items()
                          if _route_count(samples, "/readyz", "200") > 0}
        yield base, tmpdir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


def test_metrics_are_the_sum_over_workers_on_every_scrape(settings, published, tmp_path):
    users = published.user_ids
    with recsys_serve_two_workers(settings, tmp_path) as (base, tmpdir):
        # The CLI made a fresh directory under TMPDIR for the workers' metric files.
        dirs = list(tmpdir.glob("recsys-metrics-*"))
        assert len(dirs) == 1, dirs

        for n in range(N_REQUESTS):
            response = _get(f"{base}/v1/users/{users[n % len(users)]}/recommendations",
                            params={"k": 5})
            assert response.status_code == 200, response.text
        scrapes = [_scrape(base) for _ in range(N_SCRAPES)]
        # Both workers served some of them (else this test would prove nothing).
        per_worker = {pid: _route_count(samples, ROUTE)
                      for pid, samples in _per_worker(dirs[0], tmp_path / "scratch").items()}
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        assert sum(per_worker.values()) == N_REQUESTS, per_worker

    counts = [_route_count(s, ROUTE) for s in scrapes]
    assert counts == [N_REQUESTS] * N_SCRAPES, counts

    # Buckets and sums of the route agree between scrapes, whichever worker answered.
    # (Only that route: /readyz and /metrics are counted as they are called.)
    def of_route(samples: dict) -> dict:
        return {key: value for key, value in samples.items() if ("route", ROUTE) in key[1]}

    assert all(of_route(s) == of_route(scrapes[0]) for s in scrapes[1:])

    # The served version, over the live workers (multiprocess_mode="livemax"): v1 only.
    for s in scrapes:
        versions = {dict(labels)["version"]: value for (name, labels), value in s.items()
                    if name == "recsys_api_model_version_info"}
        assert versions == {published.version: 1.0}, versions

    # Shutdown removed the temporary directory.
    assert list(tmpdir.glob("recsys-metrics-*")) == []
