"""The Faust application of the stream worker (configuration only; see worker.py)."""

from __future__ import annotations

import faust

from recsys.settings import Settings
from stream.transport import FetchWaitTransport


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
        producer_linger_ms=1,
    )
    app.transport = FetchWaitTransport(app.conf.broker_consumer, app,
                                       fetch_max_wait_ms=settings.stream_fetch_max_wait_ms)
    return app
