"""Stream worker benchmark: one real `recsys stream` worker on the local stack, each figure
next to a ceiling measured in the same run.

    python -m bench.stream_bench [--quick] [--model-kind als|neural|both]
                                 [--item-foldin off|on|both]

Model: k = 64 factors, 50,000 items (random factors: the fold-in costs the same). With
`--model-kind neural` the version is neural: the same item factors as the tower's embeddings
and a random tower (window 50, feed-forward 128: the settings' defaults; the forward pass
costs the same whatever the weights), so the worker computes each user's vector with the
tower instead of the fold-in. `both` runs the two back to back and reports the ratio. Events are
Zipf-distributed over the items, spread over many users (most batches fold in mostly distinct
users, the expensive case).

* `events_per_s`: the worker is started and warmed up, then frozen (SIGSTOP); N events are
  pre-produced; it is resumed (SIGCONT) and timed until its metrics count all N consumed,
  folded in and written to Redis.
  `ceiling_events_per_s`: a bare aiokafka consume loop (same broker, same fetch wait, no
  work at all) reading the same N events.
* `freshness_p50_ms` / `freshness_p99_ms`: events produced at a fixed 1,000 events/s, each
  stamped with its send time; freshness = event time -> Redis write acknowledged, from the
  worker's histogram (quantiles interpolated inside its buckets, like PromQL's
  histogram_quantile). `ceiling_freshness_*`: the same paced producer to a bare aiokafka
  consumer (send -> consumed, exact).
* `--item-foldin both`: besides, two ALS runs whose version knows only the first
  `N_ITEMS - NEW_ITEMS` items (the Zipf tail's last items are new to it, as launches are),
  item fold-in off then on (`stream_item_foldin`); `item_foldin.events_per_s_vs_off` is the
  throughput ratio of the two (target >= 0.8), `item_foldin.on.item_foldin_items` how many
  item vectors the "on" run wrote.
* `redis_bytes_per_user`: `MEMORY USAGE` of the version's user-vector hash over its fields
  vs `raw_vector_bytes` (k * 4); `seen_bytes_per_user` likewise for the seen sets.
* `worker_rss_mb_per_100k_users`: growth of the worker's resident memory from warmed-up to
  holding every benchmark user in its history table, scaled to 100,000 users.
* `scaling` (also `python -m bench.stream_bench --scaling`): 1, 2 and 4 workers in one
  consumer group on one 4-partition topic (a fresh topic and group per worker count). Warmed
  up until every worker has consumed, frozen, a backlog produced, resumed together and timed
  until the group has consumed it all. This machine has fewer cores than 4 workers (and
  shares them), so wall-clock rates say little: `events_per_cpu_s` is the backlog over the
  CPU seconds all the workers spent on it, i.e. per-worker events per CPU-second, and
  `per_worker_vs_one` compares it with one worker's (target >= 0.9 for 2 workers: adding a
  worker costs no per-event work). `events_per_s` (wall, all workers) is reported beside it.
  `events_per_busy_cpu_s` / `busy_per_worker_vs_one` take out each worker's idle CPU rate
  (measured for 10 s while caught up, just before) times the backlog's wall time: on a loaded
  machine the wall time stretches and the idle share with it, which is not a cost of the
  events. `mean_batch_events`: events per fold-in batch during the backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import redis
from confluent_kafka import Producer

from recsys.kafka import ensure_topics
from recsys.keys import Keys
from recsys.modelstore import activate_version, pack_gram, stage_model_version
from recsys.sequence_model import pack_tower, random_weights, tower_manifest
from recsys.settings import Settings, load_settings
from shell.harness import RoleProcess, Samples, delta, histogram_quantile, total
from shell.localstack import LocalStack, free_port

log = logging.getLogger("bench.stream")

FACTORS = 64
N_ITEMS = 50_000
NEW_ITEMS = 10_000  # --item-foldin: items of the events the published version does not know
FRESH_RATE = 1_000  # events/s
TYPES = np.array(["view", "click", "addtocart", "transaction"])
TYPE_P = np.array([0.90, 0.05, 0.04, 0.01])
REPO = Path(__file__).resolve().parents[1]


# --- data ---------------------------------------------------------------------------------
def _publish_model(client: redis.Redis, keys: Keys, rng: np.random.Generator,
                   model_kind: str = "als", known_items: int = N_ITEMS) -> list[str]:
    items = [f"item-{i}" for i in range(known_items)]
    factors = (rng.standard_normal((known_items, FACTORS)) * 0.1).astype(np.float32)
    manifest = {"version": "bench", "factors": FACTORS, "regularization": 0.05, "alpha": 2.0,
                "snapshot": {"latest_event_ms": 0, "offsets": {}}}
    tower = None
    if model_kind == "neural":
        defaults = Settings.model_fields
        window = defaults["neural_window"].default
        hidden = defaults["neural_hidden"].default
        manifest.update(model_kind="neural", tower=tower_manifest(window, FACTORS, hidden))
        tower = pack_tower(random_weights(FACTORS, window, hidden, seed=1))
    stage_model_version(client, keys, "bench", items, factors, manifest, tower=tower)
    # The user Gram matrix a trainer publishes with its user vectors (the item fold-in's XtX).
    users = rng.standard_normal((10_000, FACTORS)) * 0.1
    client.set(keys.model_user_gram("bench"), pack_gram(users.T @ users))
    activate_version(client, keys, "bench")
    return items


class EventMaker:
    """Valid event JSON built directly (validation is the worker's job, not the producer's)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.8
        self.item_p = weights / weights.sum()
        self.serial = 0

    def batch(self, users: np.ndarray, timestamp_ms: int | None = None
              ) -> list[tuple[bytes, bytes]]:
        items = self.rng.choice(N_ITEMS, size=len(users), p=self.item_p)
        kinds = self.rng.choice(TYPES, size=len(users), p=TYPE_P)
        out = []
        for user, item, kind in zip(users, items, kinds, strict=True):
            self.serial += 1
            ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
            key = f"u{user}".encode()
            out.append((key, orjson.dumps({
                "event_id": f"b{self.serial}", "user_id": f"u{user}", "item_id": f"item-{item}",
                "event_type": str(kind), "timestamp": ts})))
        return out


