"""The attribution consumer (`recsys attribution`): impressions + interactions -> outcomes.

A small consumer of its own (consumer group `{stream_app_id}-attribution`), beside the Faust
fold-in worker rather than inside it: the two topics are co-partitioned (same key, same
partition count), so each user's lists and events reach the same consumer, and the per-user
state (recsys.attribution.UserAttribution) stays in that process. The rules are the core's;
this module only reads records, keeps the state, and writes counters:

- Redis `experiment:{name}:counts` (recsys.keys): per variant, impressions, click,
  addtocart, purchase (HINCRBY), read by /v1/admin/experiments and `recsys experiment`;
- Prometheus `recsys_feedback_*` (stream.telemetry) on attribution_web_port.

Offsets are committed after the batch's counters are in Redis. The state lives in memory:
after a restart the lists served before it are unknown, so events naming them count as
unattributed (an undercount for at most one attribution window, never a wrong count).
Invalid records are counted and skipped (the fold-in worker dead-letters bad events).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer, Message
from redis.exceptions import RedisError

from recsys.attribution import Impression, InvalidImpression, Outcome, UserAttribution
from recsys.events import InvalidEvent, parse_event
from recsys.eventtime import EventClock, arrival_ms
from recsys.keys import Keys
from recsys.redis_client import check_redis_mode, redis_client
from recsys.settings import Settings
from stream import telemetry

log = logging.getLogger(__name__)

BATCH = 500
EXPIRE_EVERY_S = 5.0
REDIS_RETRY_S = 1.0


class Attribution:
    """The consumer's state and counting; `handle` takes one record, `flush` writes."""

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self.settings = settings
        self.keys = keys
        self.window_ms = int(settings.attribution_window_s * 1000)
        self.clock = EventClock.from_seconds(settings.event_time_future_tolerance_s)
        self.users: dict[str, UserAttribution] = {}
        self.stream_time_ms = 0  # newest time seen: expiry follows the data, not the wall
        self.increments: dict[tuple[str, str], int] = defaultdict(int)

    def handle(self, topic: str, value: bytes | None, timestamp_ms: int | None) -> None:
        if value is None:
            return
        if topic == self.settings.impressions_topic:
            self._impression(value)
        else:
            self._event(value, timestamp_ms)

    def _impression(self, value: bytes) -> None:
        try:
            impression = Impression.from_json(value)
        except InvalidImpression as exc:
            telemetry.FEEDBACK_INVALID.labels("impression").inc()
            log.debug("unreadable impression: %s", exc)
            return
        telemetry.FEEDBACK_IMPRESSIONS.labels(impression.endpoint,
                                              impression.model_version or "none",
                                              impression.variant or "none").inc()
        if impression.experiment and impression.variant:
            self.increments[(impression.experiment, f"{impression.variant}:impressions")] += 1
        self.stream_time_ms = max(self.stream_time_ms, impression.served_at_ms)
        state = self.users.setdefault(impression.subject, UserAttribution())
        for result in state.add_impression(impression, self.window_ms):
            self._count(result)

    def _event(self, value: bytes, timestamp_ms: int | None) -> None:
        try:
            event = parse_event(value, naive_utc=self.settings.event_time_naive_utc)
        except InvalidEvent:
            telemetry.FEEDBACK_INVALID.labels("event").inc()
            return
        stamp, _why = self.clock.clamp(event.timestamp, arrival_ms(timestamp_ms))
        if stamp != event.timestamp:
            event = event.model_copy(update={"timestamp": stamp})
        self.stream_time_ms = max(self.stream_time_ms, event.timestamp)
        state = self.users.get(event.user_id)
        if state is None:
            state = self.users.setdefault(event.user_id, UserAttribution())
        result = state.add_event(event, self.window_ms)
        if result is not None:
            self._count(result)
        if state.empty:
            del self.users[event.user_id]

    def _count(self, result: Outcome | object) -> None:
        if not isinstance(result, Outcome):
            telemetry.FEEDBACK_UNATTRIBUTED.labels(result.outcome,  # type: ignore[attr-defined]
                                                   result.reason).inc()  # type: ignore[attr-defined]
            return
        imp = result.impression
        telemetry.FEEDBACK_OUTCOMES.labels(result.outcome, imp.endpoint,
                                           imp.model_version or "none", imp.variant or "none",
                                           imp.source, result.bucket).inc()
        if imp.experiment and imp.variant:
            self.increments[(imp.experiment, f"{imp.variant}:{result.outcome}")] += 1

    def expire(self) -> None:
        for user in list(self.users):
            state = self.users[user]
            for result in state.expire(self.stream_time_ms, self.window_ms):
                self._count(result)
            if state.empty:
                del self.users[user]
        telemetry.FEEDBACK_USERS.set(len(self.users))

    def flush(self, client: Any) -> None:
        """Write the pending counter increments (raises RedisError; they are kept)."""
        if not self.increments:
            return
        pipe = client.pipeline(transaction=False)
        for (experiment, counter), n in self.increments.items():
            pipe.hincrby(self.keys.experiment_counts(experiment), counter, n)
        pipe.execute()
        self.increments.clear()


def make_consumer(settings: Settings) -> Consumer:
    return Consumer(settings.kafka_config(**{
        "group.id": f"{settings.stream_app_id}-attribution",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": settings.stream_fetch_max_wait_ms,
    }))


def run(settings: Settings, stop: threading.Event | None = None) -> int:
    """Consume until `stop` is set (or forever); returns an exit code."""
    from recsys.kafka import ensure_topics

    stop = stop or threading.Event()
    ensure_topics(settings)
    port = telemetry.start_metrics_server(settings.attribution_web_port)
    log.info("attribution consumer: metrics on port %d, window %.0fs", port,
             settings.attribution_window_s)
    client = redis_client(settings, socket_timeout=5.0)
    check_redis_mode(client, settings)
    consumer = make_consumer(settings)
    consumer.subscribe([settings.impressions_topic, settings.interactions_topic])
    attribution = Attribution(settings, Keys.for_settings(settings))
    last_expiry = time.monotonic()
    try:
        while not stop.is_set():
            messages: list[Message] = consumer.consume(BATCH, timeout=0.2)
            for msg in messages:
                if msg.error() is not None:
                    log.warning("consumer error: %s", msg.error())
                    continue
                _kind, stamp = msg.timestamp()
                attribution.handle(msg.topic(), msg.value(), stamp if stamp > 0 else None)
            if time.monotonic() - last_expiry > EXPIRE_EVERY_S:
                attribution.expire()
                last_expiry = time.monotonic()
            while not stop.is_set():
                try:
                    attribution.flush(client)
                    break
                except (RedisError, OSError) as exc:
                    log.warning("cannot write attribution counters (retrying): %s", exc)
                    time.sleep(REDIS_RETRY_S)
            if messages:
                consumer.commit(asynchronous=True)
    finally:
        consumer.close()
        client.close()
    return 0
