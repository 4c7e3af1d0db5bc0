"""Wire the stream worker together and run it.

    settings = load_settings()
    run(settings)          # blocks until SIGINT/SIGTERM; returns the exit code
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import faust
from redis.exceptions import RedisError

from recsys.errors import ModelIntegrityError, ModelNotFound
from recsys.kafka import ensure_topics
from recsys.keys import Keys
from recsys.model_watch import ModelSwitchWatcher
from recsys.modelstore import load_model
from recsys.redis_client import (
    async_redis_client,
    check_redis_mode,
    redis_client,
    subscriber_client,
)
from recsys.settings import Settings
from stream import telemetry
from stream.agents import register_agents
from stream.app import create_app
from stream.changelog import ChangelogWriter
from stream.current_model import FoldInModel, model_watcher
from stream.health import ConsumerProgress, Heartbeat, start_server
from stream.processor import BatchProcessor
from stream.redis_writer import RedisWriter
from stream.tables import UserHistoryTable, history_table
from stream.topics import dead_letter_topic, interactions_topic

log = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 5.0
HEARTBEAT_INTERVAL_S = 1.0


@dataclass
class StreamWorker:
    settings: Settings
    app: faust.App
    table: UserHistoryTable
    processor: BatchProcessor
    watcher: ModelSwitchWatcher
    worker_id: str
    heartbeat: Heartbeat


def worker_id(settings: Settings) -> str:
    return settings.stream_worker_id or f"{socket.gethostname()}:{os.getpid()}"


def build(settings: Settings) -> StreamWorker:
    app = create_app(settings)
    source = interactions_topic(app, settings)
    dlq = dead_letter_topic(app, settings)
    table = history_table(app, settings)
    changelog = ChangelogWriter(settings.kafka_config(), table.changelog_topic.get_topic_name(),
                                table.value_for_changelog_key)
    table.changelog_writer = changelog
    client = async_redis_client(settings, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=30)
    keys = Keys.for_settings(settings)
    writer = RedisWriter(client, keys, seen_max=settings.stream_history_max_items,
                         backoff_max_s=settings.stream_redis_backoff_max_s,
                         max_attempts=settings.stream_redis_max_attempts,
                         seen_ttl_s=settings.seen_ttl_s,
                         batch_guard_ttl_s=settings.stream_batch_guard_ttl_s)
    heartbeat = Heartbeat(settings.stream_stall_s)
    holder = FoldInModel()
    name = worker_id(settings)

    async def dead_letter(key: bytes | None, value: bytes) -> None:
        await dlq.send(key=key, value=value)

    def owned_partitions() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment()
                if tp.topic == settings.interactions_topic}

    processor = BatchProcessor(settings, table, writer, holder, dead_letter, name,
                               owned_partitions=owned_partitions, heartbeat=heartbeat)
    # A cluster client has no pub/sub: the switch channel is read through one node.
    listener = ((lambda: subscriber_client(settings, socket_connect_timeout=2))
                if settings.redis_cluster else None)
    watcher = model_watcher(client, keys, holder, processor.switch_to,
                            settings.stream_model_poll_s, listener=listener)
    progress = ConsumerProgress()
    register_agents(app, source, processor, settings, progress)
    app.task(watcher.run)

    pending: set[asyncio.Task] = set()

    @app.on_rebalance_complete.connect
    async def _after_rebalance(sender: object, **_: object) -> None:
        owned = owned_partitions()
        telemetry.ASSIGNED_PARTITIONS.set(len(owned))
        log.info("rebalance complete: %s owns partitions %s of %s (%d users in its table)",
                 name, sorted(owned), settings.interactions_topic, len(table))
        # Partitions may have arrived whose users have no vector under the current version
        # (a switch while they were moving). Off the signal path: recovery must not wait.
        model = holder.current
        if model is not None:
            task = asyncio.ensure_future(processor.recompute(model))
            pending.add(task)
            task.add_done_callback(pending.discard)

    @app.on_before_shutdown.connect
    async def _close_changelog(sender: object, **_: object) -> None:
        # Blocking librdkafka flush: off the event loop, which must keep settling deliveries.
        await asyncio.get_running_loop().run_in_executor(None, changelog.close)

    def committed(tp: object) -> int | None:
        # Faust keeps the group's committed offsets here (no public accessor): the position of
        # a partition this worker has processed nothing of yet.
        offsets = getattr(app.consumer, "_committed_offset", {})
        return offsets.get(tp)

    stalled_beats = [0]  # beats since the worker was found stalled (0: not stalled)

    @app.timer(HEARTBEAT_INTERVAL_S)
    async def _heartbeat() -> None:
        heartbeat.beat()
        if app.in_recovery:
            heartbeat.set_lag(None)  # restoring the table is progress; ends are not ours yet
            return
        source_tps = [tp for tp in app.consumer.assignment()
                      if tp.topic == settings.interactions_topic]
        lags = progress.lag(source_tps, app.consumer.highwater, committed)
        for tp, lag in lags.items():
            telemetry.CONSUMER_LAG.labels(str(tp.partition)).set(lag)
        heartbeat.set_lag(sum(lags.values()) if lags else None)
        ok, reason = heartbeat.status()
        # On the flip to stalled, then every stream_stall_s while it lasts.
        if not ok and stalled_beats[0] % max(1, int(heartbeat.stall_s)) == 0:
            log.warning("stream worker stalled: %s; consumer state: %s", reason,
                        consumer_state(app, progress, lags))
        stalled_beats[0] = 0 if ok else stalled_beats[0] + 1

    @app.timer(settings.stream_idle_sweep_s)
    async def _forget_idle() -> None:
        await processor.forget_idle()

    @app.timer(GAUGE_INTERVAL_S)
    async def _gauges() -> None:
        telemetry.ASSIGNED_PARTITIONS.set(len(owned_partitions()))
        telemetry.TABLE_USERS.set(len(table))

    return StreamWorker(settings, app, table, processor, watcher, name, heartbeat)


def consumer_state(app: faust.App, progress: ConsumerProgress, lags: dict) -> str:
    """What a stalled worker's consumer is doing, for the log (best effort, private state of
    Faust and aiokafka read defensively)."""
    consumer: Any = app.consumer
    parts = [f"flow_active={getattr(consumer, 'flow_active', None)}",
             f"lag={ {str(tp.partition): n for tp, n in lags.items()} }",
             f"next_offset={ {str(tp.partition): n for tp, n in progress.next_offset.items()} }"]
    for name in ("_active_partitions", "_paused_partitions", "_buffered_partitions"):
        tps = getattr(consumer, name, None)
        if tps is not None:
            parts.append(f"{name}={sorted(f'{tp.topic[-12:]}:{tp.partition}' for tp in tps)}")
    try:
        client = consumer._thread._ensure_consumer()
        fetcher = client._fetcher
        assignment = client._subscription.subscription.assignment
        states = {}
        for tp in assignment.tps:
            state = assignment.state_value(tp)
            states[f"{tp.topic[-12:]}:{tp.partition}"] = (
                state.position if state.has_valid_position else None, state.paused,
                tp in fetcher._records)
        parts.append(f"fetch (position, paused, buffered)={states}")
        parts.append(f"fetcher_in_flight={sorted(fetcher._in_flight)}")
        pending = {f"{key}": [type(request).__name__ for _, request, _ in conn._requests]
                   for key, conn in client._client._conns.items()}
        parts.append(f"requests pending per connection={pending}")
        parts.append("last fetch (offset asked, error, highwater, bytes, first, last)="
                     f"{getattr(client, 'recsys_last_fetch', None)}")
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        parts.append(f"fetcher=? ({exc!r})")
    return ", ".join(parts)


def preload_model(worker: StreamWorker) -> None:
    """Load the version in service before consuming, so a restart does not count its first
    events as "no model". The watcher takes over from there."""
    try:
        client = redis_client(worker.settings, socket_timeout=10)
    except RedisError as exc:  # a cluster client reads the slot map at once
        log.warning("cannot reach Redis to preload the model (%r); the watcher will retry", exc)
        return
    try:
        check_redis_mode(client, worker.settings)  # a ConfigError stops the worker here
        model = load_model(client, Keys.for_settings(worker.settings))
    except ModelNotFound:
        log.info("no model version published yet: keeping histories, counting no_model")
        return
    except (RedisError, ModelIntegrityError) as exc:
        log.warning("cannot preload the current model (%r); the watcher will retry", exc)
        return
    finally:
        client.close()
    _ = model.yty, model.item_index
    worker.processor.holder.swap(model)
    log.info("model version %s loaded (%d items, %d factors)", model.version,
             len(model.item_ids), model.factors)


def run(settings: Settings) -> int:
    """Create the topics, serve metrics, run the worker until it is stopped."""
    ensure_topics(settings)
    worker = build(settings)
    port = start_server(settings.stream_web_port, worker.heartbeat)
    preload_model(worker)
    log.info("stream worker %s: group %s, topic %s (%d partitions), metrics on "
             "http://0.0.0.0:%d/metrics (health: /healthz), fetch wait %d ms, batches of "
             "<= %d events / %d ms",
             worker.worker_id, settings.stream_app_id, settings.interactions_topic,
             settings.topic_partitions, port, settings.stream_fetch_max_wait_ms,
             settings.stream_batch_max_events, settings.stream_batch_max_ms)
    faust_worker = faust.Worker(worker.app, loglevel=settings.log_level, override_logging=False,
                                quiet=True)
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