def _producer(settings: Settings) -> Producer:
    return Producer(settings.kafka_config(**{"linger.ms": 1, "compression.type": "lz4",
                                             "queue.buffering.max.messages": 1_000_000}))


def _produce_all(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = _producer(settings)
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("benchmark events were not all delivered")
    return time.perf_counter() - started


def _produce_paced(settings: Settings, topic: str, maker: EventMaker, seconds: float,
                   user_base: int) -> int:
    """FRESH_RATE events/s in 10 ms ticks, each stamped with its send time."""
    producer = _producer(settings)
    per_tick = FRESH_RATE // 100
    ticks = int(seconds * 100)
    start = time.perf_counter()
    rng = np.random.default_rng(user_base)
    sent = 0
    for tick in range(ticks):
        target = start + tick * 0.01
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        users = user_base + rng.integers(0, 1_000_000, size=per_tick)
        for key, value in maker.batch(users):
            producer.produce(topic, key=key, value=value)
        sent += per_tick
        producer.poll(0)
    producer.flush(30)
    return sent


# --- the bare consumer (ceiling) --------------------------------------------------------------
async def _bare_consume(settings: Settings, topic: str, expected: int,
                        latency: bool = False, timeout: float = 300.0) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False, fetch_max_wait_ms=
                                settings.stream_fetch_max_wait_ms, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=1 << 20)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count, first, latencies = 0, None, []
        deadline = time.monotonic() + timeout
        while count < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            now_ms = time.time() * 1000
            for records in batches.values():
                if first is None and records:
                    first = time.perf_counter()
                count += len(records)
                if latency:
                    latencies += [now_ms - orjson.loads(r.value)["timestamp"] for r in records]
        elapsed = time.perf_counter() - (first or time.perf_counter())
        return {"count": count, "seconds": elapsed, "latencies_ms": latencies}
    finally:
        await consumer.stop()


