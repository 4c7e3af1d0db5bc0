"""Serving benchmark: personalised recommendations over HTTP, 50,000 items x 64 factors, k=64.

    python -m bench.serving_bench [--quick] [--profile FILE]

Three processes, as in production: the API (`recsys serve`, uvicorn) in its own process
against the embedded local stack's Redis (and broker); the load generator in another process
(asyncio, keep-alive HTTP/1.1 connections, a minimal client so that the client's own cost
stays small); this process sets up the data and measures the baselines.

Measured in the same run:
- fixed rate (300 requests/s, open loop): latency from each request's *scheduled* send time
  (so a stall is not hidden by coordinated omission), p50/p99, and the rate achieved;
- max throughput (closed loop, 16 connections): requests/s, p50/p99;
- baselines: a raw Redis read (HGET) of a user vector from Python (synchronous redis-py), and
  `GET /healthz` at the same fixed rate (the HTTP framework + client floor);
- CPU time per request: the API process's (personalised and /healthz phases), the load
  generator's, and the app's own in this process without HTTP (whole ASGI app, recommender
  alone, /healthz), which moves far less with the machine's load than latencies do;
- the API process's resident memory with 50,000 and with 500,000 items loaded, and its own
  factor load time (from its /metrics);
- requests per scoring pass at the fixed rate and at max throughput (the API scores
  concurrent requests in one pass over the factors: serving/score_batching.py);
- the hybrid path (`--hybrid` runs only this): the same catalogue published once without
  and once with a content model (categories, brands, price bands; 32-dimensional
  embeddings, blend 0.5), one API process per version, alternating fixed-rate phases at
  300 req/s in the same run: p50/p99 of each and the ratio hybrid / plain;
- impressions on vs off (`--impressions` runs only this): the in-process app's CPU per
  personalised request with the impression record queued on the broker and without,
  alternating rounds in the same app (process CPU time, so the producer's own threads, its
  compression and its network writes count).
- with rules (`--rules-only` runs only this): the personalised route with a stored placement
  (boosts by brand, margin and new items, at most 3 per category, MMR diversity 0.3) against
  the plain route, alternating fixed-rate phases in one API process over the same catalogue:
  p50/p99 of each and the same-run p99 ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from shell.harness import RoleProcess

log = logging.getLogger(__name__)

N_ITEMS = 50_000
N_ITEMS_LARGE = 500_000
# The approximate-search phase (recsys/ann.py): a clustered synthetic catalogue of this size.
N_ITEMS_ANN = 1_000_000
N_ITEMS_ANN_QUICK = 200_000
ANN_USERS = 2_000
ANN_RECALL_USERS = 300
FACTORS = 64
K = 64
RATE = 300.0
MAX_CONCURRENCY = 16
SEEN_PER_USER = 20
SLOW_S = 0.010  # the target: slower requests are reported with when they were due
NAMESPACE = "bench"


# --- load generator (runs in its own process) -----------------------------------------------
class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, host: str, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body


async def _open(host: str, port: int, n: int) -> asyncio.Queue[_Conn]:
    pool: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(n):
        pool.put_nowait(_Conn(*await asyncio.open_connection(host, port)))
    return pool


def _ok(status: int, body: bytes, expect: bytes | None) -> bool:
    return status == 200 and (expect is None or expect in body)


async def _fixed_rate(host: str, port: int, paths: list[str], rate: float, duration: float,
                      expect: bytes | None) -> dict[str, Any]:
    pool = await _open(host, port, 32)
    latencies: list[float] = []
    slow: list[tuple[float, float]] = []  # (scheduled offset s, latency s) of those > 10 ms
    failures = 0

    async def one(scheduled: float, path: str) -> None:
        nonlocal failures
        conn = await pool.get()
        try:
            status, body = await conn.get(host, path)
        finally:
            pool.put_nowait(conn)
        latency = time.perf_counter() - scheduled
        latencies.append(latency)
        if latency > SLOW_S:
            slow.append((scheduled - start, latency))
        if not _ok(status, body, expect):
            failures += 1

    # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    tasks = []
    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(scheduled, paths[n % len(paths)])))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {"latencies": latencies, "failures": failures, "achieved_rps": total / elapsed,
            "slow": sorted(slow), "started_at": time.time() - elapsed}


async def _closed_loop(host: str, port: int, paths: list[str], concurrency: int,
                       duration: float, expect: bytes | None) -> dict[str, Any]:
    pool = await _open(host, port, concurrency)
    latencies: list[float] = []
    failures = 0
    end = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        nonlocal failures
        conn = await pool.get()
        n = offset
        while time.perf_counter() < end:
            sent = time.perf_counter()
            status, body = await conn.get(host, paths[n % len(paths)])
            latencies.append(time.perf_counter() - sent)
            if not _ok(status, body, expect):
                failures += 1
            n += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"latencies": latencies, "failures": failures,
            "achieved_rps": len(latencies) / (time.perf_counter() - start)}


def _loadgen(plan: dict[str, Any], out: Any) -> None:
    """Entry point of the load-generator process: runs the phases in `plan`, sends results."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run

    async def main() -> dict[str, Any]:
        host, port = plan["host"], plan["port"]
        results = {}
        for phase in plan["phases"]:
            cpu_before = time.process_time()
            if phase["kind"] == "fixed":
                results[phase["name"]] = await _fixed_rate(
                    host, port, phase["paths"], phase["rate"], phase["duration"],
                    phase.get("expect"))
            else:
                results[phase["name"]] = await _closed_loop(
                    host, port, phase["paths"], phase["concurrency"], phase["duration"],
                    phase.get("expect"))
            # The generator shares the machine's cores with the API: its own cost is part
            # of the picture.
            done = results[phase["name"]]
            done["client_cpu_ms_per_request"] = (
                (time.process_time() - cpu_before) * 1000 / max(1, len(done["latencies"])))
        return results

    out.put(runner(main()))


def _run_load(plan: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_loadgen, args=(plan, queue), daemon=True)
    proc.start()
    timeout = sum(p["duration"] for p in plan["phases"]) + 60
    try:
        return queue.get(timeout=timeout)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# --- set-up and measurements (this process) -------------------------------------------------
def _stalls(slow: list[tuple[float, float]], gap_s: float = 0.1) -> list[dict[str, float]]:
    """Group the slow requests into episodes (due within `gap_s` of each other): one long
    stall (the process descheduled, a pause) reads very differently from uniform slowness."""
    episodes: list[dict[str, float]] = []
    for due, latency in slow:
        if episodes and due - episodes[-1]["last_due_s"] <= gap_s:
            ep = episodes[-1]
            ep["last_due_s"], ep["requests"] = due, ep["requests"] + 1
            ep["worst_ms"] = max(ep["worst_ms"], latency * 1000)
        else:
            episodes.append({"first_due_s": due, "last_due_s": due, "requests": 1,
                             "worst_ms": latency * 1000})
    return sorted(episodes, key=lambda e: -e["requests"])


