"""Kafka plumbing shared by every role: topic creation and client construction."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition
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
        # Co-partitioned with interactions (same key, same count): attribution joins them.
        settings.impressions_topic: settings.topic_partitions,
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


@dataclass(frozen=True)
class PartitionProgress:
    """How far one consumer group is through one partition (from Kafka, not the consumer).

    `committed_ms` and `end_ms` are the record timestamps of the last committed record and of
    the partition's last record; their difference is how far behind in time the group is."""

    partition: int
    committed: int | None
    end: int
    lag: int
    committed_ms: int | None
    end_ms: int | None


def group_progress(settings: Settings, group_id: str, topic: str,
                   timeout: float = 5.0) -> list[PartitionProgress]:
    """Committed offsets of `group_id` against the end of each partition of `topic`.

    Reads offsets and a few records per partition with a consumer that never joins the group
    (assign, not subscribe) and never commits, so the group is not disturbed. The group
    commits periodically, so `lag` includes what it processed since its last commit."""
    consumer = Consumer(settings.kafka_config(**{
        "group.id": group_id, "enable.auto.commit": False, "enable.partition.eof": True}))
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=timeout)}
        rows: list[tuple[int, int | None, int, int]] = []
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            offset = committed.get(tp.partition)
            offset = offset if offset is not None and offset >= 0 else None
            rows.append((tp.partition, offset, low, high))
        at_commit = _read(consumer, topic, {p: c - 1 for p, c, low, _ in rows
                                            if c is not None and c > low}, timeout, False)
        # Read on from the reported end: some brokers (the local Tansu) report the base
        # offset of the last batch + 1 as the end; the last record read is the real end.
        last = _read(consumer, topic, {p: h - 1 for p, _, low, h in rows if h > low},
                     timeout, True)
        out = []
        for p, c, low, h in rows:
            end = max(h, last[p][0] + 1) if p in last else h
            out.append(PartitionProgress(p, c, end, max(0, end - (c if c is not None else low)),
                                         at_commit[p][1] if p in at_commit else None,
                                         last[p][1] if p in last else None))
        return out
    finally:
        consumer.close()


def _read(consumer: Consumer, topic: str, starts: dict[int, int], timeout: float,
          to_end: bool) -> dict[int, tuple[int, int]]:
    """(offset, timestamp ms) per partition: of the record at each start offset, or with
    `to_end` of the last record from there to the end of the partition."""
    if not starts:
        return {}
    consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    found: dict[int, tuple[int, int]] = {}
    done: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(done) < len(starts) and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        partition = message.partition()
        if partition not in starts or partition in done:
            continue
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                done.add(partition)
            continue
        if message.offset() >= starts[partition]:
            found[partition] = (message.offset(), message.timestamp()[1])
            if not to_end:
                done.add(partition)
    consumer.unassign()
    return found
