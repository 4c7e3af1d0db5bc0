"""Topics the project creates: the replication factor is a setting, and the dead-letter topic
gets its retention, on the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from recsys.kafka import ensure_topics
from recsys.settings import Settings

pytestmark = pytest.mark.integration


def test_dead_letter_topic_is_created_with_its_retention(settings: Settings) -> None:
    ours = settings.model_copy(update={"dead_letter_retention_hours": 36.0})
    ensure_topics(ours)
    admin = AdminClient(ours.kafka_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, ours.dead_letter_topic)
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["retention.ms"].value == str(36 * 3_600_000)
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[ours.interactions_topic].partitions) == ours.topic_partitions


def test_the_replication_factor_is_the_setting(settings: Settings) -> None:
    # The local broker records the factor it is given (one node cannot really hold 3
    # copies); Apache Kafka refuses a factor above its broker count, which is the point.
    ours = settings.model_copy(update={"topic_replication_factor": 3})
    ensure_topics(ours)
    topics = AdminClient(ours.kafka_config()).list_topics(timeout=10).topics
    for name in (ours.interactions_topic, ours.dead_letter_topic):
        assert {len(p.replicas) for p in topics[name].partitions.values()} == {3}, name