def _percentiles(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _publish(client: Any, keys: Any, version: str, n_items: int, n_users: int,
             seed: int) -> list[str]:
    from recsys.modelstore import activate_version, stage_model_version

    rng = np.random.default_rng(seed)
    items = [f"i{n}" for n in range(n_items)]
    item_factors = (rng.standard_normal((n_items, FACTORS)) / 8).astype(np.float32)
    users = [f"u{n}" for n in range(n_users)]
    user_factors = (rng.standard_normal((n_users, FACTORS)) / 8).astype(np.float32)
    # Long-tailed popularity, like real catalogues.
    popularity = dict(zip(items, (1e6 / (1 + np.arange(n_items)) ** 0.8).tolist(), strict=True))
    manifest = {"version": version, "created_at": "2026-01-01T00:00:00Z", "factors": FACTORS,
                "regularization": 0.05, "alpha": 2.0, "iterations": 15, "event_weights": {},
                "n_users": n_users, "n_items": n_items, "metrics": {}, "baseline_metrics": {},
                "snapshot": {"offsets": {}, "latest_event_ms": 0}, "similar_items_n": 0,
                "beats_popularity": True}
    stage_model_version(client, keys, version, items, item_factors, manifest, user_ids=users,
                        user_factors=user_factors, popularity=popularity)
    activate_version(client, keys, version)
    return users


def _publish_hybrid(client: Any, keys: Any, version: str, n_items: int, n_users: int,
                    seed: int) -> list[str]:
    """The catalogue of `_publish` (same seed: same factors) as a version with a content
    model: items in 200 categories under 20 roots, 100 brands, prices; blend 0.5."""
    from recsys.content import pack_content
    from recsys.content_fit import ContentConfig, fit_content, with_blend
    from recsys.item_attributes import ItemAttributes
    from recsys.modelstore import load_model, stage_model_version

    users = _publish(client, keys, f"{version}-base", n_items, n_users, seed)
    base = load_model(client, keys, f"{version}-base")
    rng = np.random.default_rng(seed + 1)
    category = rng.integers(0, 200, n_items)
    brand = rng.integers(0, 100, n_items)
    price = np.round(rng.lognormal(3, 1, n_items), 2)
    attrs = [ItemAttributes(item_id=item, category_paths=((f"r{c % 20}", f"c{c}"),),
                            brand=f"b{b}", price=float(p))
             for item, c, b, p in zip(base.item_ids, category, brand, price, strict=True)]
    model, embeddings = fit_content(attrs, None, np.ones(n_items, bool), None,
                                    ContentConfig(embedding_dims=32))
    model = with_blend(model, 0.5, {}, 0.5, {})
    manifest = {**base.manifest, "version": version, "content": {"fitted": True, "blend": 0.5}}
    stage_model_version(client, keys, version, base.item_ids, base.item_factors, manifest,
                        content=pack_content(model, embeddings))
    # the users' vectors under this version: the same as under the base
    raw = client.hgetall(keys.user_vectors(f"{version}-base"))
    client.hset(keys.user_vectors(version), mapping=raw)
    return users


def hybrid_phase(client: Any, keys: Any, env: dict[str, str], users: list[str],
                 quick: bool) -> dict[str, Any]:
    """Plain vs hybrid personalised lists at the fixed rate, alternating rounds in the same
    run (one API process per version, started one after the other)."""
    from recsys.modelstore import activate_version
    from shell.localstack import free_port

    duration = 4.0 if quick else 10.0
    rnd = random.Random(11)
    paths = [f"/v1/users/{rnd.choice(users)}/recommendations?k={K}" for _ in range(5000)]
    out: dict[str, Any] = {"n_items": N_ITEMS, "k": K, "rate": RATE, "rounds": 2}
    latencies: dict[str, list[float]] = {"plain": [], "hybrid": []}
    failures = 0
    cpu_ms: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="serving-bench-hybrid-") as logs:
        for _ in range(out["rounds"]):
            for name, version, expect in (("plain", "vh50k-base", b'"source":"personalized"'),
                                          ("hybrid", "vh50k", b'"source":"hybrid"')):
                activate_version(client, keys, version)
                api = _Api(env, free_port(), Path(logs))
                try:
                    api.wait_ready(version)
                    load = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                        {"name": "warmup", "kind": "fixed", "paths": paths[::-1],
                         "rate": RATE, "duration": 2.0},
                        {"name": "fixed", "kind": "fixed", "paths": paths, "rate": RATE,
                         "duration": duration, "expect": expect}]})["fixed"]
                finally:
                    api.stop()
                latencies[name] += load["latencies"]
                failures += load["failures"]
                # CPU per request in this process, one at a time: moves far less with the
                # machine's load than the latencies do
                cpu = _inprocess_cpu(env["REDIS_URL"], env["KAFKA_BOOTSTRAP_SERVERS"], users,
                                     300 if quick else 1000)
                for key in ("asgi_user", "recommender_user"):
                    cpu_ms.setdefault(f"{name}_cpu_ms_{key}", []).append(
                        cpu[f"inprocess_cpu_ms_{key}"])
    for name, values in latencies.items():
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = _percentiles(values)
    out["p99_ratio_hybrid_to_plain"] = out["hybrid_p99_ms"] / out["plain_p99_ms"]
    out.update({key: min(values) for key, values in cpu_ms.items()})  # the least disturbed
    out["cpu_ratio_hybrid_to_plain"] = (out["hybrid_cpu_ms_asgi_user"]
                                        / out["plain_cpu_ms_asgi_user"])
    out["load_avg_1m"] = os.getloadavg()[0]
    out["failed_or_wrong_source"] = failures
    out["p99_target_met"] = out["hybrid_p99_ms"] < 10.0
    return out


def run_hybrid(quick: bool = False) -> dict[str, Any]:
    import redis

    from recsys.keys import Keys
    from shell.localstack import LocalStack

    keys = Keys(NAMESPACE)
    with LocalStack() as stack:
        env = {**stack.env(), "RECSYS_REDIS_NAMESPACE": NAMESPACE, "RECSYS_LOG_LEVEL": "WARNING"}
        client = redis.Redis.from_url(stack.redis_url)
        users = _publish_hybrid(client, keys, "vh50k", N_ITEMS, 5_000 if quick else 20_000, 0)
        _seed_history(client, keys, users, N_ITEMS)
        result = hybrid_phase(client, keys, env, users, quick)
        client.close()
    return result


