"""Fault-injection suite (`make chaos`, `recsys chaos`): each scenario injects one fault into
the real local stack and real role processes, measures what the system promised, and says
pass or fail.

    python -m bench.chaos [--only NAME ...] [--out reports/chaos.json] [--list]

One local stack (Tansu broker, redis-server) serves every scenario; each scenario has its own
topics, Redis namespace and directories, and starts its own redis-server when it kills,
restarts, fills or watches one. Roles run as `recsys <role>` child processes
(shell.harness.RoleProcess) and are stopped by their own handle when the scenario ends.
Loopback only; every loop is bounded in count and time.

Lost and double-counted events are counted by event id: every event of a stream scenario has
an item of its own and one shared timestamp, so its item's trending score in the 7-day window
is exactly (number of times it was applied) x weight x one known factor, and its user's seen
set must hold the item.

Writes `reports/chaos.json` (one entry per scenario: name, injected, outcome, passed,
seconds) and prints a table. Exit code 0 only when every scenario that ran passed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import select
import signal
import socket
import statistics
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis as redis_lib

from recsys.keys import POPULARITY_WINDOWS, Keys
from recsys.settings import Settings, get_settings, load_settings
from shell.harness import RoleProcess, total
from shell.localstack import LocalStack, ManagedProcess, free_port, start_redis

log = logging.getLogger("bench.chaos")

REPO = Path(__file__).resolve().parents[1]
# The window whose decay over a scenario's few minutes is negligible: scores stay countable.
COUNT_WINDOW = "7d"
# compose's Redis persistence (docker-compose.yml): AOF, fsync once a second.
AOF_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec")


@dataclass
class Result:
    name: str
    injected: str
    outcome: dict[str, Any]
    passed: bool
    seconds: float
    error: str | None = None


# A scenario injects its fault into a Lab and returns (measured outcome, passed).
Scenario = Callable[["Lab"], tuple[dict[str, Any], bool]]


# --- the lab: what every scenario gets ---------------------------------------------------------
@dataclass
class Lab:
    """The shared broker and Redis, a work directory, and the roles and servers a scenario
    started (stopped by `close`)."""

    bootstrap_servers: str
    redis_url: str
    workdir: Path
    roles: list[RoleProcess] = field(default_factory=list)
    servers: list[ManagedProcess] = field(default_factory=list)

    def settings(self, name: str, redis_url: str | None = None, **overrides: Any) -> Settings:
        run = f"{name}-{uuid.uuid4().hex[:6]}"
        base = self.workdir / run
        return load_settings(
            kafka_bootstrap_servers=self.bootstrap_servers,
            redis_url=redis_url or self.redis_url, redis_namespace=run,
            interactions_topic=f"{run}.interactions", dead_letter_topic=f"{run}.dlq",
            stream_app_id=f"{run}-stream", trainer_group_id=f"{run}-trainer",
            data_dir=base / "data", model_dir=base / "models", **overrides)

    def env(self, settings: Settings, **overrides: Any) -> dict[str, str]:
        """The environment that gives a role exactly these settings."""
        values = {**settings.model_dump(exclude_unset=True), **overrides}
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
               "REDIS_URL": settings.redis_url}
        for key, value in values.items():
            if isinstance(value, dict):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"RECSYS_{key.upper()}"] = str(value)
        return env

    def role(self, name: str, args: list[str], settings: Settings, port: int | None = None,
             **overrides: Any) -> RoleProcess:
        logdir = self.workdir / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        proc = RoleProcess(f"{settings.redis_namespace}-{name}", args,
                           self.env(settings, **overrides), logdir, port=port, cwd=REPO)
        self.roles.append(proc)
        return proc

    def stream_worker(self, settings: Settings, name: str, **overrides: Any) -> RoleProcess:
        port = free_port()
        return self.role(name, ["stream"], settings, port=port, stream_web_port=port,
                         stream_worker_id=name, stream_session_timeout_ms=6000, **overrides)

    def wait_assigned(self, worker: RoleProcess, timeout: float = 90.0) -> None:
        worker.wait_for(lambda: worker.metric("recsys_stream_assigned_partitions") > 0,
                        timeout, "partitions assigned")

    def redis_server(self, *extra_args: str, port: int | None = None,
                     directory: Path | None = None) -> ManagedProcess:
        """A redis-server of the scenario's own (`directory`: a restart on the same data)."""
        directory = directory or self.workdir / f"redis-{len(self.servers)}"
        directory.mkdir(parents=True, exist_ok=True)
        server = start_redis(directory, port, extra_args=extra_args)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for role in self.roles:  # all at once: a group losing members one by one rebalances
            role.stop(wait=False)
        for role in self.roles:
            role.stop()
        for server in self.servers:
            server.stop()
        self.roles.clear()
        self.servers.clear()


# --- events and accounting by event id -------------------------------------------------------
def event_json(event_id: str, user: str, item: str, ts_ms: int, kind: str = "view") -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "item_id": item,
                         "event_type": kind, "timestamp": ts_ms})


class Feeder:
    """Produces events `c{n}` (user `u{n % users}`, item `k{n}`, one shared timestamp) at a
    steady rate in a thread until stopped or `limit` is reached; remembers what Kafka acked."""

    def __init__(self, settings: Settings, rate: float, users: int = 200,
                 limit: int = 20_000, ts_ms: int | None = None) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.rate, self.users, self.limit = rate, users, limit
        self.ts_ms = ts_ms if ts_ms is not None else int(time.time() * 1000) - 60_000
        self.producer = Producer(settings.kafka_config(**{"linger.ms": 5}))
        self.acked: list[int] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def event(self, n: int) -> tuple[str, str]:
        return f"u{n % self.users}", f"k{n}"

    def _ack(self, n: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                self.acked.append(n)
            else:
                self.failed += 1
        return on_delivery

    def _run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stop.is_set() and n < self.limit:
            due = int((time.monotonic() - started) * self.rate)
            while n < min(due, self.limit):
                user, item = self.event(n)
                try:
                    self.producer.produce(self.settings.interactions_topic, key=user.encode(),
                                          value=event_json(f"c{n}", user, item, self.ts_ms),
                                          on_delivery=self._ack(n))
                except BufferError:  # ahead of the broker: let librdkafka drain, then resend
                    self.producer.poll(0.05)
                    continue
                n += 1
            self.producer.poll(0.01)
        self.producer.flush(60)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)


