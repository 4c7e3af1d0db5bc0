"""The Faust application of the stream worker (configuration only; see worker.py)."""

from __future__ import annotations

from typing import Any

import faust
from faust.sensors import Monitor

from recsys.settings import Settings
from stream.transport import FetchWaitTransport


class LeanMonitor(Monitor):
    """Faust's Monitor without its per-event and per-send bookkeeping (timestamps, deques,
    counters updated for every message: a measurable share of the worker's CPU). Our own
    metrics (stream.metrics) cover what it would tell; offsets and commits are still tracked."""

    def on_message_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_message_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_get(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_set(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any, **kwargs: Any) -> None:
        return None


def create_app(settings: Settings) -> faust.App:
    session_s = settings.stream_session_timeout_ms / 1000.0
    app = faust.App(
        settings.stream_app_id,  # consumer group id and prefix of the changelog topic
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        store=settings.stream_store,
        autodiscover=False,
        web_enabled=False,  # metrics are served by stream.metrics on stream_web_port
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        # Standby replicas would replay every other worker's changelog too: CPU we spend on
        # events instead. A moved partition is restored from its changelog.
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.2, session_s / 5),
        broker_commit_interval=settings.stream_commit_interval_s,
        # Changelog and dead-letter records only: batching them costs no event any latency
        # (the commit flushes the producer first).
        producer_linger_ms=10,
        # aiokafka's default 16 KB record batch holds ~50 changelog values, so a busy worker
        # sends many small produce requests; 256 KB batches cut the producer's CPU per record
        # by about a quarter (measured against the local broker). Stays below the default
        # producer_max_request_size (1 MB).
        producer_max_batch_size=256 * 1024,
        Monitor=LeanMonitor,
    )
    app.transport = FetchWaitTransport(app.conf.broker_consumer, app,
                                       fetch_max_wait_ms=settings.stream_fetch_max_wait_ms)
    return app