def _seed_history(client: Any, keys: Any, users: list[str], n_items: int) -> None:
    rng = np.random.default_rng(1)
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for n, user in enumerate(users):
        picks = rng.integers(0, n_items, SEEN_PER_USER)
        pipe.zadd(keys.seen(user), {f"i{p}": now_ms - j for j, p in enumerate(picks)})
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def _scoring_baseline(n: int) -> tuple[float, float]:
    """The pure compute of one personalised answer in this process (no HTTP, no Redis): one
    50,000 x 64 mat-vec, exclusion of 20 seen items and a top-64 partial sort."""
    from serving.scoring import recommend

    rng = np.random.default_rng(5)
    factors = (rng.standard_normal((N_ITEMS, FACTORS)) / 8).astype(np.float32)
    samples = []
    for _ in range(n):
        user = rng.standard_normal(FACTORS).astype(np.float32)
        exclude = rng.integers(0, N_ITEMS, SEEN_PER_USER)
        start = time.perf_counter()
        recommend(user, factors, K, exclude)
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _asgi_get(app: Any, path: str, query: bytes) -> Any:
    """One GET straight into the ASGI app: no socket, no HTTP parsing."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query, "root_path": "", "headers": [(b"host", b"bench")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    return app(scope, receive, send)


def _inprocess_cpu(redis_url: str, kafka: str, users: list[str], n: int,
                   **settings: Any) -> dict[str, float]:
    """CPU ms per request of the app itself, in this process, one request at a time: the
    whole ASGI app (routing, validation, Redis round trip, scoring, JSON), the recommender
    alone (Redis + scoring), and /healthz (the framework floor). Process CPU time, so it
    moves much less with the machine's load than latencies do; no HTTP server or client.
    `settings`: more settings of the app (bench.cluster_bench: redis_cluster)."""
    from recsys.settings import load_settings
    from serving.main import create_app

    settings = load_settings(redis_url=redis_url, redis_namespace=NAMESPACE,
                             kafka_bootstrap_servers=kafka, **settings)  # never produced to
    rnd = random.Random(11)
    sample = [rnd.choice(users) for _ in range(n)]
    query = f"k={K}".encode()

    async def measure() -> dict[str, float]:
        app = create_app(settings)
        out: dict[str, float] = {}
        async with app.router.lifespan_context(app):
            recommender = app.state.services.recommender
            for user in sample[:200]:  # warm-up: connections, caches
                await _asgi_get(app, f"/v1/users/{user}/recommendations", query)
            for name, call in (
                    ("asgi_user", lambda u: _asgi_get(
                        app, f"/v1/users/{u}/recommendations", query)),
                    ("recommender_user", lambda u: recommender.for_user(u, K)),
                    ("asgi_healthz", lambda u: _asgi_get(app, "/healthz", b""))):
                start = time.process_time()
                for user in sample:
                    await call(user)
                out[f"inprocess_cpu_ms_{name}"] = (time.process_time() - start) * 1000 / n
        return out

    return asyncio.run(measure())


IMPRESSION_ROUNDS = 6


def impressions_cpu(redis_url: str, kafka: str, users: list[str], n: int) -> dict[str, float]:
    """CPU ms per personalised request (whole ASGI app, in this process) with impressions on
    and off: alternating rounds of `n` requests in one app, so both see the same caches,
    connections and machine load; the producer is flushed inside each 'on' round, so the
    delivery work is counted where it was caused."""
    from recsys.kafka import ensure_topics
    from recsys.settings import load_settings
    from serving.main import create_app

    settings = load_settings(redis_url=redis_url, redis_namespace=NAMESPACE,
                             kafka_bootstrap_servers=kafka, impressions_topic="bench.impressions")
    ensure_topics(settings)
    rnd = random.Random(13)
    sample = [rnd.choice(users) for _ in range(n)]
    query = f"k={K}".encode()

    async def measure() -> dict[str, float]:
        app = create_app(settings)
        cpu = {True: 0.0, False: 0.0}
        async with app.router.lifespan_context(app):
            services = app.state.services
            for user in sample[:200]:  # warm-up: connections, caches, the topic's metadata
                await _asgi_get(app, f"/v1/users/{user}/recommendations", query)
            services.impressions.flush(services.producer)
            await asyncio.to_thread(services.producer.flush, 10.0)
            for _ in range(IMPRESSION_ROUNDS):
                for enabled in (False, True):
                    services.impressions.enabled = enabled
                    start = time.process_time()
                    for user in sample:
                        await _asgi_get(app, f"/v1/users/{user}/recommendations", query)
                    services.impressions.flush(services.producer)
                    services.producer.flush(10.0)
                    cpu[enabled] += time.process_time() - start
            delivered = services.metrics.impressions_delivery.labels("delivered")._value.get()
        total = IMPRESSION_ROUNDS * n
        on, off = cpu[True] * 1000 / total, cpu[False] * 1000 / total
        return {"impressions_cpu_ms_on": on, "impressions_cpu_ms_off": off,
                "impressions_overhead_pct": (on - off) / off * 100.0,
                "impressions_delivered": delivered, "impressions_requests_per_arm": total}

    return asyncio.run(measure())


def run_impressions(quick: bool = False) -> dict[str, Any]:
    """Only the impressions on/off comparison (its own local stack and data)."""
    import redis

    from recsys.keys import Keys
    from shell.localstack import LocalStack

    with LocalStack() as stack:
        client = redis.Redis.from_url(stack.redis_url)
        keys = Keys(NAMESPACE)
        users = _publish(client, keys, "v50k", N_ITEMS, 2_000 if quick else 5_000, seed=0)
        _seed_history(client, keys, users, N_ITEMS)
        client.close()
        return impressions_cpu(stack.redis_url, stack.bootstrap_servers, users,
                               300 if quick else 1000)


def _redis_get_baseline(client: Any, keys: Any, version: str, users: list[str],
                        n: int) -> tuple[float, float]:
    rnd = random.Random(3)
    # The read the API makes for a user vector (HGET of the version's hash), alone.
    key = keys.user_vectors(version)
    for user in users[:200]:
        client.hget(key, user)
    samples = []
    for _ in range(n):
        user = rnd.choice(users)
        start = time.perf_counter()
        client.hget(key, user)
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _profile(pid: int, seconds: float, out: str) -> subprocess.Popen[bytes]:
    """py-spy (a dev dependency) sampling the API process, without pausing it, for `seconds`:
    an SVG flame graph, or speedscope JSON (.json), or collapsed stacks (.txt)."""
    exe = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    fmt = {".json": "speedscope", ".txt": "raw"}.get(os.path.splitext(out)[1], "flamegraph")
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds)), "--rate", "250",
         "--nonblocking", "--format", fmt, "--output", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _batch_size(before: tuple[float, float], after: tuple[float, float]) -> float:
    requests, batches = after[0] - before[0], after[1] - before[1]
    return requests / batches if batches else float("nan")


class _Api(RoleProcess):
    """`recsys serve` in its own process, stopped by its own handle."""

    def __init__(self, env: dict[str, str], port: int, logdir: Path, workers: int = 1) -> None:
        super().__init__(f"api-{port}", ["--log-level", "WARNING", "serve", "--port", str(port),
                                         "--workers", str(workers)],
                         {**os.environ, **env}, logdir, port=port)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, version: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"API exited: {self.tail(40)}")
            try:
                status, body = self.get("/readyz")
                if status == 200 and json.loads(body)["model_version"] == version:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"API not ready with {version} within {timeout:.0f}s")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def cpu_s(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def metric(self, name: str) -> float:
        """An unlabelled sample of the API's /metrics (NaN when absent)."""
        return self.metrics().get((name, ()), float("nan"))

    def factor_load_s(self) -> float:
        return self.metric("recsys_api_factor_load_seconds_sum")

    def batches(self) -> tuple[float, float]:
        """(requests, batches) scored so far: see serving/score_batching.py."""
        return (self.metric("recsys_api_scoring_batch_size_sum"),
                self.metric("recsys_api_scoring_batch_size_count"))


# The "with rules" line: a stored placement with boosts (brand, margin, new items), at most
# RULES_MAX_PER items per category, and an MMR re-rank, over a catalogue of N_ITEMS.
RULES_PLACEMENT = {
    "boosts": [{"field": "brand", "value": "b3", "weight": 2.0},
               {"field": "attributes.margin", "min": 0.3, "weight": 1.5},
               {"field": "new", "days": 7, "weight": 1.2}],
    "max_per": 3, "max_per_field": "category", "diversity": 0.3}
RULES_CATEGORIES = 500
RULES_BRANDS = 50


def _seed_catalog(client: Any, keys: Any, n_items: int) -> None:
    """A catalogue for the model's items (category, brand, margin), written as the API's
    catalogue write stores it, a tenth of the items new (the rest entered a month ago), and
    the bench placement."""
    from recsys.catalog_codec import write_items
    from recsys.item_attributes import ItemAttributes
    from recsys.rules import Rules

    rng = np.random.default_rng(3)
    items = [ItemAttributes(f"i{n}", category_paths=((f"c{rng.integers(RULES_CATEGORIES)}",),),
                            brand=f"b{rng.integers(RULES_BRANDS)}",
                            attributes={"margin": round(float(rng.random()), 2)})
             for n in range(n_items)]
    write_items(client, keys, items, 5000)
    month_ago = int(time.time() * 1000) - 30 * 86_400_000
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.catalog_added, mapping={f"i{n}": month_ago for n in range(n_items)
                                           if n % 10})
    pipe.hset(keys.placements, "bench", Rules.model_validate(RULES_PLACEMENT).model_dump_json())
    pipe.incr(keys.catalog_generation)
    pipe.execute()


