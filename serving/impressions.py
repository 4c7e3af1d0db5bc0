"""Impressions: every served recommendation list gets an id and is recorded on a topic.

The record (recsys.attribution.Impression) is queued on the API's existing Kafka producer
without waiting, keyed by the user (or session) id like the interactions topic, so the
stream worker sees a user's lists and events in one partition. The request never waits for
Kafka: when the producer cannot take the record it is dropped and counted, and the response
is served as usual. With impressions_enabled off the response still carries an id (clients
may name it in events; nothing will attribute them).
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
        if producer is None:
            outcome = "dropped"
        else:
            impression = Impression(
                recommendation_id=rid, subject=subject or rid,
                items=tuple(item for item, _ in result.items), served_at_ms=now_ms(),
                endpoint=endpoint, source=result.source, model_version=result.model_version,
                variant=variant, experiment=experiment)
            try:
                producer.offer_raw(impression.key, impression.to_json(), self.topic,
                                   self._on_delivery)
            except ProducerError as exc:
                outcome = "dropped"
                log.debug("impression dropped: %s", exc)
        self.metrics.count_impression(endpoint, outcome)
        return rid