# --- Faust alone (a second ceiling) -----------------------------------------------------------
def _faust_noop(expected: int) -> None:
    """Child process: the worker's own Faust app and topic with an agent that does nothing but
    count; prints the rate once it has seen `expected` events."""
    import faust

    from stream.app import create_app
    from stream.topics import interactions_topic

    settings = load_settings()
    app = create_app(settings)
    topic = interactions_topic(app, settings)
    state = {"n": 0, "t0": 0.0}

    @app.timer(1.0)
    async def progress() -> None:
        print(f"FAUST_NOOP_COUNT {state['n']}", flush=True)

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for _event in stream.events():
            if state["n"] == 0:
                state["t0"] = time.perf_counter()
            state["n"] += 1
            if state["n"] == expected:
                rate = expected / (time.perf_counter() - state["t0"])
                print(f"FAUST_NOOP_RATE {rate}", flush=True)

    faust.Worker(app, loglevel="WARNING", override_logging=False, quiet=True
                 ).execute_from_commandline()


def _faust_noop_rate(settings: Settings, expected: int, timeout: float = 180.0,
                     profile: Path | None = None) -> float:
    env = {**os.environ,
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "RECSYS_INTERACTIONS_TOPIC": settings.interactions_topic,
           "RECSYS_TOPIC_PARTITIONS": str(settings.topic_partitions),
           "RECSYS_STREAM_APP_ID": "bench-faust-noop"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.stream_bench", "--faust-noop",
                             str(expected)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    found: list[float] = []
    counts: list[str] = ["0"]

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            # Markers are searched, not matched at the start: Faust's console may prefix a line
            # with terminal control codes (seen: backspace + "show cursor" before the rate).
            if "FAUST_NOOP_COUNT" in line:
                counts.append(line.split("FAUST_NOOP_COUNT", 1)[1].split()[0])
            if "FAUST_NOOP_RATE" in line:
                found.append(float(line.split("FAUST_NOOP_RATE", 1)[1].split()[0]))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    profiler = _start_profiler(proc.pid, profile / "faust_noop.txt") if profile else None
    try:
        reader.join(timeout)
        _stop_profiler(profiler)
        if not found:
            log.error("the Faust no-op consumer saw %s of %d events in %.0fs", counts[-1],
                      expected, timeout)
            return float("nan")
        return found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- the worker -------------------------------------------------------------------------------
class Worker(RoleProcess):
    """The benchmarked `recsys stream` process."""

    def __init__(self, settings: Settings, logdir: Path, name: str = "worker",
                 item_foldin: bool = True) -> None:
        port = free_port()
        env = {**os.environ,
               # each worker its own Faust folder (tables), as on separate machines
               "RECSYS_DATA_DIR": str(logdir / f"{name}-data"),
               "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
               "REDIS_URL": settings.redis_url,
               "RECSYS_REDIS_NAMESPACE": settings.redis_namespace,
               "RECSYS_INTERACTIONS_TOPIC": settings.interactions_topic,
               "RECSYS_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
               "RECSYS_STREAM_APP_ID": settings.stream_app_id,
               "RECSYS_TOPIC_PARTITIONS": str(settings.topic_partitions),
               "RECSYS_STREAM_WEB_PORT": str(port),
               # The worker is frozen while the backlog is produced: keep its membership.
               "RECSYS_STREAM_SESSION_TIMEOUT_MS": "60000",
               "RECSYS_STREAM_ITEM_FOLDIN": "true" if item_foldin else "false",
               "RECSYS_LOG_LEVEL": "WARNING"}
        super().__init__(name, ["stream"], env, logdir, port=port, cwd=REPO)
        self.ps = psutil.Process(self.proc.pid)

    def samples(self) -> Samples:
        return self.metrics()

    def total(self, name: str, samples: Samples | None = None) -> float:
        return total(samples if samples is not None else self.samples(), name)

    def consumed(self) -> float:
        return self.total("recsys_stream_events_total")

    def wait(self, check, timeout: float, what: str, interval: float = 0.25) -> None:
        # Not too often: every scrape costs the worker CPU (the whole exposition is built).
        self.wait_for(check, timeout, what, interval)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)


