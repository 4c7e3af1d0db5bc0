"""Kafka plumbing shared by every role: topic creation and client construction."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient, NewTopic

from recsys.settings import Settings

log = logging.getLogger(__name__)


def dead_letter_topic_config(settings: Settings) -> dict[str, str]:
    return {"retention.ms": str(int(settings.dead_letter_retention_hours * 3_600_000))}


def ensure_topics(settings: Settings, extra: dict[str, int] | None = None,
                  timeout: float = 15.0) -> None:
    """Create the interactions and dead-letter topics (and `extra` name -> partitions) if
    missing, with the configured replication factor; the dead-letter topic gets its
    retention. Idempotent: an existing topic is left as it is."""
    wanted = {
        settings.interactions_topic: settings.topic_partitions,
        settings.dead_letter_topic: 1,
        **(extra or {}),
    }
    configs = {settings.dead_letter_topic: dead_letter_topic_config(settings)}
    admin = AdminClient(settings.kafka_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [NewTopic(name, num_partitions=parts,
                        replication_factor=settings.topic_replication_factor,
                        config=configs.get(name, {}))
               for name, parts in wanted.items() if name not in existing]
    if not missing:
        return
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result(timeout)
            log.info("created topic %s", name)
        except Exception as exc:  # noqa: BLE001 - a concurrent creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc).upper().replace(" ", "_"):
                raise
