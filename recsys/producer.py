"""A small producer client for interaction events (confluent-kafka underneath).

    with EventProducer(settings) as producer:
        producer.send(Event.create("u1", "i9", "view"))

Events are validated before they leave (the same `recsys.events` rules the consumers apply),
keyed by user id, and sent asynchronously; `flush()` waits for delivery reports. Counters say
how many were delivered and how many failed, with the last error kept for the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from recsys.errors import RecsysError
from recsys.events import Event
from recsys.settings import Settings

log = logging.getLogger(__name__)


class ProducerError(RecsysError):
    """The broker could not be reached or rejected events."""


@dataclass
class DeliveryStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


class EventProducer:
    def __init__(self, settings: Settings, topic: str | None = None,
                 **client_overrides: Any) -> None:
        self.topic = topic or settings.interactions_topic
        self.stats = DeliveryStats()
        config = settings.kafka_config(**{
            # Small batches with a short linger: throughput without adding visible latency.
            "linger.ms": 5,
            "compression.type": "lz4",
            "enable.idempotence": False,
            "queue.buffering.max.messages": 500_000,
            **client_overrides,
        })
        self._producer = Producer(config)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            self.stats.last_error = str(err)

    def send(self, event: Event) -> None:
        self.send_raw(event.key, event.to_json())

    def send_raw(self, key: bytes | None, value: bytes, topic: str | None = None) -> None:
        """Send pre-serialised bytes (used for dead-letter records and tests of bad input)."""
        while True:
            try:
                self._producer.produce(topic or self.topic, value=value, key=key,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room again.
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise ProducerError(f"cannot produce to {topic or self.topic}: {exc}") from exc
        self.stats.sent += 1
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve pending delivery reports (updates `stats`); returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        remaining = int(self._producer.flush(timeout))
        if remaining:
            log.warning("%d events still undelivered after %.0fs", remaining, timeout)
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