def _warm(port: int, plain: list[str], ruled: list[str]) -> None:
    """Warm both paths of every API process, closed loop (the rules' catalogue cache fills
    on their first requests: a fixed rate would queue behind them), then at the rate."""
    _run_load({"host": "127.0.0.1", "port": port, "phases": [
        {"name": name, "kind": "closed", "paths": paths[::-1], "concurrency": 4,
         "duration": 4.0} for name, paths in (("w1", plain), ("w2", ruled))]})
    _run_load({"host": "127.0.0.1", "port": port, "phases": [
        {"name": name, "kind": "fixed", "paths": paths[::-1], "rate": RATE,
         "duration": 2.0} for name, paths in (("w3", plain), ("w4", ruled))]})


def rules_phase(client: Any, keys: Any, env: dict[str, str], users: list[str], quick: bool,
                logs: Path) -> dict[str, Any]:
    """Plain vs with rules (placement=bench), alternating fixed-rate phases at RATE in one
    API process over the same catalogue: p50/p99 of each, the same-run p99 ratio, and the
    API's CPU per request of each; then the same phases on two API processes."""
    from shell.localstack import free_port

    _seed_catalog(client, keys, N_ITEMS)
    rnd = random.Random(11)
    picks = [rnd.choice(users) for _ in range(5000)]
    plain = [f"/v1/users/{u}/recommendations?k={K}" for u in picks]
    ruled = [p + "&placement=bench" for p in plain]
    personalised = b'"source":"personalized"'
    duration = 4.0 if quick else 10.0
    api = _Api(env, free_port(), logs)
    latencies: dict[str, list[float]] = {"plain": [], "rules": []}
    cpu: dict[str, float] = {"plain": 0.0, "rules": 0.0}
    serial: dict[str, list[float]] = {"plain": [], "rules": []}
    two_workers: dict[str, list[float]] = {"plain": [], "rules": []}
    # The slow requests' episodes (see _stalls) of each measured phase, by line.
    episodes: dict[str, list[dict[str, float]]] = {}
    failures = 0
    try:
        api.wait_ready("v50k")
        status, body = api.get(ruled[0])
        if status != 200:
            raise RuntimeError(f"rules request failed: {status} {body[:300]!r}")
        _warm(api.port, plain, ruled)
        for _ in range(2):
            for name, paths in (("plain", plain), ("rules", ruled)):
                before = api.cpu_s()
                out = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                    {"name": name, "kind": "fixed", "paths": paths, "rate": RATE,
                     "duration": duration, "expect": personalised}]})[name]
                cpu[name] += api.cpu_s() - before
                latencies[name] += out["latencies"]
                episodes.setdefault(name, []).extend(
                    {**e, "at": out["started_at"] + e["first_due_s"]}
                    for e in _stalls(out["slow"])[:3])
                failures += out["failures"]
        # One connection, back to back: each request's own latency, without the queueing
        # a fixed rate beyond what a busy machine gives the API adds.
        for _ in range(2):
            for name, paths in (("plain", plain), ("rules", ruled)):
                out = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                    {"name": name, "kind": "closed", "paths": paths, "concurrency": 1,
                     "duration": duration / 2, "expect": personalised}]})[name]
                serial[name] += out["latencies"]
                failures += out["failures"]
        api.stop()
        # The same alternating phases on two API processes (`recsys serve --workers 2`, as the
        # product scales the API): one process at the rules' CPU per request is close to a
        # whole core at RATE, so its line measures queueing as much as the route.
        api = _Api(env, free_port(), logs, workers=2)
        for _ in range(8):  # each answer comes from either process: both must be ready
            api.wait_ready("v50k")
        _warm(api.port, plain, ruled)
        for _ in range(2):
            for name, paths in (("plain", plain), ("rules", ruled)):
                out = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                    {"name": name, "kind": "fixed", "paths": paths, "rate": RATE,
                     "duration": duration, "expect": personalised}]})[name]
                two_workers[name] += out["latencies"]
                episodes.setdefault(f"{name}_2_workers", []).extend(
                    {**e, "at": out["started_at"] + e["first_due_s"]}
                    for e in _stalls(out["slow"])[:3])
                failures += out["failures"]
        api.stop()
        # The same requests in this process, alternating rounds: the CPU of the app itself,
        # which moves much less with the machine's load than the HTTP figures.
        n = 200 if quick else 500
        inprocess = _filtered_cpu(env, plain[:n], ruled[:n], "rules")
    finally:
        api.stop()
        _clear_catalogue(client, keys, N_ITEMS)
    result: dict[str, Any] = {"placement": RULES_PLACEMENT, "k": K, "rate": RATE,
                              "failed_or_not_personalised": failures,
                              "inprocess_cpu_ms_plain": inprocess["cpu_ms_plain"],
                              "inprocess_cpu_ms_rules": inprocess["cpu_ms_rules"],
                              "slow_episodes": episodes}
    for name in ("plain", "rules"):
        result[f"{name}_p50_ms"], result[f"{name}_p99_ms"] = _percentiles(latencies[name])
        result[f"{name}_requests"] = len(latencies[name])
        result[f"{name}_api_cpu_ms_per_request"] = cpu[name] * 1000 / len(latencies[name])
        result[f"{name}_serial_p50_ms"], result[f"{name}_serial_p99_ms"] = _percentiles(
            serial[name])
        result[f"{name}_p50_ms_2_workers"], result[f"{name}_p99_ms_2_workers"] = _percentiles(
            two_workers[name])
    result["p99_ratio_rules_to_plain"] = result["rules_p99_ms"] / result["plain_p99_ms"]
    result["rules_p99_target_met"] = result["rules_p99_ms"] < 10.0
    result["p99_ratio_rules_to_plain_2_workers"] = (result["rules_p99_ms_2_workers"]
                                                   / result["plain_p99_ms_2_workers"])
    result["rules_p99_target_met_2_workers"] = result["rules_p99_ms_2_workers"] < 10.0
    return result