def account(client: redis_lib.Redis, keys: Keys, events: list[tuple[str, str]], ts_ms: int,
            weight: float) -> dict[str, list[str]]:
    """For events (user, item) that each have an item of their own and share `ts_ms`: which
    never reached trending (`lost`, counted by the item's score), which reached it more than
    once (`double`), and which are missing from their user's seen set (`not_seen`)."""
    items = [item for _, item in events]
    ref = client.get(keys.popularity_ref(COUNT_WINDOW))
    factor = 1.0 if ref is None else math.exp(
        (ts_ms / 1000.0 - float(ref)) / POPULARITY_WINDOWS[COUNT_WINDOW])
    scores: list[float | None] = []
    for start in range(0, len(items), 5000):
        scores += client.zmscore(keys.popularity(COUNT_WINDOW), items[start:start + 5000]) \
            if ref is not None else [None] * len(items[start:start + 5000])
    with client.pipeline(transaction=False) as pipe:
        for user, item in events:
            pipe.zscore(keys.seen(user), item)
        seen = pipe.execute()
    lost, double, not_seen = [], [], []
    for (_, item), score, in_seen in zip(events, scores, seen, strict=True):
        times = 0 if score is None else round(score / (weight * factor))
        if times == 0:
            lost.append(item)
        elif times > 1:
            double.append(item)
        if in_seen is None:
            not_seen.append(item)
    return {"lost": lost, "double": double, "not_seen": not_seen}


def wait_accounted(client: redis_lib.Redis, keys: Keys, events: list[tuple[str, str]],
                   ts_ms: int, weight: float, worker: RoleProcess, timeout: float
                   ) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        result = account(client, keys, events, ts_ms, weight)
        if not (result["lost"] or result["not_seen"]) or time.monotonic() > deadline \
                or not worker.alive():
            return result
        time.sleep(0.5)


def read_topic(settings: Settings, topic: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every record of `topic` from the beginning, as JSON (stops after a quiet second)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(settings.kafka_config(**{"group.id": f"chaos-{uuid.uuid4().hex[:8]}",
                                                 "enable.auto.commit": False}))
    metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
    partitions = list(metadata.partitions) if metadata and metadata.partitions else []
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[dict[str, Any]] = []
    deadline, quiet_since = time.monotonic() + timeout, time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.5:
            for msg in consumer.consume(1000, 0.3):
                if msg.error() is None:
                    quiet_since = time.monotonic()
                    with contextlib.suppress(orjson.JSONDecodeError):
                        out.append(orjson.loads(msg.value()))
    finally:
        consumer.close()
    return out


def _ensure_topics(settings: Settings) -> None:
    from recsys.kafka import ensure_topics

    ensure_topics(settings)


def _view_weight(settings: Settings) -> float:
    return float(settings.event_weights["view"])


def _sample(items: list[str], n: int = 5) -> list[str]:
    return items[:n]


def _ranges(items: list[str], most: int = 8) -> list[str]:
    """Feeder items `k{n}` as runs of consecutive n ("3741-3790"): where in the stream."""
    numbers = sorted(int(i[1:]) for i in items if i[:1] == "k" and i[1:].isdigit())
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n - runs[-1][1] <= 5:  # small gaps: other users' events in between
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [f"{a}-{b}" if a != b else str(a) for a, b in runs[:most]]


# --- scenarios ----------------------------------------------------------------------------------
def broker_pause_ingest(lab: Lab) -> tuple[dict[str, Any], bool]:
    """1. Broker SIGSTOPped 5 s during HTTP ingest (bench.ingest_pause_bench, its own stack)."""
    from bench.ingest_pause_bench import measure

    r = measure(events=20_000, pause=5.0)
    outcome = {k: r[k] for k in ("events_posted", "accepted", "refused_503", "lost", "statuses",
                                 "get_p99_during_pause_ms", "get_p99_ms",
                                 "delivery_failures_counted")}
    p99 = r["get_p99_during_pause_ms"]
    return outcome, r["lost"] == 0 and p99 is not None and p99 < 250.0


def worker_kill9(lab: Lab, kills: int = 5) -> tuple[dict[str, Any], bool]:
    """2. Stream worker kill -9 five times under load; then one worker runs to the end."""
    settings = lab.settings("kill9")
    _ensure_topics(settings)
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_namespace)
    feeder = Feeder(settings, rate=150.0, limit=30_000).start()
    killed_at: list[int] = []
    for n in range(kills):
        worker = lab.stream_worker(settings, f"w{n}")
        lab.wait_assigned(worker)
        time.sleep(2.0)  # processing under load, mid-batch at the kill
        killed_at.append(len(feeder.acked))
        worker.kill()
    last = lab.stream_worker(settings, "last")
    lab.wait_assigned(last)
    time.sleep(2.0)
    feeder.stop()
    events = [feeder.event(n) for n in sorted(feeder.acked)]
    result = wait_accounted(client, keys, events, feeder.ts_ms, _view_weight(settings), last,
                            timeout=120)
    outcome = {"events_acked_by_kafka": len(events), "kills": kills,
               "events_acked_at_each_kill": killed_at,
               "lost_from_trending": len(result["lost"]),
               "missing_from_seen": len(result["not_seen"]),
               "double_counted": len(result["double"]),
               "lost_ranges": _ranges(result["lost"]),
               "not_seen_ranges": _ranges(result["not_seen"]),
               "double_ranges": _ranges(result["double"]),
               "duplicates_dropped": last.metric("recsys_stream_events_total",
                                                 outcome="duplicate")}
    return outcome, bool(events) and not any(result.values())


