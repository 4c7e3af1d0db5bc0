"""Ingest while the broker is paused: GET latency and lost events, over real HTTP.

    python -m bench.ingest_pause_bench [--events 60000] [--pause 4] [--batch 20]

The embedded local stack (broker + Redis) and the API in its own uvicorn process. Writers
POST `--events` events in batches of `--batch` over keep-alive connections; a reader GETs
`/v1/users/{user}/recommendations` at a steady rate the whole time. A third of the way in,
the broker process is stopped (SIGSTOP) for `--pause` seconds, then resumed. At the end the
interactions topic is read back and every event id answered 202 is looked for.

Prints: POSTs by status, events accepted / refused (503 + Retry-After) / lost, GET latency
(p50, p99, max) during the pause and over the whole run, and the POST p99.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests

from shell.harness import parse_metrics, total

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
GET_INTERVAL_S = 0.01


def _quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    arr = np.asarray(values) * 1000
    return (f"p50 {np.quantile(arr, 0.5):.1f} ms, p99 {np.quantile(arr, 0.99):.1f} ms, "
            f"max {arr.max():.1f} ms ({len(arr)} requests)")


def _start_api(env: dict[str, str], port: int, logfile: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.main:app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        cwd=REPO, env=env, stdout=logfile.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the API did not start; see {logfile}")


def _read_back(settings, wanted: set[str], timeout: float = 60.0) -> set[str]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(settings.kafka_config(**{"group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                                 "enable.auto.commit": False}))
    consumer.assign([TopicPartition(settings.interactions_topic, p, OFFSET_BEGINNING)
                     for p in range(settings.topic_partitions)])
    got: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while not wanted <= got and time.monotonic() < deadline:
            for msg in consumer.consume(5000, 0.5):
                if msg.error() is None:
                    got.add(orjson.loads(msg.value())["event_id"])
    finally:
        consumer.close()
    return got


def _quantile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.quantile(np.asarray(values) * 1000, q)), 1) if values else None


def measure(events: int = 60_000, pause: float = 4.0, batch: int = 20, writers: int = 4,
            extra_env: dict[str, str] | None = None, read_timeout: float = 60.0
            ) -> dict[str, Any]:
    """One run on a fresh local stack; returns the figures (`lost`: event ids answered 202
    that are not in the interactions topic afterwards). `extra_env` reaches the API."""
    from recsys.kafka import ensure_topics
    from recsys.settings import load_settings
    from shell.localstack import LocalStack, free_port

    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        settings = load_settings(kafka_bootstrap_servers=stack.bootstrap_servers,
                                 redis_url=stack.redis_url, redis_namespace="ingestbench")
        ensure_topics(settings)
        port = free_port()
        env = {**os.environ, **stack.env(), "RECSYS_REDIS_NAMESPACE": "ingestbench",
               "PYTHONPATH": str(REPO), **(extra_env or {})}
        api = _start_api(env, port, Path(tmp) / "api.log")
        base = f"http://127.0.0.1:{port}"
        broker_pid = stack._get("broker").pid
        try:
            n_batches = events // batch
            next_batch = iter(range(n_batches))
            lock = threading.Lock()
            statuses: Counter[int] = Counter()
            accepted: set[str] = set()
            post_latency: list[float] = []
            gets: list[tuple[float, float]] = []  # (start, seconds)
            pause_window = [float("inf"), float("inf")]
            done = threading.Event()
            posted = [0]

            def writer() -> None:
                session = requests.Session()
                while True:
                    with lock:
                        b = next(next_batch, None)
                    if b is None:
                        return
                    body = [{"event_id": uuid.uuid4().hex, "user_id": f"u{(b * 7 + n) % 5000}",
                             "item_id": f"i{n % 300}", "event_type": "view",
                             "timestamp": int(time.time() * 1000)} for n in range(batch)]
                    t0 = time.perf_counter()
                    r = session.post(f"{base}/v1/events", data=orjson.dumps(body),
                                     headers={"Content-Type": "application/json"}, timeout=30)
                    with lock:
                        post_latency.append(time.perf_counter() - t0)
                        statuses[r.status_code] += 1
                        posted[0] += len(body)
                        if r.status_code == 202:
                            accepted.update(r.json()["event_ids"])

            def reader() -> None:
                session = requests.Session()
                n = 0
                while not done.is_set():
                    t0 = time.perf_counter()
                    session.get(f"{base}/v1/users/u{n % 5000}/recommendations?k=10", timeout=30)
                    gets.append((t0, time.perf_counter() - t0))
                    n += 1
                    time.sleep(GET_INTERVAL_S)

            threads = [threading.Thread(target=writer) for _ in range(writers)]
            read_thread = threading.Thread(target=reader)
            read_thread.start()
            started = time.perf_counter()
            for t in threads:
                t.start()
            while posted[0] < events / 3 and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            os.kill(broker_pid, signal.SIGSTOP)
            pause_window[0] = time.perf_counter()
            time.sleep(pause)
            os.kill(broker_pid, signal.SIGCONT)
            pause_window[1] = time.perf_counter()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            done.set()
            read_thread.join()
            got = _read_back(settings, accepted, read_timeout)
            metrics = parse_metrics(requests.get(f"{base}/metrics", timeout=5).text)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
            api.terminate()
            api.wait(10)

    during = [s for t0, s in gets if pause_window[0] <= t0 <= pause_window[1]]
    return {
        "events_posted": n_batches * batch, "posts": n_batches, "seconds": round(elapsed, 1),
        "pause_s": pause, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted": len(accepted), "refused_503": batch * statuses.get(503, 0),
        "lost": len(accepted - got),
        "delivery_failures_counted": total(metrics, "recsys_api_events_delivery_failed_total"),
        "get_during_pause": during, "get_all": [s for _, s in gets],
        "get_p99_during_pause_ms": _quantile_ms(during, 0.99),
        "get_p99_ms": _quantile_ms([s for _, s in gets], 0.99),
        "post_latency": post_latency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--pause", type=float, default=4.0, help="broker pause, seconds")
    parser.add_argument("--batch", type=int, default=20, help="events per POST")
    parser.add_argument("--writers", type=int, default=4, help="concurrent POST connections")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from recsys.blas import set_blas_threads
    from recsys.settings import get_settings

    set_blas_threads(get_settings().blas_threads)  # this process and the API it starts
    r = measure(args.events, args.pause, args.batch, args.writers)
    log.info("posted %d events in %d POSTs over %.1f s (broker paused %.1f s)",
             r["events_posted"], r["posts"], r["seconds"], args.pause)
    log.info("POST statuses: %s", r["statuses"])
    log.info("events accepted (202): %d; refused (503 + Retry-After): %d; lost: %d",
             r["accepted"], r["refused_503"], r["lost"])
    log.info("GET during the pause: %s", _quantiles(r["get_during_pause"]))
    log.info("GET over the run:     %s", _quantiles(r["get_all"]))
    log.info("POST over the run:    %s", _quantiles(r["post_latency"]))
    return 0 if not r["lost"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