def large_catalog(client: Any, keys: Any, env: dict[str, str], quick: bool) -> dict[str, Any]:
    """Personalised top-k over a million-item catalogue through the approximate-search index:
    the trainer's own layout build, one API process at the fixed rate, and recall@k of the
    API's answers against exact scoring of every item."""
    from bench.large_catalog import clustered_factors
    from recsys.ann import ANN_FORMAT, recall_at_k
    from recsys.modelstore import activate_version, stage_model_version
    from recsys.settings import Settings
    from recsys.topk import top_k_rows
    from shell.localstack import free_port
    from trainer.publish import ann_layout

    n_items = N_ITEMS_ANN_QUICK if quick else N_ITEMS_ANN
    duration = 5.0 if quick else 20.0
    defaults = Settings()
    version = f"vann{n_items // 1000}k"
    item_factors, user_factors = clustered_factors(n_items, ANN_USERS, FACTORS, seed=11)
    items = [f"a{n}" for n in range(n_items)]
    users = [f"au{n}" for n in range(ANN_USERS)]
    start = time.perf_counter()
    layout = ann_layout(item_factors, defaults.ann_lists, 0)
    out: dict[str, Any] = {"n_items": n_items, "factors": FACTORS, "k": K,
                           "ann_build_s": time.perf_counter() - start,
                           "ann_layout_mb": len(layout) / 2**20,
                           "ann_probe": defaults.ann_probe,
                           "ann_candidates": defaults.ann_candidates,
                           "load_avg_1m_before": os.getloadavg()[0]}
    manifest = {"version": version, "created_at": "2026-01-01T00:00:00Z", "factors": FACTORS,
                "regularization": 0.05, "alpha": 2.0, "iterations": 15, "event_weights": {},
                "n_users": ANN_USERS, "n_items": n_items, "metrics": {},
                "baseline_metrics": {}, "snapshot": {"offsets": {}, "latest_event_ms": 0},
                "similar_items_n": 0, "beats_popularity": True, "ann_format": ANN_FORMAT}
    stage_model_version(client, keys, version, items, item_factors, manifest, user_ids=users,
                        user_factors=user_factors, ann=layout)
    activate_version(client, keys, version)
    logs = tempfile.mkdtemp(prefix="serving-bench-large-")
    api = _Api(env, free_port(), Path(logs))
    try:
        api.wait_ready(version, timeout=600)
        out["factor_load_s"] = api.factor_load_s()
        personalised = b'"source":"personalized"'
        rnd = random.Random(3)
        paths = [f"/v1/users/{rnd.choice(users)}/recommendations?k={K}" for _ in range(5000)]
        _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
            {"name": "warmup", "kind": "fixed", "paths": paths[::-1], "rate": RATE,
             "duration": 2.0}]})
        # The API's own CPU per request: what a dedicated core would sustain, whatever else
        # this shared machine runs meanwhile.
        cpu_before = api.cpu_s()
        load = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
            {"name": "fixed", "kind": "fixed", "paths": paths, "rate": RATE,
             "duration": duration, "expect": personalised}]})
        out["api_cpu_ms_per_request"] = ((api.cpu_s() - cpu_before) * 1000
                                         / max(1, len(load["fixed"]["latencies"])))
        load.update(_run_load({"host": "127.0.0.1", "port": api.port, "phases": [
            {"name": "max", "kind": "closed", "paths": paths, "concurrency": MAX_CONCURRENCY,
             "duration": duration / 2, "expect": personalised}]}))
        fixed, top = load["fixed"], load["max"]
        out["p50_ms"], out["p99_ms"] = _percentiles(fixed["latencies"])
        out["rps"] = fixed["achieved_rps"]
        out["max_rps"] = top["achieved_rps"]
        out["failed_or_not_personalised"] = fixed["failures"] + top["failures"]
        out["rss_mb"] = api.rss_mb()
        # recall@k of what the API answered (no seen items: nothing excluded) against exact
        sample = users[:ANN_RECALL_USERS]
        answers = []
        row_of = {item: n for n, item in enumerate(items)}
        for user in sample:
            status, body = api.get(f"/v1/users/{user}/recommendations?k={K}")
            answers.append(np.asarray([row_of[i["item_id"]] for i in json.loads(body)["items"]]
                                      if status == 200 else [], dtype=np.int64))
        exact = top_k_rows(user_factors[:ANN_RECALL_USERS] @ item_factors.T, K)
        out["recall_at_k"] = recall_at_k(answers, exact)
    finally:
        api.stop()
        shutil.rmtree(logs, ignore_errors=True)
    out["load_avg_1m_after"] = os.getloadavg()[0]
    out["p99_target_met"] = out["p99_ms"] < 10.0 and out["rps"] >= 0.95 * RATE
    out["recall_target_met"] = out["recall_at_k"] >= 0.95
    return out


# The filtered phase's catalogue and filters (recsys.item_filter): selective ones, a few
# thousand items down to a few hundred, cycled over requests like a shop's pages would.
FILTERS = ["category=c7", "category_path=d1/c11&price_max=500",
           "brand=b3&brand=b4&attr=colour:red", "tag=sale&price_min=100"]


def _write_catalogue(client: Any, keys: Any, n_items: int) -> None:
    from recsys.catalog_codec import write_items
    from recsys.item_attributes import ItemAttributes

    colours = ("red", "blue", "green")
    items = [ItemAttributes(f"i{n}", category_paths=((f"d{n % 5}", f"c{n % 50}",
                                                      f"s{n % 500}"),),
                            brand=f"b{n % 20}", price=float(n % 1000),
                            tags=("sale",) if n % 7 == 0 else (),
                            attributes={"colour": colours[n % 3]}) for n in range(n_items)]
    write_items(client, keys, items, 5000)


def _clear_catalogue(client: Any, keys: Any, n_items: int) -> None:
    pipe = client.pipeline(transaction=False)
    for n in range(n_items):
        pipe.delete(keys.item(f"i{n}"))
    pipe.delete(keys.catalog_category, keys.catalog_facets, keys.catalog_unavailable,
                keys.catalog_added, keys.catalog_attribute_names, keys.placements)
    pipe.incr(keys.catalog_generation)
    pipe.execute()


FILTERED_CPU_ROUNDS = 4


def _filtered_cpu(env: dict[str, str], plain: list[str], with_filters: list[str],
                  name: str = "filtered") -> dict[str, float]:
    """CPU ms per personalised request through the whole ASGI app, in this process, one at a
    time, plain and filtered in alternating rounds (same caches, same drift): process CPU
    time moves much less with the machine's load than latencies do."""
    from recsys.settings import load_settings
    from serving.main import create_app

    settings = load_settings(redis_url=env["REDIS_URL"], redis_namespace=NAMESPACE,
                             kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])

    def split(path: str) -> tuple[str, bytes]:
        route, _, query = path.partition("?")
        return route, query.encode()

    async def measure() -> dict[str, float]:
        app = create_app(settings)
        spent = {"plain": 0.0, name: 0.0}
        counts = {"plain": 0, name: 0}
        async with app.router.lifespan_context(app):
            # Warm-up, every request once: memoised rows, caches, the rules' columns.
            for path in plain + with_filters:
                await _asgi_get(app, *split(path))
            for _ in range(FILTERED_CPU_ROUNDS):
                for which, paths in (("plain", plain), (name, with_filters)):
                    start = time.process_time()
                    for path in paths:
                        await _asgi_get(app, *split(path))
                    spent[which] += time.process_time() - start
                    counts[which] += len(paths)
        out = {f"cpu_ms_{which}": spent[which] * 1000 / counts[which] for which in spent}
        out["cpu_ratio"] = out[f"cpu_ms_{name}"] / out["cpu_ms_plain"]
        return out

    return asyncio.run(measure())


def filtered(client: Any, keys: Any, env: dict[str, str], users: list[str], logs: Path,
             quick: bool) -> dict[str, Any]:
    """Personalised requests with filters against the same requests without, in one API
    process with a catalogue of every item (category paths, brand, price, tags, an
    attribute), alternating phases at the fixed rate: the same-run cost of filtering."""
    from shell.localstack import free_port

    duration = 5.0 if quick else 20.0
    _write_catalogue(client, keys, N_ITEMS)
    rnd = random.Random(11)
    chosen = [rnd.choice(users) for _ in range(5000)]
    plain = [f"/v1/users/{u}/recommendations?k={K}" for u in chosen]
    with_filters = [f"{path}&{FILTERS[n % len(FILTERS)]}" for n, path in enumerate(plain)]
    personalised = b'"source":"personalized"'
    out: dict[str, Any] = {"filters": FILTERS}
    api = _Api(env, free_port(), Path(logs))
    try:
        api.wait_ready("v50k")
        phases = [{"name": "warmup", "kind": "fixed", "paths": plain[::-1] + with_filters,
                   "rate": RATE, "duration": 2.0}]
        for round_ in range(2):  # alternating, so drift on a shared machine hits both
            for name, paths in (("plain", plain), ("filtered", with_filters)):
                phases.append({"name": f"{name}{round_}", "kind": "fixed", "paths": paths,
                               "rate": RATE, "duration": duration / 2,
                               "expect": personalised})
        load = _run_load({"host": "127.0.0.1", "port": api.port, "phases": phases})
        api.stop()
        n = 200 if quick else 500
        out.update(_filtered_cpu(env, plain[:n], with_filters[:n]))
    finally:
        api.stop()
        _clear_catalogue(client, keys, N_ITEMS)
    failures = 0
    for name in ("plain", "filtered"):
        latencies = load[f"{name}0"]["latencies"] + load[f"{name}1"]["latencies"]
        failures += load[f"{name}0"]["failures"] + load[f"{name}1"]["failures"]
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = _percentiles(latencies)
    out["failed_or_not_personalised"] = failures
    out["p99_ratio"] = out["filtered_p99_ms"] / out["plain_p99_ms"]
    return out


