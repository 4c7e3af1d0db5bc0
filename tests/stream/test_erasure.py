"""Erasure end to end: a real stream worker, the trainer's consumer and history, `recsys user
erase` as a process; afterwards the user's id is in no store: no Redis key or value, no entry
in the worker's table (a model switch recomputes every user in it; the changelog ends with a
tombstone), no row of the trainer's Parquet history; other users are untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest
import redis as redis_lib
from confluent_kafka import Consumer, TopicPartition

from recsys.events import Event
from recsys.keys import Keys
from recsys.settings import load_settings
from tests.stream.conftest import REPO, WorkerProcess, produce, publish, settings_env, wait_until
from trainer.ingest import HistoryConsumer
from trainer.pipeline import Trainer, history_store
from trainer.telemetry import TrainerMetrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def redis_mentions(client: redis_lib.Redis, namespace: str, needle: bytes) -> list[str]:
    """Every key of the namespace whose name or any value (fields, members) holds needle."""
    found = []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "hash":
            parts = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = list(client.zrange(key, 0, -1))
        elif kind == "list":
            parts = list(client.lrange(key, 0, -1))
        else:
            parts = []
        if needle in key or any(needle in part for part in parts):
            found.append(key.decode())
    return found


def changelog_values(settings, topic: str, needle: bytes) -> list[bytes | None]:
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"probe-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False}))
    values: list[bytes | None] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        done = {p for p, end in ends.items() if end == 0}
        while len(done) < len(ends):
            msg = consumer.poll(2.0)
            if msg is None:
                break
            if msg.error():
                continue
            if needle in (msg.key() or b""):
                values.append(msg.value())
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
    finally:
        consumer.close()
    return values


def test_erased_user_is_in_no_store_and_others_are_untouched(
        kafka_bootstrap_servers, redis_url, tmp_path, clustered, clustered_v2, workers):
    name = f"t{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap_servers, redis_url=redis_url,
        redis_namespace=name, interactions_topic=f"{name}.interactions",
        dead_letter_topic=f"{name}.dlq", stream_app_id=f"{name}-stream",
        trainer_group_id=f"{name}-trainer", topic_partitions=2,
        data_dir=tmp_path / "data", model_dir=tmp_path / "models")
    client = redis_lib.Redis.from_url(redis_url)
    keys = Keys(name)
    publish(client, keys, "v1", clustered)
    worker = WorkerProcess(settings, tmp_path, "erase")
    workers.append(worker)
    worker.wait_assigned()

    gone, kept = f"gone{uuid.uuid4().hex[:8]}", f"kept{uuid.uuid4().hex[:8]}"
    events = ([Event.create(gone, item, "view") for item in clustered.items_of(1)[:6]]
              + [Event.create(kept, item, "view") for item in clustered.items_of(2)[:6]])
    produce(settings, events)
    wait_until(lambda: client.hexists(keys.user_vectors("v1"), gone)
               and client.hexists(keys.user_vectors("v1"), kept), timeout=30,
               message="no vectors for the two users")
    store = history_store(settings)
    consumer = HistoryConsumer(settings, store, TrainerMetrics())
    try:
        assert consumer.catch_up(60) == 12
        assert gone in set(store.load()["user_id"].astype(str))

        env = {**os.environ, "PYTHONPATH": str(REPO), **settings_env(settings)}
        erase = subprocess.run([sys.executable, "-m", "shell.cli", "user", "erase", gone],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert erase.returncode == 0, erase.stderr[-2000:]
        assert not client.hexists(keys.user_vectors("v1"), gone)  # at once, in Redis
        wait_until(lambda: worker.metric("recsys_stream_erased_users_total") >= 1, timeout=30,
                   message="the worker did not handle the erase record")
        consumer.catch_up(60)  # the trainer's consumer reads the erase record too
    finally:
        consumer.close()
    trainer = Trainer(settings, redis=client, metrics=TrainerMetrics(), store=store)
    trainer.apply_erasures()  # the pending set (idempotent after the consumer's erase)

    # a model switch: the worker recomputes every user of its table under v2
    publish(client, keys, "v2", clustered_v2)
    wait_until(lambda: client.hexists(keys.user_vectors("v2"), kept), timeout=30,
               message="the kept user was not recomputed under v2")

    needle = gone.encode()
    assert redis_mentions(client, name, needle) == []
    assert redis_mentions(client, name, kept.encode()) != []  # the search does find ids
    changelog = changelog_values(settings, f"{settings.stream_app_id}-user_history-changelog",
                                 needle)
    assert changelog and changelog[-1] is None, "the table's changelog ends with a tombstone"
    for path in store.files():
        table = pq.read_table(path)
        for column in table.column_names:
            values = table.column(column).to_pylist()
            assert not any(needle.decode() in str(v) for v in values), (path, column)
    assert set(store.load()["user_id"].astype(str)) == {kept}
    assert client.scard(keys.erasure_users) == 0
    client.close()
