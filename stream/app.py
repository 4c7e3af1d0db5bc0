"""The Faust application of the stream worker (configuration only; see worker.py)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import faust
from faust.sensors import Monitor
from faust.types.auth import CredentialsT

from recsys.errors import ConfigError
from recsys.settings import Settings
from stream.transport import FetchWaitTransport

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# librdkafka security options (RECSYS_KAFKA_CLIENT_OPTIONS) that have an aiokafka counterpart.
SECURITY_OPTIONS = {
    "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
    "enable.ssl.certificate.verification", "ssl.endpoint.identification.algorithm",
}


class LeanMonitor(Monitor):
    """Faust's Monitor without its per-event and per-send bookkeeping (timestamps, deques,
    counters updated for every message: a measurable share of the worker's CPU). Our own
    metrics (stream.telemetry) cover what it would tell; offsets and commits are still tracked."""

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


def _ssl_context(options: Mapping[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl.ca.location"))
    if "ssl.certificate.location" in options or "ssl.key.location" in options:
        context.load_cert_chain(options.get("ssl.certificate.location", ""),
                                options.get("ssl.key.location"),
                                options.get("ssl.key.password"))
    if options.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
        context.check_hostname = False
    if options.get("enable.ssl.certificate.verification", "true").lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def broker_credentials(options: Mapping[str, str]) -> CredentialsT | None:
    """The security part of `kafka_client_options` (librdkafka names, shared with every
    confluent-kafka client of the project) as Faust credentials, so the worker reaches the same
    secured cluster as the producer and the trainer. A security option aiokafka cannot honour
    is refused at start-up instead of silently connecting without it; other librdkafka tuning
    options do not apply to Faust's aiokafka clients and are left to the confluent clients."""
    unsupported = sorted(k for k in options if k.startswith(("security.", "sasl.", "ssl."))
                         and k not in SECURITY_OPTIONS)
    if unsupported:
        raise ConfigError(f"RECSYS_KAFKA_CLIENT_OPTIONS: the stream worker (aiokafka) does not "
                          f"support {', '.join(unsupported)}")
    protocol = options.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(_ssl_context(options))
    if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(f"RECSYS_KAFKA_CLIENT_OPTIONS: unknown security.protocol {protocol!r}")
    mechanism = options.get("sasl.mechanism", options.get("sasl.mechanisms", "PLAIN")).upper()
    if mechanism not in SASL_MECHANISMS:
        raise ConfigError(f"RECSYS_KAFKA_CLIENT_OPTIONS: sasl.mechanism {mechanism!r} is not "
                          f"supported by the stream worker (one of {', '.join(SASL_MECHANISMS)})")
    if "sasl.username" not in options or "sasl.password" not in options:
        raise ConfigError("RECSYS_KAFKA_CLIENT_OPTIONS: SASL needs sasl.username and "
                          "sasl.password")
    return faust.SASLCredentials(
        username=options["sasl.username"], password=options["sasl.password"],
        mechanism=mechanism,
        ssl_context=_ssl_context(options) if protocol == "SASL_SSL" else None)


def create_app(settings: Settings) -> faust.App:
    faust_dir = settings.data_dir / "stream"
    faust_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    session_s = settings.stream_session_timeout_ms / 1000.0
    app = faust.App(
        settings.stream_app_id,  # consumer group id and prefix of the changelog topic
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        store=settings.stream_store,
        autodiscover=False,
        # Faust's own folder (table stores other than memory://); its default is the
        # working directory.
        datadir=str(faust_dir / "{conf.id}"),
        web_enabled=False,  # metrics are served by stream.telemetry on stream_web_port
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
        # aiokafka's default 16 KB record batch holds few changelog values, so a busy worker
        # sends many small produce requests; 256 KB batches cut the producer's CPU per record
        # (docs/benchmarks.md). Stays below the default producer_max_request_size (1 MB).
        producer_max_batch_size=256 * 1024,
        Monitor=LeanMonitor,
        broker_credentials=broker_credentials(settings.kafka_client_options),
    )
    app.transport = FetchWaitTransport(app.conf.broker_consumer, app,
                                       fetch_max_wait_ms=settings.stream_fetch_max_wait_ms)
    return app