def redis_restart_aof(lab: Lab) -> tuple[dict[str, Any], bool]:
    """3. Redis (AOF on, fsync every second as in compose) killed -9 mid-stream, restarted on
    the same port and directory 2 s later."""
    server = lab.redis_server(*AOF_ARGS)
    url = f"redis://127.0.0.1:{server.port}/0"
    settings = lab.settings("redis-restart", redis_url=url)
    _ensure_topics(settings)
    client = redis_lib.Redis.from_url(url, socket_timeout=5)
    keys = Keys(settings.redis_namespace)
    worker = lab.stream_worker(settings, "w")
    lab.wait_assigned(worker)
    feeder = Feeder(settings, rate=200.0, limit=4000).start()
    time.sleep(5.0)
    acked_at_kill = len(feeder.acked)
    server.proc.kill()
    server.proc.wait(10)
    time.sleep(2.0)
    restart_started = time.monotonic()
    lab.redis_server(*AOF_ARGS, port=server.port, directory=server.logfile.parent)
    outcome: dict[str, Any] = {"acked_at_kill": acked_at_kill, "redis_down_s": round(
        2.0 + time.monotonic() - restart_started, 1)}
    feeder._thread.join(60)
    feeder.stop()
    events = [feeder.event(n) for n in sorted(feeder.acked)]
    result = wait_accounted(client, keys, events, feeder.ts_ms, _view_weight(settings), worker,
                            timeout=90)
    outcome.update({"events_acked_by_kafka": len(events),
                    "lost_from_trending": len(result["lost"]),
                    "missing_from_seen": len(result["not_seen"]),
                    "double_counted": len(result["double"]),
                    "lost_sample": _sample(result["lost"]),
                    "worker_alive": worker.alive(),
                    "redis_unavailable_total": _safe_metric(worker,
                                                            "recsys_stream_redis_unavailable_total")})
    return outcome, bool(events) and not any(result.values())


def _safe_metric(role: RoleProcess, name: str, **labels: str) -> float | None:
    try:
        return role.metric(name, **labels)
    except OSError:
        return None


def future_and_past_events(lab: Lab) -> tuple[dict[str, Any], bool]:
    """4. One event 23 h in the future and one 400 days old among ordinary events."""
    settings = lab.settings("event-time")
    _ensure_topics(settings)
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_namespace)
    worker = lab.stream_worker(settings, "w")
    lab.wait_assigned(worker)
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_config(**{"linger.ms": 5}))
    now = int(time.time() * 1000)
    # item n{j} gets 5 * (j + 1) views: a known ranking n9 > n8 > ... > n0
    ordinary = [(f"o{j}-{c}", f"u{c % 50}", f"n{j}") for j in range(10) for c in range(5 * (j + 1))]
    odd = [("future-1", "u-clock", "future-item", now + 23 * 3600 * 1000),
           ("past-1", "u-clock", "past-item", now - 400 * 86_400 * 1000)]
    half = len(ordinary) // 2
    for event_id, user, item in ordinary[:half]:
        producer.produce(settings.interactions_topic, key=user.encode(),
                         value=event_json(event_id, user, item, now))
    for event_id, user, item, ts in odd:
        producer.produce(settings.interactions_topic, key=user.encode(),
                         value=event_json(event_id, user, item, ts))
    for event_id, user, item in ordinary[half:]:
        producer.produce(settings.interactions_topic, key=user.encode(),
                         value=event_json(event_id, user, item, int(time.time() * 1000)))
    producer.flush(30)
    expected = len(ordinary) + len(odd)
    worker.wait_for(lambda: worker.metric("recsys_stream_events_total") >= expected, 60,
                    "every event consumed")
    top = [m.decode() for m in client.zrevrange(keys.popularity("1h"), 0, 11)]
    ref = client.get(keys.popularity_ref("1h"))
    clamped = worker.metric("recsys_stream_events_clamped_total")
    want = [f"n{j}" for j in range(9, -1, -1)]
    ranked = [i for i in top if i.startswith("n")]
    future_rank = top.index("future-item") if "future-item" in top else None
    outcome = {"top_1h": top, "clamped_total": clamped,
               "landmark_ahead_of_now_s": round(float(ref) - time.time(), 1) if ref else None,
               "future_item_rank": future_rank}
    passed = (ranked == want and clamped >= 1 and ref is not None
              and float(ref) <= time.time() + 1 and (future_rank is None or future_rank >= 8))
    return outcome, passed


def same_event_id_two_users(lab: Lab) -> tuple[dict[str, Any], bool]:
    """5. Two producers number their events alike: event id "1" from two users."""
    import pandas as pd

    settings = lab.settings("same-id")
    _ensure_topics(settings)
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_namespace)
    worker = lab.stream_worker(settings, "w")
    lab.wait_assigned(worker)
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_config())
    ts = int(time.time() * 1000) - 60_000
    pairs = [("shop-a-user", "a-item"), ("shop-b-user", "b-item")]
    for user, item in pairs:
        producer.produce(settings.interactions_topic, key=user.encode(),
                         value=event_json("1", user, item, ts))
    producer.flush(30)
    result = wait_accounted(client, keys, pairs, ts, _view_weight(settings), worker, timeout=30)
    trainer = lab.role("trainer", ["train", "--once", "--from-file", "synthetic", "--events",
                                   "3000"], settings)
    code = trainer.proc.wait(240)
    frames = [pd.read_parquet(p, columns=["event_id", "user_id", "item_id"])
              for p in (settings.data_dir / "history").glob("part-*.parquet")]
    history = pd.concat(frames) if frames else pd.DataFrame(columns=["event_id", "user_id"])
    kept = sorted(history.loc[history["event_id"] == "1", "user_id"].astype(str))
    outcome = {"stream_lost": result["lost"], "stream_double": result["double"],
               "stream_not_seen": result["not_seen"],
               "trainer_exit_code": code, "trainer_history_users_with_id_1": kept}
    return outcome, (not any(result.values())
                     and kept == sorted(u for u, _ in pairs))