def run(quick: bool = False, profile: str | None = None) -> dict[str, Any]:
    import redis

    from recsys.keys import Keys
    from shell.localstack import LocalStack, free_port

    duration = 5.0 if quick else 20.0
    n_users = 5_000 if quick else 20_000
    keys = Keys(NAMESPACE)
    result: dict[str, Any] = {"n_items": N_ITEMS, "factors": FACTORS, "k": K,
                              "target_rps": RATE, "load_avg_1m_before": os.getloadavg()[0]}
    with LocalStack() as stack, tempfile.TemporaryDirectory(prefix="serving-bench-") as logs:
        env = {**stack.env(), "RECSYS_REDIS_NAMESPACE": NAMESPACE, "RECSYS_LOG_LEVEL": "WARNING"}
        client = redis.Redis.from_url(stack.redis_url)
        users = _publish(client, keys, "v50k", N_ITEMS, n_users, seed=0)
        _seed_history(client, keys, users, N_ITEMS)
        rnd = random.Random(7)
        paths = [f"/v1/users/{rnd.choice(users)}/recommendations?k={K}" for _ in range(5000)]
        personalised = b'"source":"personalized"'

        port = free_port()
        api = _Api(env, port, Path(logs))
        try:
            api.wait_ready("v50k")
            result["factor_load_s_50k"] = api.factor_load_s()
            load = _run_load({"host": "127.0.0.1", "port": port, "phases": [
                {"name": "warmup", "kind": "closed", "paths": paths, "concurrency": 4,
                 "duration": 2.0}]})
            cpu_before = api.cpu_s()
            load.update(_run_load({"host": "127.0.0.1", "port": port, "phases": [
                {"name": "healthz", "kind": "fixed", "paths": ["/healthz"], "rate": RATE,
                 "duration": duration / 2}]}))
            result["api_cpu_ms_per_healthz"] = (
                (api.cpu_s() - cpu_before) * 1000 / len(load["healthz"]["latencies"]))
            # The API's own CPU time per request: what a dedicated core could sustain,
            # whatever else this shared machine is running.
            cpu_before, batches_before = api.cpu_s(), api.batches()
            # A profiler shares the cores: the figures of a profiled run are not comparable.
            profiler = _profile(api.proc.pid, duration + 2.0, profile) if profile else None
            # The measured phase follows a short one at the same rate in the same generator
            # process: a fresh generator's first second (connections, first-time code paths)
            # showed up as a burst of slow requests that the steady state never had. The
            # warm-up's own figures are reported too.
            load.update(_run_load({"host": "127.0.0.1", "port": port, "phases": [
                {"name": "fixed_warmup", "kind": "fixed", "paths": paths[::-1], "rate": RATE,
                 "duration": 2.0, "expect": personalised},
                {"name": "fixed", "kind": "fixed", "paths": paths, "rate": RATE,
                 "duration": duration, "expect": personalised}]}))
            if profiler is not None:
                profiler.wait(30)
            result["api_cpu_ms_per_request"] = (
                (api.cpu_s() - cpu_before) * 1000
                / (len(load["fixed"]["latencies"]) + len(load["fixed_warmup"]["latencies"])))
            result["fixed_warmup_p50_ms"], result["fixed_warmup_p99_ms"] = _percentiles(
                load["fixed_warmup"]["latencies"])
            # Requests per scoring pass (concurrent requests share one; serving/score_batching.py).
            batches_after = api.batches()
            result["scoring_batch_mean_fixed"] = _batch_size(batches_before, batches_after)
            batches_before = batches_after
            load.update(_run_load({"host": "127.0.0.1", "port": port, "phases": [
                {"name": "max", "kind": "closed", "paths": paths,
                 "concurrency": MAX_CONCURRENCY, "duration": duration,
                 "expect": personalised}]}))
            result["scoring_batch_mean_max"] = _batch_size(batches_before, api.batches())
            result["rss_mb_50k"] = api.rss_mb()
        finally:
            api.stop()
        # Scale-out on the same machine: two API processes (`recsys serve --workers 2`, as two
        # replicas behind a load balancer would be), the same fixed-rate phase.
        api = _Api(env, free_port(), Path(logs), workers=2)
        try:
            for _ in range(8):  # each answer comes from either process: both must be ready
                api.wait_ready("v50k")
            two = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                {"name": "warmup", "kind": "fixed", "paths": paths[::-1], "rate": RATE,
                 "duration": 2.0},
                {"name": "fixed", "kind": "fixed", "paths": paths, "rate": RATE,
                 "duration": duration, "expect": personalised}]})["fixed"]
            result["p50_ms_2_workers"], result["p99_ms_2_workers"] = _percentiles(
                two["latencies"])
            result["fixed_rate_achieved_rps_2_workers"] = two["achieved_rps"]
            result["failed_or_not_personalised"] = two["failures"]
        finally:
            api.stop()
        # Last on v50k (later phases publish other versions): it adds a catalogue.
        result["rules"] = rules_phase(client, keys, env, users, quick, Path(logs))
        result["filtered"] = filtered(client, keys, env, users, Path(logs), quick)
        result["redis_get_p50_ms"], result["redis_get_p99_ms"] = _redis_get_baseline(
            client, keys, "v50k", users, 1000 if quick else 5000)
        result["scoring_p50_ms"], result["scoring_p99_ms"] = _scoring_baseline(
            300 if quick else 1000)
        result.update(_inprocess_cpu(stack.redis_url, stack.bootstrap_servers, users,
                                    1000 if quick else 3000))
        result.update(impressions_cpu(stack.redis_url, stack.bootstrap_servers, users,
                                      300 if quick else 1000))

        fixed, top, health = load["fixed"], load["max"], load["healthz"]
        result["p50_ms"], result["p99_ms"] = _percentiles(fixed["latencies"])
        result["fixed_rate_achieved_rps"] = fixed["achieved_rps"]
        result["fixed_rate_requests"] = len(fixed["latencies"])
        result["rps"] = top["achieved_rps"]
        result["max_p50_ms"], result["max_p99_ms"] = _percentiles(top["latencies"])
        result["healthz_p50_ms"], result["healthz_p99_ms"] = _percentiles(health["latencies"])
        result["failed_or_not_personalised"] += fixed["failures"] + top["failures"]
        result["fixed_rate_max_ms"] = max(fixed["latencies"]) * 1000.0
        result["fixed_rate_over_10ms"] = len(fixed["slow"])
        result["fixed_rate_slow_episodes"] = _stalls(fixed["slow"])[:5]
        result["healthz_over_10ms"] = len(health["slow"])
        result["client_cpu_ms_per_request"] = fixed["client_cpu_ms_per_request"]

        # Memory with ten times the catalogue: a fresh API process on a 500,000-item version.
        big_users = _publish(client, keys, "v500k", N_ITEMS_LARGE, 1000, seed=1)
        api = _Api(env, free_port(), Path(logs))
        try:
            api.wait_ready("v500k", timeout=300)
            result["rss_mb_500k"] = api.rss_mb()
            result["factor_load_s_500k"] = api.factor_load_s()
            if not quick:
                big_paths = [f"/v1/users/{u}/recommendations?k={K}" for u in big_users]
                # One connection, back to back: the latency of a lone request when every
                # answer scores 500,000 items (ten times the work of the main figure).
                big = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                    {"name": "warmup", "kind": "closed", "paths": big_paths, "concurrency": 1,
                     "duration": 1.0},
                    {"name": "serial", "kind": "closed", "paths": big_paths, "concurrency": 1,
                     "duration": duration / 2, "expect": personalised}]})["serial"]
                result["serial_p50_ms_500k"], result["serial_p99_ms_500k"] = _percentiles(
                    big["latencies"])
                result["serial_rps_500k"] = big["achieved_rps"]
        finally:
            api.stop()
        result["large_catalog"] = large_catalog(client, keys, env, quick)
        hybrid_users = _publish_hybrid(client, keys, "vh50k", N_ITEMS, n_users, seed=0)
        result["hybrid"] = hybrid_phase(client, keys, env, hybrid_users, quick)
        client.close()
    result["factor_mb_50k"] = N_ITEMS * FACTORS * 4 / 2**20
    result["factor_mb_500k"] = N_ITEMS_LARGE * FACTORS * 4 / 2**20
    result["load_avg_1m_after"] = os.getloadavg()[0]
    result["p50_vs_redis_get"] = result["p50_ms"] / result["redis_get_p50_ms"]
    result["p99_vs_redis_get"] = result["p99_ms"] / result["redis_get_p99_ms"]
    result["p99_vs_healthz"] = result["p99_ms"] / result["healthz_p99_ms"]
    result["p99_target_met"] = result["p99_ms"] < 10.0
    return result