# --- the run ------------------------------------------------------------------------------------
def _start_profiler(pid: int, out: Path) -> subprocess.Popen | None:
    """py-spy (if installed) sampling `pid` into a collapsed-stack file until stopped."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        log.warning("--profile: py-spy is not installed next to %s", sys.executable)
        return None
    return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--format", "raw",
                             "--rate", "250", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profiler(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(quick: bool = False, profile: Path | None = None, model_kind: str = "als",
        item_foldin: str = "on") -> dict[str, Any]:
    """One run with a version of `model_kind`; `both`: an ALS run, then a neural one, the
    neural figures under `neural` and their ratio to ALS beside them. `item_foldin` both:
    besides, two ALS runs with NEW_ITEMS items unknown to the version, item fold-in off then
    on, under `item_foldin` (`off`, `on` and their throughput ratio)."""
    results = run_one(quick, profile, "als" if model_kind == "both" else model_kind,
                      item_foldin=item_foldin != "off")
    if model_kind == "both":
        neural = run_one(quick, None, "neural")
        results["neural"] = neural
        results["neural_events_per_s_vs_als"] = neural["events_per_s"] / results["events_per_s"]
        results["neural_events_per_cpu_s_vs_als"] = (neural["events_per_cpu_s"]
                                                     / results["events_per_cpu_s"])
    try:
        results["scaling"] = run_scaling(quick)
    except Exception as exc:  # noqa: BLE001 - the single-worker figures still count
        log.error("scaling phase failed: %s", exc)
        results["scaling"] = {"error": f"{type(exc).__name__}: {exc}"}
    if item_foldin == "both":
        known = N_ITEMS - NEW_ITEMS
        off = run_one(quick, None, "als", item_foldin=False, known_items=known)
        on = run_one(quick, None, "als", item_foldin=True, known_items=known)
        results["item_foldin"] = {
            "off": off, "on": on,
            "events_per_s_vs_off": on["events_per_s"] / off["events_per_s"],
            "events_per_cpu_s_vs_off": on["events_per_cpu_s"] / off["events_per_cpu_s"]}
    return results


def run_one(quick: bool, profile: Path | None, model_kind: str, item_foldin: bool = True,
            known_items: int = N_ITEMS) -> dict[str, Any]:
    n_users = 10_000 if quick else 100_000
    n_events = 20_000 if quick else 200_000
    fresh_seconds = 6.0 if quick else 20.0
    rng = np.random.default_rng(42)
    results: dict[str, Any] = {"factors": FACTORS, "items": N_ITEMS, "events": n_events,
                               "users": n_users, "raw_vector_bytes": FACTORS * 4,
                               "model_kind": model_kind, "item_foldin": item_foldin,
                               "known_items": known_items}
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp, LocalStack() as stack:
        settings = load_settings(
            kafka_bootstrap_servers=stack.bootstrap_servers, redis_url=stack.redis_url,
            redis_namespace="bench", interactions_topic="bench.interactions",
            dead_letter_topic="bench.dlq", stream_app_id="bench-stream", topic_partitions=4)
        ceiling_topic = "bench.ceiling"
        ensure_topics(settings, extra={ceiling_topic: settings.topic_partitions})
        client = redis.Redis.from_url(stack.redis_url)
        keys = Keys(settings.redis_namespace)
        _publish_model(client, keys, rng, model_kind, known_items)
        maker = EventMaker(seed=1)

        worker = Worker(settings, Path(tmp), item_foldin=item_foldin)
        try:
            # Warm up: a few hundred events through the whole path.
            warm = maker.batch(rng.integers(10_000_000, 10_001_000, size=500))
            _produce_all(settings, settings.interactions_topic, warm)
            worker.wait(lambda: worker.consumed() >= len(warm), 120, "warm-up")
            time.sleep(1.0)
            rss_before = worker.rss()

            # Throughput: freeze, pre-produce the backlog, resume, time it.
            before = worker.consumed()
            worker.proc.send_signal(signal.SIGSTOP)
            users = np.concatenate([np.arange(n_users),
                                    rng.integers(0, n_users, size=n_events - n_users)])
            rng.shuffle(users)
            backlog = maker.batch(users, timestamp_ms=int(time.time() * 1000) - 60_000)
            produce_s = _produce_all(settings, settings.interactions_topic, backlog)
            _produce_all(settings, ceiling_topic, backlog)
            ceiling = asyncio.run(_bare_consume(settings, ceiling_topic, len(backlog)))
            results["ceiling_events_per_s"] = ceiling["count"] / ceiling["seconds"]
            results["produce_events_per_s"] = len(backlog) / produce_s

            profiler = (_start_profiler(worker.proc.pid, profile / "worker.txt")
                        if profile else None)
            started = time.perf_counter()
            worker.proc.send_signal(signal.SIGCONT)
            cpu_before = sum(worker.ps.cpu_times()[:2])
            worker.wait(lambda: worker.consumed() >= before + len(backlog), 900, "backlog",
                        interval=0.5)
            elapsed = time.perf_counter() - started
            _stop_profiler(profiler)
            results["events_per_s"] = len(backlog) / elapsed
            results["events_per_s_vs_ceiling"] = results["events_per_s"] / \
                results["ceiling_events_per_s"]
            # Contention-robust figure: events per CPU-second of the worker (all its threads).
            results["events_per_cpu_s"] = len(backlog) / (
                sum(worker.ps.cpu_times()[:2]) - cpu_before)
            results["load_average_1m"] = os.getloadavg()[0]
            # Every event so far through Faust alone (its own group, nothing done per event),
            # while the worker idles, caught up.
            results["faust_noop_events_per_s"] = _faust_noop_rate(
                settings, len(warm) + len(backlog), profile=profile)
            results["events_per_s_vs_faust_noop"] = results["events_per_s"] / \
                results["faust_noop_events_per_s"]
            samples = worker.samples()
            batch_count = worker.total("recsys_stream_batch_events_count", samples)
            batch_sum = worker.total("recsys_stream_batch_events_sum", samples)
            results["mean_batch_events"] = batch_sum / batch_count if batch_count else None
            vector_metric = ("recsys_stream_tower_seconds" if model_kind == "neural" else
                             "recsys_stream_foldin_seconds")
            results["foldin_s_per_batch"] = (
                worker.total(f"{vector_metric}_sum", samples)
                / max(1.0, worker.total(f"{vector_metric}_count", samples)))
            results["batch_s_mean"] = (worker.total("recsys_stream_batch_seconds_sum", samples)
                                       / max(1.0, batch_count))
            results["item_foldin_items"] = worker.total("recsys_stream_item_foldin_items_total",
                                                        samples)
            results["item_foldin_s_per_batch"] = (
                worker.total("recsys_stream_item_foldin_seconds_sum", samples)
                / max(1.0, worker.total("recsys_stream_item_foldin_seconds_count", samples)))

            # Memory: worker RSS growth for the users now in its table; Redis per user.
            time.sleep(1.0)
            grown = worker.rss() - rss_before
            results["worker_rss_mb_before"] = rss_before / 2**20
            results["worker_rss_mb_per_100k_users"] = grown / n_users * 100_000 / 2**20
            sample_users = [f"u{u}" for u in rng.choice(n_users, size=1000, replace=False)]
            # All vectors of a version live in one hash: its exact size over its fields.
            vectors_key = keys.user_vectors("bench")
            vec_bytes = client.memory_usage(vectors_key, samples=0) or 0
            seen = [client.memory_usage(keys.seen(u), samples=0) or 0 for u in sample_users]
            results["redis_bytes_per_user"] = vec_bytes / max(1, client.hlen(vectors_key))
            results["redis_vector_bytes_ratio"] = results["redis_bytes_per_user"] / (FACTORS * 4)
            results["seen_bytes_per_user"] = float(np.mean(seen))

            # Freshness at a fixed rate: the bare consumer first, then the worker.
            ceiling_fresh: dict[str, Any] = {}

            def bare() -> None:
                ceiling_fresh.update(asyncio.run(_bare_consume(
                    settings, "bench.fresh", int(fresh_seconds * FRESH_RATE), latency=True,
                    timeout=fresh_seconds + 60)))

            ensure_topics(settings, extra={"bench.fresh": settings.topic_partitions})
            reader = threading.Thread(target=bare)
            reader.start()
            time.sleep(1.0)  # let it join before the first event
            _produce_paced(settings, "bench.fresh", maker, fresh_seconds, 20_000_000)
            reader.join()
            lat = np.array(ceiling_fresh["latencies_ms"])
            results["ceiling_freshness_p50_ms"] = float(np.percentile(lat, 50))
            results["ceiling_freshness_p99_ms"] = float(np.percentile(lat, 99))

            base = worker.samples()
            before = worker.consumed()
            cpu_before, wall_before = sum(worker.ps.cpu_times()[:2]), time.perf_counter()
            sent = _produce_paced(settings, settings.interactions_topic, maker, fresh_seconds,
                                  30_000_000)
            worker.wait(lambda: worker.consumed() >= before + sent, 60, "paced events")
            results["worker_cpu_percent_at_1000_per_s"] = 100 * (
                sum(worker.ps.cpu_times()[:2]) - cpu_before) / (time.perf_counter() - wall_before)
            paced = delta(worker.samples(), base)
            results["freshness_events"] = sent
            for q in (50, 99):
                seconds = histogram_quantile(paced, "recsys_stream_freshness_seconds", q / 100)
                results[f"freshness_p{q}_ms"] = float("nan") if seconds is None else seconds * 1e3
            results["freshness_p99_vs_ceiling"] = results["freshness_p99_ms"] / \
                results["ceiling_freshness_p99_ms"]
        finally:
            worker.stop(timeout=30)
            client.close()
    return results


def run_scaling(quick: bool = False, workers: tuple[int, ...] = (1, 2, 4)) -> dict[str, Any]:
    """Per-worker throughput of 1, 2 and 4 workers on one topic (module docstring)."""
    n_events = 20_000 if quick else 100_000
    n_users = n_events // 2
    rng = np.random.default_rng(7)
    out: dict[str, Any] = {"events": n_events, "partitions": 4, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="stream-scaling-") as tmp, LocalStack() as stack:
        base = load_settings(
            kafka_bootstrap_servers=stack.bootstrap_servers, redis_url=stack.redis_url,
            redis_namespace="bench", topic_partitions=4)
        client = redis.Redis.from_url(stack.redis_url)
        _publish_model(client, Keys(base.redis_namespace), rng)
        maker = EventMaker(seed=3)
        for n in workers:
            settings = base.model_copy(update={
                "interactions_topic": f"bench.scale{n}", "dead_letter_topic": f"bench.dlq{n}",
                "stream_app_id": f"bench-scale{n}"})
            ensure_topics(settings)
            out[f"workers_{n}"] = _scaling_run(settings, maker, rng, n, n_users, n_events,
                                               Path(tmp) / f"w{n}")
        client.close()
    first = out[f"workers_{workers[0]}"]
    for n in workers:
        row = out[f"workers_{n}"]
        row["per_worker_vs_one"] = round(row["events_per_cpu_s"] / first["events_per_cpu_s"], 3)
        row["busy_per_worker_vs_one"] = round(row["events_per_busy_cpu_s"]
                                              / first["events_per_busy_cpu_s"], 3)
    return out


def _scaling_run(settings: Settings, maker: EventMaker, rng: np.random.Generator, n: int,
                 n_users: int, n_events: int, logdir: Path) -> dict[str, Any]:
    logdir.mkdir(parents=True)
    group = [Worker(settings, logdir, name=f"worker{i}") for i in range(n)]
    try:
        def consumed() -> float:
            return sum(w.consumed() for w in group)

        # Warm-up until every worker has consumed some: the group has settled on all of them
        sent = 0
        deadline = time.monotonic() + 240
        while True:
            warm = maker.batch(rng.integers(10_000_000, 10_100_000, size=400))
            _produce_all(settings, settings.interactions_topic, warm)
            sent += len(warm)
            group[0].wait(lambda s=sent: consumed() >= s, 180, "warm-up")
            if all(w.consumed() > 0 for w in group):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} workers: not every worker was assigned a partition")
            time.sleep(2.0)
        # Idle cost: CPU a caught-up worker spends per wall second (polls, timers,
        # heartbeats). On a loaded machine the backlog's wall time stretches, and so does
        # this share of the CPU seconds, whatever the events cost.
        idle_cpu = [sum(w.ps.cpu_times()[:2]) for w in group]
        idle_t0 = time.perf_counter()
        time.sleep(10.0)
        idle_rate = [(sum(w.ps.cpu_times()[:2]) - c) / (time.perf_counter() - idle_t0)
                     for w, c in zip(group, idle_cpu, strict=True)]
        batches = [(w.total("recsys_stream_batch_events_count"),
                    w.total("recsys_stream_batch_events_sum")) for w in group]
        before = consumed()
        for w in group:
            w.proc.send_signal(signal.SIGSTOP)
        users = rng.integers(0, n_users, size=n_events)
        backlog = maker.batch(users, timestamp_ms=int(time.time() * 1000) - 60_000)
        _produce_all(settings, settings.interactions_topic, backlog)
        cpu_before = [sum(w.ps.cpu_times()[:2]) for w in group]
        started = time.perf_counter()
        for w in group:
            w.proc.send_signal(signal.SIGCONT)
        group[0].wait(lambda: consumed() >= before + len(backlog), 900, "backlog",
                      interval=0.5)
        elapsed = time.perf_counter() - started
        cpu = [sum(w.ps.cpu_times()[:2]) - c for w, c in zip(group, cpu_before, strict=True)]
        busy = sum(max(c - r * elapsed, 1e-9) for c, r in zip(cpu, idle_rate, strict=True))
        count = sum(w.total("recsys_stream_batch_events_count") for w in group) - sum(
            b[0] for b in batches)
        summed = sum(w.total("recsys_stream_batch_events_sum") for w in group) - sum(
            b[1] for b in batches)
        return {"workers": n, "events_per_s": round(len(backlog) / elapsed, 1),
                "events_per_cpu_s": round(len(backlog) / sum(cpu), 1),
                "events_per_busy_cpu_s": round(len(backlog) / busy, 1),
                "idle_cpu_percent": [round(100 * r, 1) for r in idle_rate],
                "mean_batch_events": round(summed / count, 1) if count else None,
                "cpu_s": [round(c, 2) for c in cpu], "wall_s": round(elapsed, 2),
                "load_average_1m": os.getloadavg()[0]}
    finally:
        for w in group:
            w.stop(timeout=30)


def main(argv: list[str] | None = None) -> int:
    from recsys.blas import set_blas_threads
    from recsys.settings import get_settings

    set_blas_threads(get_settings().blas_threads)  # this process and the roles it starts
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample the worker with py-spy during the throughput phase; "
                             "collapsed stacks go to DIR/worker.txt")
    parser.add_argument("--model-kind", choices=["als", "neural", "both"], default="als",
                        help="the version the worker serves: ALS (fold-in), neural (user "
                        "tower), or both runs back to back with their throughput ratio")
    parser.add_argument("--item-foldin", choices=["off", "on", "both"], default="on",
                        help="the worker's item fold-in (stream_item_foldin); both: two ALS "
                        f"runs with {NEW_ITEMS:,} of the {N_ITEMS:,} items new to the version, "
                        "off then on, and their throughput ratio")
    parser.add_argument("--scaling", action="store_true",
                        help="only the 1/2/4-worker scaling phase")
    parser.add_argument("--faust-noop", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.faust_noop:
        _faust_noop(args.faust_noop)
        return 0
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.scaling:
        print(json.dumps(run_scaling(quick=args.quick), indent=2, default=float))
        return 0
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results = run(quick=args.quick, profile=args.profile, model_kind=args.model_kind,
                  item_foldin=args.item_foldin)
    rows = [
        ("events/s (one worker)", results["events_per_s"], results["ceiling_events_per_s"],
         ">= 5,000"),
        ("events/s vs Faust alone", results["events_per_s"], results["faust_noop_events_per_s"],
         ""),
        ("freshness p50 ms @1000/s", results["freshness_p50_ms"],
         results["ceiling_freshness_p50_ms"], ""),
        ("freshness p99 ms @1000/s", results["freshness_p99_ms"],
         results["ceiling_freshness_p99_ms"], "< 250"),
        ("Redis bytes per user vector", results["redis_bytes_per_user"],
         results["raw_vector_bytes"], "k*4 raw"),
    ]
    print("| figure | measured | same-run ceiling / raw | ratio | target |")
    print("|---|---|---|---|---|")
    for name, value, base, target in rows:
        print(f"| {name} | {value:,.1f} | {base:,.1f} | {value / base:.2f} | {target} |")
    if "neural" in results:
        n = results["neural"]
        print(f"| neural version: events/s | {n['events_per_s']:,.1f} | "
              f"{results['events_per_s']:,.1f} (ALS fold-in) | "
              f"{results['neural_events_per_s_vs_als']:.2f} | >= 0.5 |")
        print(f"| neural version: freshness p99 ms @1000/s | {n['freshness_p99_ms']:,.1f} | "
              f"{n['ceiling_freshness_p99_ms']:,.1f} | "
              f"{n['freshness_p99_ms'] / n['ceiling_freshness_p99_ms']:.2f} | < 250 |")
    if "item_foldin" in results:
        pair = results["item_foldin"]
        on, off = pair["on"], pair["off"]
        print(f"| item fold-in on: events/s | {on['events_per_s']:,.1f} | "
              f"{off['events_per_s']:,.1f} (off) | {pair['events_per_s_vs_off']:.2f} | "
              ">= 0.8 |")
        print(f"| item fold-in on: events/CPU-s | {on['events_per_cpu_s']:,.1f} | "
              f"{off['events_per_cpu_s']:,.1f} (off) | {pair['events_per_cpu_s_vs_off']:.2f} "
              "| |")
        print(f"| item fold-in on: freshness p99 ms @1000/s | {on['freshness_p99_ms']:,.1f} | "
              f"{off['freshness_p99_ms']:,.1f} (off) | "
              f"{on['freshness_p99_ms'] / off['freshness_p99_ms']:.2f} | < 250 |")
    print(f"\nworker RSS: {results['worker_rss_mb_before']:.0f} MB warmed up, "
          f"+{results['worker_rss_mb_per_100k_users']:.0f} MB per 100,000 users in its table")
    print(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