def _train_once(lab: Lab, settings: Settings, name: str, *args: str, timeout: float = 300,
                **overrides: Any) -> tuple[int, str]:
    trainer = lab.role(name, ["train", "--once", *args], settings, **overrides)
    code = trainer.proc.wait(timeout)
    return code, trainer.tail(40)


def _versions_in_redis(client: redis_lib.Redis, keys: Keys) -> set[str]:
    from trainer.publish import redis_versions

    return redis_versions(client, keys)


def _current(client: redis_lib.Redis, keys: Keys) -> str | None:
    value = client.get(keys.current_model)
    return value.decode() if value else None


def trainer_kill9_before_activation(lab: Lab) -> tuple[dict[str, Any], bool]:
    """6. A real SIGKILL between staging and activation. Keyspace notifications of the
    scenario's own Redis tell the moment the new version's manifest (the last staged key) is
    written; the trainer is stopped (SIGSTOP) right there, readers are checked, then it is
    killed -9. If activation won the race, the next try stops it at its first staged key."""
    server = lab.redis_server()
    url = f"redis://127.0.0.1:{server.port}/0"
    # a candidate that is any good at all is published: the scenario needs a second version
    settings = lab.settings("trainer-kill", redis_url=url, trainer_lease_ttl_s=5.0,
                            trainer_gate_tolerance=0.99)
    client = redis_lib.Redis.from_url(url)
    keys = Keys(settings.redis_namespace)
    code, tail = _train_once(lab, settings, "seed", "--from-file", "synthetic", "--events",
                             "20000", "--no-consume")
    first = _current(client, keys)
    if code != 0 or first is None:
        return {"seed_exit_code": code, "seed_log": tail[-500:]}, False
    client.config_set("notify-keyspace-events", "KA")
    outcome: dict[str, Any] = {"serving_before": first, "tries": []}
    hit = None
    for trigger in ("manifest", "first_key"):
        pubsub = client.pubsub()
        pubsub.psubscribe(f"__keyspace@0__:{settings.redis_namespace}:*")
        pubsub.get_message(timeout=1)  # the subscription confirmation
        trainer = lab.role(f"victim-{trigger}", ["train", "--once", "--no-consume"], settings)
        staged = None
        deadline = time.monotonic() + 300
        while staged is None and time.monotonic() < deadline and trainer.alive():
            msg = pubsub.get_message(timeout=0.5)
            if not msg or msg["type"] != "pmessage":
                continue
            key = msg["channel"].decode().split(":", 1)[1]
            version = keys.version_of(key)
            if version is None or version == first:
                continue
            if trigger == "manifest" and key != keys.model_manifest(version):
                continue
            os.kill(trainer.pid, signal.SIGSTOP)
            staged = version
        pubsub.close()
        current = _current(client, keys)
        attempt = {"trigger": trigger, "staged": staged, "current_when_stopped": current}
        outcome["tries"].append(attempt)
        if staged is None:
            attempt["trainer_log"] = trainer.tail(15)[-600:]
            trainer.kill()
            break
        # What a reader sees while the trainer sits between staging and activation:
        first_complete = all(client.exists(k) for k in (
            keys.model_manifest(first), keys.model_item_ids(first),
            keys.model_item_factors(first)))
        attempt["reader_sees"] = current
        attempt["served_version_complete"] = first_complete
        trainer.kill()
        attempt["staged_keys_left_after_kill"] = staged in _versions_in_redis(client, keys)
        attempt["dir_on_disk_after_kill"] = (settings.model_dir / staged).exists()
        if current == first:
            hit = attempt
            break
        first = current or first  # activation won the race: try again from the new version
    if hit is None:
        return outcome, False
    started = time.monotonic()
    code, _ = _train_once(lab, settings, "next", "--no-consume",
                          trainer_orphan_grace_s=0, trainer_lease_wait_s=30)
    next_log = lab.roles[-1].log_path.read_text(errors="replace")
    current = _current(client, keys)
    from trainer.publish import current_and_previous

    now_current, previous = current_and_previous(client, keys)
    live = {v for v in [now_current, *previous] if v}
    orphans = sorted(_versions_in_redis(client, keys) - live)
    killed = hit["staged"]
    on_disk = (settings.model_dir / killed).exists()
    outcome.update({"next_run_exit_code": code, "serving_after_next_run": current,
                    "redis_versions_not_live_after_next_run": orphans,
                    "killed_version_dir_on_disk": on_disk,
                    "next_run_s": round(time.monotonic() - started, 1),
                    "next_run_logged_orphans": "orphaned model versions" in next_log})
    passed = (hit["reader_sees"] != killed and hit["served_version_complete"]
              and code == 0 and not orphans and current is not None and current != killed
              and not on_disk)
    return outcome, passed