def main(argv: list[str] | None = None) -> int:
    from recsys.blas import set_blas_threads
    from recsys.settings import get_settings

    set_blas_threads(get_settings().blas_threads)  # this process and the roles it starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, fewer users")
    parser.add_argument("--profile", metavar="FILE",
                        help="py-spy profile of the API process during the fixed-rate phase "
                        "(.svg flame graph, .json speedscope, .txt collapsed stacks)")
    parser.add_argument("--impressions", action="store_true",
                        help="only the impressions on/off CPU comparison")
    parser.add_argument("--hybrid", action="store_true",
                        help="only the hybrid (content) path against the plain one")
    parser.add_argument("--large-only", action="store_true",
                        help="only the million-item phase (approximate search)")
    parser.add_argument("--rules-only", action="store_true",
                        help="only plain vs with-rules (placement: boosts, max_per, "
                        "diversity) at the fixed rate, same run")
    parser.add_argument("--filtered-only", action="store_true",
                        help="only the personalised route with and without filters")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.impressions:
        result = run_impressions(quick=args.quick)
        print(json.dumps(result, indent=2))
        _print_impressions(result)
        return 0
    if args.rules_only:
        import redis

        from recsys.keys import Keys
        from shell.localstack import LocalStack

        with LocalStack() as stack, tempfile.TemporaryDirectory(prefix="serving-bench-") as logs:
            env = {**stack.env(), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
                   "RECSYS_LOG_LEVEL": "WARNING"}
            client = redis.Redis.from_url(stack.redis_url)
            keys = Keys(NAMESPACE)
            users = _publish(client, keys, "v50k", N_ITEMS, 5_000 if args.quick else 20_000,
                             seed=0)
            _seed_history(client, keys, users, N_ITEMS)
            rules = rules_phase(client, keys, env, users, args.quick, Path(logs))
            client.close()
        print(json.dumps({"rules": rules}, indent=2))
        _print_rules(rules)
        return 0
    if args.hybrid:
        result = run_hybrid(quick=args.quick)
        print(json.dumps(result, indent=2))
        _print_hybrid(result)
        return 0
    if args.large_only:
        import redis

        from recsys.keys import Keys
        from shell.localstack import LocalStack

        with LocalStack() as stack:
            env = {**stack.env(), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
                   "RECSYS_LOG_LEVEL": "WARNING"}
            client = redis.Redis.from_url(stack.redis_url)
            large = large_catalog(client, Keys(NAMESPACE), env, args.quick)
            client.close()
        print(json.dumps({"large_catalog": large}, indent=2))
        _print_large(large)
        return 0
    if args.filtered_only:
        result = run_filtered(quick=args.quick)
        print(json.dumps(result, indent=2))
        _print_filtered(result)
        return 0
    result = run(quick=args.quick, profile=args.profile)
    print(json.dumps(result, indent=2))
    print(f"\npersonalised k={K} over {N_ITEMS:,} items at {RATE:.0f} req/s: "
          f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, max "
          f"{result['fixed_rate_max_ms']:.1f} ms, {result['fixed_rate_achieved_rps']:.0f} "
          f"req/s achieved (target p99 < 10 ms: "
          f"{'met' if result['p99_target_met'] else 'NOT met'})")
    print(f"  (after 2 s at the same rate, not counted: p50 {result['fixed_warmup_p50_ms']:.2f} ms,"
          f" p99 {result['fixed_warmup_p99_ms']:.2f} ms)")
    episodes = result["fixed_rate_slow_episodes"]
    print(f"  {result['fixed_rate_over_10ms']} of {result['fixed_rate_requests']} requests over "
          f"10 ms (/healthz phase: {result['healthz_over_10ms']})"
          + ("; largest episodes (due at s: requests, worst ms): " + ", ".join(
              f"{e['first_due_s']:.1f}-{e['last_due_s']:.1f}: {e['requests']:.0f}, "
              f"{e['worst_ms']:.0f}" for e in episodes[:3]) if episodes else ""))
    print(f"two API processes (--workers 2), same rate: p50 {result['p50_ms_2_workers']:.2f} ms, "
          f"p99 {result['p99_ms_2_workers']:.2f} ms, "
          f"{result['fixed_rate_achieved_rps_2_workers']:.0f} req/s achieved")
    print(f"raw Redis GET from Python: p50 {result['redis_get_p50_ms']:.3f} ms, "
          f"p99 {result['redis_get_p99_ms']:.3f} ms -> API/GET "
          f"p50 x{result['p50_vs_redis_get']:.1f}, p99 x{result['p99_vs_redis_get']:.1f}")
    print(f"scoring alone (mat-vec + exclusion + top-{K}, in-process): "
          f"p50 {result['scoring_p50_ms']:.2f} ms, p99 {result['scoring_p99_ms']:.2f} ms")
    print(f"GET /healthz at the same rate: p50 {result['healthz_p50_ms']:.2f} ms, "
          f"p99 {result['healthz_p99_ms']:.2f} ms")
    print(f"max throughput ({MAX_CONCURRENCY} connections): {result['rps']:.0f} req/s, "
          f"p50 {result['max_p50_ms']:.2f} ms, p99 {result['max_p99_ms']:.2f} ms")
    print(f"requests per scoring pass (batched when concurrent): "
          f"{result['scoring_batch_mean_fixed']:.2f} at {RATE:.0f} req/s, "
          f"{result['scoring_batch_mean_max']:.2f} at max throughput")
    print(f"API process CPU per personalised request: {result['api_cpu_ms_per_request']:.2f} ms "
          f"(one dedicated core: ~{1000 / result['api_cpu_ms_per_request']:.0f} req/s); "
          f"load average during the run {result['load_avg_1m_before']:.1f} -> "
          f"{result['load_avg_1m_after']:.1f} on {os.cpu_count()} cores")
    print(f"API process CPU per /healthz: {result['api_cpu_ms_per_healthz']:.2f} ms; "
          f"load generator CPU per request: {result['client_cpu_ms_per_request']:.2f} ms")
    print(f"in-process CPU per request (no HTTP, one at a time): whole ASGI app "
          f"{result['inprocess_cpu_ms_asgi_user']:.2f} ms, recommender alone (Redis + "
          f"scoring) {result['inprocess_cpu_ms_recommender_user']:.2f} ms, /healthz "
          f"{result['inprocess_cpu_ms_asgi_healthz']:.2f} ms")
    print(f"API RSS: {result['rss_mb_50k']:.0f} MB with {N_ITEMS:,} items, "
          f"{result['rss_mb_500k']:.0f} MB with {N_ITEMS_LARGE:,} items")
    _print_filtered(result["filtered"])
    _print_impressions(result)
    _print_large(result["large_catalog"])
    _print_hybrid(result["hybrid"])
    _print_rules(result["rules"])
    return 0


