"""Impressions: every served recommendation list gets an id and is recorded on a topic.

The record (recsys.attribution.Impression) is appended to a bounded in-memory buffer, and a
background task hands the buffer to the API's existing Kafka producer every
IMPRESSION_FLUSH_S without waiting (`offer_raw`), keyed by the user (or session) id like the
interactions topic, so the stream worker sees a user's lists and events in one partition.
Handing them over in groups lets the producer send them in few, larger batches (one produce
per request made its threads wake for every one or two records: docs/benchmarks.md
#impressions). The request never waits for Kafka: when the buffer is full or the producer
cannot take the records they are dropped and counted, and the response is served as usual.
With impressions_enabled off the response still carries an id (clients may name it in
events; nothing will attribute them).
"""

from __future__ import annotations

import logging
import uuid

from confluent_kafka import KafkaError, Message

from recsys.attribution import Impression
from recsys.eventtime import now_ms
from recsys.producer import EventProducer, ProducerError
from recsys.settings import Settings
from serving.fallback import Result
from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

IMPRESSION_FLUSH_S = 0.05
# Impressions held between flushes at most (beyond: dropped, counted); at 10,000 requests/s
# a flush interval holds 500.
MAX_BUFFERED = 20_000


def new_recommendation_id() -> str:
    # Random, not derived from the request: an id cannot be predicted, and attribution only
    # accepts ids served to the same user anyway (recsys.attribution).
    return uuid.uuid4().hex


class ImpressionRecorder:
    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.enabled = settings.impressions_enabled
        self.topic = settings.impressions_topic
        self.metrics = metrics
        self._children = {outcome: metrics.impressions_delivery.labels(outcome)
                          for outcome in ("delivered", "failed")}
        self._buffer: list[Impression] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self._children["failed" if err is not None else "delivered"].inc()

    def record(self, producer: EventProducer | None, endpoint: str, result: Result,
               subject: str | None, variant: str | None = None,
               experiment: str | None = None) -> str:
        """The list's recommendation id; its impression queued (or dropped, counted)."""
        rid = new_recommendation_id()
        if not self.enabled:
            self.metrics.count_impression(endpoint, "off")
            return rid
        outcome = "queued"
        if producer is None or len(self._buffer) >= MAX_BUFFERED:
            outcome = "dropped"
        else:
            self._buffer.append(Impression(
                recommendation_id=rid, subject=subject or rid,
                items=tuple(item for item, _ in result.items), served_at_ms=now_ms(),
                endpoint=endpoint, source=result.source, model_version=result.model_version,
                variant=variant, experiment=experiment))
        self.metrics.count_impression(endpoint, outcome)
        return rid

    def flush(self, producer: EventProducer | None) -> int:
        """Hand the buffered impressions to the producer (never waits); what it cannot take
        is dropped and counted. Returns how many were handed over."""
        buffered, self._buffer = self._buffer, []
        if not buffered:
            return 0
        handed = 0
        if producer is not None:
            try:
                for impression in buffered:
                    producer.offer_raw(impression.key, impression.to_json(), self.topic,
                                       self._on_delivery)
                    handed += 1
            except ProducerError as exc:
                log.warning("%d impressions dropped: %s", len(buffered) - handed, exc)
        for impression in buffered[handed:]:
            self.metrics.count_impression(impression.endpoint, "dropped")
        return handed