def two_trainers(lab: Lab) -> tuple[dict[str, Any], bool]:
    """7. Two `recsys train --once` started in the same instant on the same deployment."""
    settings = lab.settings("two-trainers")
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_namespace)
    args = ["train", "--once", "--from-file", "synthetic", "--events", "8000", "--no-consume"]
    pair = [lab.role(f"t{n}", args, settings) for n in range(2)]
    codes = [t.proc.wait(300) for t in pair]
    winner = [t for t, c in zip(pair, codes, strict=True) if c == 0]
    loser = [t for t, c in zip(pair, codes, strict=True) if c == 3]
    current = _current(client, keys)
    announced = None
    if winner:
        for line in winner[0].tail(40).splitlines():
            if line.startswith("published "):
                announced = line.split()[1].rstrip(":")
    consistent = False
    if current is not None:
        manifest = orjson.loads(client.get(keys.model_manifest(current)) or b"{}")
        factors = client.strlen(keys.model_item_factors(current))
        consistent = factors == 4 * int(manifest.get("n_items", -1)) * int(
            manifest.get("factors", -1))
    loser_says = loser[0].tail(10) if loser else ""
    outcome = {"exit_codes": sorted(codes), "current": current, "winner_published": announced,
               "model_consistent": consistent,
               "loser_message": next((ln for ln in loser_says.splitlines()
                                      if "lease" in ln), "")[-200:],
               "versions_in_redis": len(_versions_in_redis(client, keys))}
    passed = (sorted(codes) == [0, 3] and current is not None and current == announced
              and consistent and "another trainer holds the lease" in loser_says)
    return outcome, passed