def run_filtered(quick: bool = False) -> dict[str, Any]:
    import redis

    from recsys.keys import Keys
    from shell.localstack import LocalStack

    keys = Keys(NAMESPACE)
    with LocalStack() as stack, tempfile.TemporaryDirectory(prefix="serving-bench-") as logs:
        env = {**stack.env(), "RECSYS_REDIS_NAMESPACE": NAMESPACE, "RECSYS_LOG_LEVEL": "WARNING"}
        client = redis.Redis.from_url(stack.redis_url)
        users = _publish(client, keys, "v50k", N_ITEMS, 5_000 if quick else 20_000, seed=0)
        _seed_history(client, keys, users, N_ITEMS)
        result = filtered(client, keys, env, users, Path(logs), quick)
        client.close()
    result["load_avg_1m_after"] = os.getloadavg()[0]
    return result


def _print_filtered(result: dict[str, Any]) -> None:
    print(f"filtered: personalised k={K} over {N_ITEMS:,} items at {RATE:.0f} req/s with a "
          f"catalogue, same run: plain p50 {result['plain_p50_ms']:.2f} ms, p99 "
          f"{result['plain_p99_ms']:.2f} ms; with filters p50 {result['filtered_p50_ms']:.2f} "
          f"ms, p99 {result['filtered_p99_ms']:.2f} ms (x{result['p99_ratio']:.2f}); "
          f"{result['failed_or_not_personalised']} failed or not personalised")
    print(f"  in-process CPU per request (whole ASGI app, alternating rounds): plain "
          f"{result['cpu_ms_plain']:.2f} ms, filtered {result['cpu_ms_filtered']:.2f} ms -> "
          f"x{result['cpu_ratio']:.2f}")


def _print_hybrid(hybrid: dict[str, Any]) -> None:
    print(f"hybrid (content) path, {hybrid['n_items']:,} items, k={hybrid['k']}, "
          f"{hybrid['rate']:.0f} req/s, same run: hybrid p50 {hybrid['hybrid_p50_ms']:.2f} ms, "
          f"p99 {hybrid['hybrid_p99_ms']:.2f} ms; plain p50 {hybrid['plain_p50_ms']:.2f} ms, "
          f"p99 {hybrid['plain_p99_ms']:.2f} ms -> p99 x{hybrid['p99_ratio_hybrid_to_plain']:.2f}"
          f" (target p99 < 10 ms: {'met' if hybrid['p99_target_met'] else 'NOT met'}; "
          f"{hybrid['failed_or_wrong_source']} failed or wrong source; load average "
          f"{hybrid['load_avg_1m']:.1f} on {os.cpu_count()} cores)")
    print(f"  in-process CPU per personalised request (whole ASGI app): hybrid "
          f"{hybrid['hybrid_cpu_ms_asgi_user']:.2f} ms, plain "
          f"{hybrid['plain_cpu_ms_asgi_user']:.2f} ms -> "
          f"x{hybrid['cpu_ratio_hybrid_to_plain']:.2f}; recommender alone "
          f"{hybrid['hybrid_cpu_ms_recommender_user']:.2f} vs "
          f"{hybrid['plain_cpu_ms_recommender_user']:.2f} ms")


def _print_rules(rules: dict[str, Any]) -> None:
    print(f"with rules (placement: 3 boosts, max_per 3 per category, diversity 0.3; k={K}, "
          f"{N_ITEMS:,} items) at {RATE:.0f} req/s: p50 {rules['rules_p50_ms']:.2f} ms, p99 "
          f"{rules['rules_p99_ms']:.2f} ms (target p99 < 10 ms: "
          f"{'met' if rules['rules_p99_target_met'] else 'NOT met'}); plain in the same run "
          f"p50 {rules['plain_p50_ms']:.2f} ms, p99 {rules['plain_p99_ms']:.2f} ms -> p99 "
          f"ratio x{rules['p99_ratio_rules_to_plain']:.2f}; API CPU per request "
          f"{rules['rules_api_cpu_ms_per_request']:.2f} ms vs "
          f"{rules['plain_api_cpu_ms_per_request']:.2f} ms; one connection back to back: "
          f"rules p50 {rules['rules_serial_p50_ms']:.2f} ms, p99 "
          f"{rules['rules_serial_p99_ms']:.2f} ms, plain p50 "
          f"{rules['plain_serial_p50_ms']:.2f} ms, p99 {rules['plain_serial_p99_ms']:.2f} ms; "
          f"in-process CPU per request (whole app, alternating rounds) "
          f"{rules['inprocess_cpu_ms_rules']:.2f} ms vs {rules['inprocess_cpu_ms_plain']:.2f} ms")
    print(f"with rules on two API processes (--workers 2), same rate: p50 "
          f"{rules['rules_p50_ms_2_workers']:.2f} ms, p99 {rules['rules_p99_ms_2_workers']:.2f} "
          f"ms (target p99 < 10 ms: "
          f"{'met' if rules['rules_p99_target_met_2_workers'] else 'NOT met'}); plain p50 "
          f"{rules['plain_p50_ms_2_workers']:.2f} ms, p99 {rules['plain_p99_ms_2_workers']:.2f} "
          f"ms -> p99 ratio x{rules['p99_ratio_rules_to_plain_2_workers']:.2f}")


def _print_impressions(result: dict[str, Any]) -> None:
    print(f"impressions (in-process CPU per personalised request, same run, alternating "
          f"rounds): on {result['impressions_cpu_ms_on']:.3f} ms, off "
          f"{result['impressions_cpu_ms_off']:.3f} ms -> "
          f"{result['impressions_overhead_pct']:+.1f} % (target < 10 %); "
          f"{result['impressions_delivered']:.0f} impressions delivered")


def _print_large(large: dict[str, Any]) -> None:
    print(f"large catalogue ({large['n_items']:,} x {large['factors']}, approximate search, "
          f"k={large['k']}) at {RATE:.0f} req/s: p50 {large['p50_ms']:.2f} ms, p99 "
          f"{large['p99_ms']:.2f} ms, {large['rps']:.0f} req/s achieved (max "
          f"{large['max_rps']:.0f}); recall@{large['k']} {large['recall_at_k']:.3f} against "
          f"exact; layout built in {large['ann_build_s']:.0f} s ({large['ann_layout_mb']:.1f} "
          f"MB); API CPU {large['api_cpu_ms_per_request']:.2f} ms per request; load average "
          f"{large['load_avg_1m_before']:.1f} -> "
          f"{large['load_avg_1m_after']:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    sys.exit(main())