def corrupt_history_file(lab: Lab) -> tuple[dict[str, Any], bool]:
    """8. A history Parquet file cut in half (a disk or copy fault) before the next run."""
    settings = lab.settings("corrupt-history")
    for seed in (1, 2):  # two history files: one is corrupted, the other is trained on
        code, tail = _train_once(lab, settings, f"seed{seed}", "--from-file", "synthetic",
                                 "--events", "8000", "--seed", str(seed), "--no-consume")
    history = settings.data_dir / "history"
    parts = sorted(history.glob("part-*.parquet"))
    if code != 0 or len(parts) < 2:
        return {"seed_exit_code": code, "seed_log": tail[-500:]}, False
    victim = parts[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    code, tail = _train_once(lab, settings, "next", "--no-consume", trainer_gate_tolerance=0.99)
    quarantined = sorted(p.name for p in (history / settings.trainer_quarantine_dir).glob("*"))
    outcome = {"corrupted": victim.name, "bytes_kept": len(data) // 2,
               "next_run_exit_code": code, "quarantined": quarantined,
               "still_in_history": victim.exists(),
               "next_run_result": next((ln for ln in tail.splitlines()
                                        if ln.startswith(("published", "rejected"))), "")[:160]}
    if code != 0:
        outcome["next_run_log"] = tail[-800:]
    passed = (code == 0 and not victim.exists()
              and any(q.startswith(victim.name) for q in quarantined))
    return outcome, passed


def _send_huge(port: int, total_bytes: int, chunked: bool, timeout: float = 60.0
               ) -> dict[str, Any]:
    """POST a body of `total_bytes` to /v1/events in 1 MiB pieces, stopping as soon as the
    server answers; returns the status, bytes sent and seconds."""
    head = (f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n")
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else \
        f"Content-Length: {total_bytes}\r\n\r\n"
    piece = b"[" + b" " * ((1 << 20) - 1)
    sent, started, answer = 0, time.monotonic(), b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        while sent < total_bytes and time.monotonic() - started < timeout:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            data = piece[: min(len(piece), total_bytes - sent)]
            frame = f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
            try:
                sock.sendall(frame)
            except OSError:  # the server answered and closed while we were still sending
                break
            sent += len(data)
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            answer = sock.recv(4096)
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else None
    return {"status": status, "mb_sent": round(sent / (1 << 20), 1),
            "seconds": round(time.monotonic() - started, 2)}


def huge_body(lab: Lab) -> tuple[dict[str, Any], bool]:
    """9. A 500 MB request body, declared (Content-Length) and undeclared (chunked)."""
    settings = lab.settings("huge-body")
    port = free_port()
    api = lab.role("api", ["serve", "--port", str(port)], settings)
    api.wait_for(lambda: urllib.request.urlopen(  # noqa: S310 - loopback, our own API
        f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200, 90, "/healthz")
    proc = psutil.Process(api.pid)
    rss_before = proc.memory_info().rss
    peak = [rss_before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    size = 500 * 1000 * 1000
    declared = _send_huge(port, size, chunked=False)
    chunked = _send_huge(port, size, chunked=True)
    done.set()
    watcher.join()
    growth_mb = round((peak[0] - rss_before) / (1 << 20), 1)
    limit_mb = settings.api_max_body_bytes / (1 << 20)
    outcome = {"declared": declared, "chunked": chunked, "api_max_body_mb": round(limit_mb, 1),
               "api_rss_before_mb": round(rss_before / (1 << 20), 1),
               "api_rss_peak_growth_mb": growth_mb, "api_alive": api.alive()}
    passed = (declared["status"] == 413 and chunked["status"] == 413
              and declared["mb_sent"] < 64 and chunked["mb_sent"] < limit_mb + 64
              and growth_mb < max(64.0, 2 * limit_mb) and api.alive())
    return outcome, passed


def redis_out_of_memory(lab: Lab) -> tuple[dict[str, Any], bool]:
    """10. Redis full (maxmemory below what it holds, policy volatile-lru as in compose)."""
    server = lab.redis_server("--maxmemory-policy", "volatile-lru")
    url = f"redis://127.0.0.1:{server.port}/0"
    settings = lab.settings("redis-oom", redis_url=url)
    _ensure_topics(settings)
    client = redis_lib.Redis.from_url(url)
    keys = Keys(settings.redis_namespace)
    worker = lab.stream_worker(settings, "w")
    lab.wait_assigned(worker)
    client.set("chaos:filler", b"x" * (4 << 20))  # no TTL: volatile-lru cannot evict it
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used - (512 << 10)))
    n_events = 300
    feeder = Feeder(settings, rate=300.0, limit=n_events).start()
    feeder._thread.join(60)
    feeder.stop()
    worker.wait_for(lambda: worker.metric("recsys_stream_events_total") >= n_events, 60,
                    "every event consumed")
    busy = psutil.Process(worker.pid)
    busy.cpu_percent(None)
    time.sleep(5.0)
    cpu_idle_after = busy.cpu_percent(None)
    dead = [r for r in read_topic(settings, settings.dead_letter_topic) if isinstance(r, dict)]
    reasons: dict[str, int] = {}
    dead_items: set[str] = set()
    for record in dead:
        reason = str(record.get("reason"))
        reasons[reason] = reasons.get(reason, 0) + 1
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            dead_items.add(orjson.loads(record.get("payload") or b"null")["item_id"])
    # Redis evicts the keys that have a TTL (seen sets, batch guards) before it refuses, so
    # some writes land: every event must either count in trending or be dead-lettered.
    events = [feeder.event(n) for n in sorted(feeder.acked)]
    applied = account(client, keys, events, feeder.ts_ms, _view_weight(settings))
    silently_lost = [item for item in applied["lost"] if item not in dead_items]
    healthz = healthz_status(worker.port)
    outcome = {"events": len(events), "dead_letter_topic_reasons": reasons,
               "applied": len(events) - len(applied["lost"]),
               "neither_applied_nor_dead_lettered": len(silently_lost),
               "neither_sample": _sample(silently_lost),
               "dead_letters_metric_redis_oom": worker.metric("recsys_stream_dead_letters_total",
                                                              reason="redis_oom"),
               "rejected_metric": worker.metric("recsys_stream_redis_rejected_total"),
               "worker_alive": worker.alive(), "worker_cpu_percent_5s_after": cpu_idle_after,
               "healthz_status": healthz}
    passed = (reasons.get("redis_oom", 0) > 0 and set(reasons) == {"redis_oom"}
              and not silently_lost and worker.alive() and cpu_idle_after < 30.0)
    return outcome, passed


def broker_pause_past_delivery_timeout(lab: Lab) -> tuple[dict[str, Any], bool]:
    """11. Broker SIGSTOPped longer than the API's delivery timeout (3 s here, 8 s pause)."""
    from bench.ingest_pause_bench import measure

    r = measure(events=40_000, pause=8.0, read_timeout=20.0, extra_env={
        "RECSYS_API_PRODUCE_DELIVERY_TIMEOUT_S": "3", "RECSYS_API_PRODUCE_STALL_S": "2"})
    outcome = {k: r[k] for k in ("events_posted", "accepted", "refused_503", "lost", "statuses",
                                 "delivery_failures_counted", "get_p99_during_pause_ms")}
    # Past the delivery timeout an event answered 202 may be lost, but never silently, and
    # once the broker has been stalled for the stall bound new POSTs are refused (503).
    return outcome, (r["lost"] <= r["delivery_failures_counted"] and r["refused_503"] > 0)


class RandomUsersFeeder(Feeder):
    """A Feeder whose every event comes from a user id of its own: `limit` distinct random
    ids (62-bit, in hex), items drawn from a fixed catalogue of `n_items`."""

    def __init__(self, settings: Settings, rate: float, limit: int, n_items: int,
                 seed: int = 7) -> None:
        import random

        super().__init__(settings, rate, limit=limit, ts_ms=int(time.time() * 1000))
        rng = random.Random(seed)
        self.user_ids = [f"r{n:016x}" for n in rng.sample(range(1 << 62), limit)]
        self.item_ids = [f"i{rng.randrange(n_items)}" for _ in range(limit)]

    def event(self, n: int) -> tuple[str, str]:
        return self.user_ids[n], self.item_ids[n]


def healthz_status(port: int) -> tuple[int, str] | None:
    """The worker's /healthz answer (status, reason); a 503 is an answer, not an error."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback, our own worker
                f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


# Memory levels off when its growth over the last third of the run is at most this share of its
# growth over the whole run (a linear, unbounded growth puts a third there), or within the
# allocator's and Redis' own noise when the total growth is small.
LEVEL_OFF_SHARE = 0.10
LEVEL_OFF_NOISE_BYTES = 8 << 20
# Fewer than STALL_EVENTS consumed in STALL_S while Kafka holds more: the worker has stalled.
STALL_S, STALL_EVENTS = 60.0, 1000
# "As fast as the producer goes": a rate no producer here reaches.
BACKLOG_RATE = 1_000_000.0
# The slowest worker the scenario waits for (events/s), whatever rate it produces at.
SLOWEST_WORKER_RATE = 1000.0


def level_off(values: list[float]) -> dict[str, Any]:
    """Growth of a sampled series over the whole run and over its last third (each end a
    median of a few samples, so one allocator spike decides nothing)."""
    if len(values) < 9:
        return {"samples": len(values), "levels_off": False}

    def at(i: int) -> float:
        return float(statistics.median(values[max(0, i - 1):i + 2]))

    start, two_thirds, end = at(1), at(2 * len(values) // 3), at(len(values) - 2)
    total, last = end - start, end - two_thirds
    return {"total_growth_mb": round(total / (1 << 20), 1),
            "last_third_growth_mb": round(last / (1 << 20), 1),
            "peak_mb": round(max(values) / (1 << 20), 1),
            "levels_off": last <= max(LEVEL_OFF_SHARE * max(total, 0.0), LEVEL_OFF_NOISE_BYTES)}


def million_random_users(lab: Lab, users: int = 1_000_000, rate: float = 4000.0,
                         n_items: int = 1000, maxmemory_mb: int = 48, idle_s: float = 15.0,
                         sweep_s: float = 5.0) -> tuple[dict[str, Any], bool]:
    """12. One event from each of 1,000,000 distinct random user ids, with the memory bounds
    set low: the stream table forgets users idle `idle_s`, Redis has `maxmemory_mb` and
    volatile-lru (as in compose). Worker RSS and Redis used_memory are sampled throughout."""
    server = lab.redis_server("--maxmemory", f"{maxmemory_mb}mb",
                              "--maxmemory-policy", "volatile-lru")
    url = f"redis://127.0.0.1:{server.port}/0"
    settings = lab.settings("million-users", redis_url=url)
    _ensure_topics(settings)
    client = redis_lib.Redis.from_url(url)
    keys = Keys(settings.redis_namespace)
    worker = lab.stream_worker(settings, "w", stream_user_idle_days=idle_s / 86_400,
                               stream_idle_sweep_s=sweep_s)
    lab.wait_assigned(worker)
    proc = psutil.Process(worker.pid)
    feeder = RandomUsersFeeder(settings, rate=rate, limit=users, n_items=n_items)
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    feeder.start()
    consumed, moved_from, moved_at, stalled_at = 0.0, 0.0, started, None
    deadline = started + users / min(rate, SLOWEST_WORKER_RATE) + 120
    while worker.alive() and time.monotonic() < deadline:
        with contextlib.suppress(OSError, psutil.Error):
            metrics = worker.metrics()
            now_consumed = total(metrics, "recsys_stream_events_total")
            if now_consumed - moved_from >= STALL_EVENTS:
                moved_at, moved_from = time.monotonic(), now_consumed
            consumed = now_consumed
            samples.append({"t": time.monotonic() - started, "events": consumed,
                            "rss": proc.memory_info().rss,
                            "redis": int(client.info("memory")["used_memory"]),
                            "table_users": total(metrics, "recsys_stream_table_users")})
        if consumed >= users:
            break
        if consumed < len(feeder.acked) and time.monotonic() - moved_at > STALL_S:
            stalled_at = int(consumed)
            break
        time.sleep(2.0)
    seconds = time.monotonic() - started
    healthz = healthz_status(worker.port)
    feeder.stop()
    alive = worker.alive()
    stats = client.info("stats")
    forgotten = _safe_metric(worker, "recsys_stream_idle_users_forgotten_total")
    oom = _safe_metric(worker, "recsys_stream_dead_letters_total", reason="redis_oom")
    # the run's steady part: from the first sample with events to the last
    busy = [x for x in samples if x["events"] > 0] or samples
    rss = level_off([x["rss"] for x in busy])
    used = level_off([x["redis"] for x in busy])
    rates = [(b["events"] - a["events"]) / (b["t"] - a["t"])
             for a, b in zip(busy, busy[1:], strict=False) if b["t"] > a["t"]]
    peak_rate = max(rates, default=0.0)
    table_peak = max((x["table_users"] for x in busy), default=0.0)
    # the table holds the users of the last idle window plus one sweep interval
    table_bound = peak_rate * (idle_s + sweep_s + 5.0)  # + the gauge's own interval
    first_users = [feeder.user_ids[n] for n in range(0, 1000)]
    last_users = [feeder.user_ids[n] for n in range(users - 1000, users)]
    with client.pipeline(transaction=False) as pipe:
        for user in first_users + last_users:
            pipe.exists(keys.seen(user))
        present = pipe.execute()
    trending = client.zcard(keys.popularity(COUNT_WINDOW))
    outcome = {"users": users, "events_acked_by_kafka": len(feeder.acked),
               "events_consumed": int(consumed), "seconds": round(seconds, 1),
               "stalled_at_events": stalled_at, "healthz_status_at_end": healthz,
               "events_per_s_peak": round(peak_rate), "worker_alive": alive,
               "worker_rss": rss, "redis_used_memory": used,
               "redis_maxmemory_mb": maxmemory_mb,
               "redis_evicted_keys": int(stats.get("evicted_keys", 0)),
               "seen_sets_left_of_first_1000_users": sum(present[:1000]),
               "seen_sets_left_of_last_1000_users": sum(present[1000:]),
               "trending_items": trending, "dead_letters_redis_oom": oom,
               "table_users_peak": int(table_peak), "table_users_bound": int(table_bound),
               "idle_users_forgotten": forgotten,
               "series": [{k: round(v, 1) if k == "t" else int(v) for k, v in x.items()}
                          for x in busy[::max(1, len(busy) // 40)]]}
    passed = (alive and consumed >= users and rss["levels_off"] and used["levels_off"]
              and used["peak_mb"] <= maxmemory_mb * 1.05 and outcome["redis_evicted_keys"] > 0
              and not oom and 0 < trending <= n_items
              and table_peak <= table_bound and (forgotten or 0) > 0)
    return outcome, passed


SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "broker_pause_ingest": (
        "broker SIGSTOP 5 s while 4 writers POST 20,000 events to /v1/events and a reader GETs "
        "recommendations; pass: 0 of the events answered 202 missing from the topic (by event "
        "id), GET p99 during the pause < 250 ms", broker_pause_ingest),
    "worker_kill9": (
        "stream worker SIGKILLed 5 times (2 s after each gets its partitions) while 150 "
        "events/s flow; a sixth runs to the end; pass: every event Kafka acked applied exactly "
        "once (trending count and seen set, by event id)", worker_kill9),
    "redis_restart_aof": (
        "redis-server (AOF, appendfsync everysec as in compose) SIGKILLed 5 s into a 200 "
        "events/s stream and restarted on the same port and data 2 s later; pass: every event "
        "applied exactly once", redis_restart_aof),
    "future_and_past_events": (
        "one view 23 h ahead and one 400 days old among 275 ordinary views of 10 items; pass: "
        "the 1-hour trending order of the others unchanged, the future event clamped (metric), "
        "the trending landmark not ahead of now", future_and_past_events),
    "same_event_id_two_users": (
        "event id \"1\" sent by two users (two producers numbering alike); pass: the stream "
        "applies both (trending, seen) and the trainer's history keeps both rows",
        same_event_id_two_users),
    "trainer_kill9_before_activation": (
        "a trainer SIGSTOPped the moment its new version's manifest (last staged key) lands "
        "in Redis, then SIGKILLed; then the next run; pass: readers still see the old complete "
        "version, the next run publishes and leaves no key or directory of the killed one",
        trainer_kill9_before_activation),
    "two_trainers": (
        "two `recsys train --once` started together on one deployment; pass: one exits 3 "
        "saying another trainer holds the lease, the other publishes, the current model is "
        "the winner's and complete", two_trainers),
    "corrupt_history_file": (
        "the newest history Parquet file cut in half before a run; pass: the run exits 0, the "
        "file is in quarantine/", corrupt_history_file),
    "huge_body": (
        "a 500 MB POST /v1/events body, once with Content-Length, once chunked; pass: 413 both "
        "times, little of it sent before the answer, API RSS growth bounded", huge_body),
    "redis_out_of_memory": (
        "Redis maxmemory set below its use (a 4 MB key without TTL, policy volatile-lru as in "
        "compose) while 300 events arrive; pass: writes refused are dead-lettered with reason "
        "redis_oom, every event either counted or dead-lettered, the worker alive and idle "
        "afterwards (CPU < 30 %)", redis_out_of_memory),
    "broker_pause_past_delivery_timeout": (
        "broker SIGSTOP 8 s with the API's delivery timeout at 3 s (stall bound 2 s) during "
        "40,000 POSTed events; pass: events answered 202 and lost are no more than "
        "recsys_api_events_delivery_failed_total counts, and POSTs during the stall get 503",
        broker_pause_past_delivery_timeout),
    "million_random_users": (
        "one view from each of 1,000,000 distinct random user ids, produced as fast as the "
        "producer goes (a backlog the worker works through), with the stream table forgetting "
        "users idle 15 s (swept every 5 s) and Redis at maxmemory 48 MB, volatile-lru; pass: "
        "all consumed, worker RSS and Redis used_memory level off (growth over the last third "
        "<= 10 % of the run's, or 8 MB), Redis evicts seen sets (TTL keys) and refuses nothing "
        "(no redis_oom), the table stays within the users of one idle window and sweep",
        functools.partial(million_random_users, rate=BACKLOG_RATE)),
    "million_random_users_live": (
        "the same at 4,000 events/s while the worker consumes (it falls behind on 2 shared "
        "cores): the same pass conditions", million_random_users),
}


# --- runner ---------------------------------------------------------------------------------------
def run_scenarios(names: list[str],
                  lab_factory: Callable[[], contextlib.AbstractContextManager[Lab]],
                  scenarios: dict[str, tuple[str, Scenario]] | None = None) -> list[Result]:
    """Run each named scenario in its own lab; an exception is a failed scenario with the
    error, never the end of the suite."""
    scenarios = SCENARIOS if scenarios is None else scenarios
    results = []
    for name in names:
        injected, scenario = scenarios[name]
        log.info("scenario %s: %s", name, injected)
        started = time.monotonic()
        with lab_factory() as lab:
            try:
                outcome, passed = scenario(lab)
                error = None
            except Exception as exc:  # noqa: BLE001 - the suite reports it and goes on
                log.error("scenario %s failed with an error:\n%s", name, traceback.format_exc())
                outcome, passed, error = {}, False, f"{type(exc).__name__}: {exc}"
        result = Result(name, injected, outcome, passed, round(time.monotonic() - started, 1),
                        error)
        log.info("scenario %s: %s in %.0f s: %s", name, "PASS" if passed else "FAIL",
                 result.seconds, outcome or error)
        results.append(result)
    return results


@contextlib.contextmanager
def lab_on(bootstrap_servers: str, redis_url: str, workdir: Path) -> Iterator[Lab]:
    """A Lab on these endpoints; every role and server it started is stopped on exit."""
    lab = Lab(bootstrap_servers, redis_url, workdir)
    try:
        yield lab
    finally:
        lab.close()


def write_report(results: list[Result], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "scenarios": [asdict(r) for r in results]}, indent=2, default=str))


def _brief(outcome: dict[str, Any], error: str | None, width: int = 110) -> str:
    text = error or ", ".join(f"{k}={v}" for k, v in outcome.items()
                              if not k.endswith("_sample"))
    return text if len(text) <= width else text[:width - 1] + "…"


def markdown_table(results: list[Result]) -> str:
    lines = ["| scenario | result | seconds | measured |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {'PASS' if r.passed else 'FAIL'} | {r.seconds:.0f} | "
                     f"{_brief(r.outcome, r.error).replace('|', '/')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), metavar="NAME",
                        help="run only this scenario (repeatable; default: all, in order)")
    parser.add_argument("--out", type=Path, default=Path("reports/chaos.json"))
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the roles' logs and data here (default: a temporary "
                        "directory, removed at the end)")
    args = parser.parse_args(argv)
    from recsys.blas import set_blas_threads

    set_blas_threads(get_settings().blas_threads)  # this process and the roles it starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.list:
        for name, (injected, _) in SCENARIOS.items():
            print(f"{name}: {injected}")
        return 0
    names = args.only or list(SCENARIOS)
    started = time.monotonic()
    with contextlib.ExitStack() as scope:
        workdir = args.workdir or Path(scope.enter_context(
            tempfile.TemporaryDirectory(prefix="recsys-chaos-")))
        workdir.mkdir(parents=True, exist_ok=True)
        stack = scope.enter_context(LocalStack())
        results = run_scenarios(
            names, lambda: lab_on(stack.bootstrap_servers, stack.redis_url, workdir))
    write_report(results, args.out)
    print(markdown_table(results))
    print(f"\n{sum(r.passed for r in results)}/{len(results)} passed in "
          f"{time.monotonic() - started:.0f} s; written: {args.out}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
