"""Producer client and `recsys produce`: pacing, and real round trips through the broker."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from recsys.events import parse_event
from recsys.kafka import ensure_topics
from recsys.producer import EventProducer
from recsys.settings import Settings, get_settings
from recsys.sources import make_frame, synthetic
from shell.cli import main
from shell.produce_cli import Pacer, replay

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
START_MS = 1_700_000_000_000


def consume_all(settings: Settings, topic: str, expected: int,
                timeout: float = 30.0) -> list[tuple[int, bytes | None, bytes]]:
    """(partition, key, value) of every record, reading all partitions from the start.
    assign() instead of subscribe(): no consumer group to join, so no join delay."""
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"{topic}-check", "enable.auto.commit": False,
        "fetch.wait.max.ms": 20}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[tuple[int, bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1_000, timeout=0.5):
                if msg.error() is None:
                    records.append((msg.partition(), msg.key(), msg.value()))
        # A short extra read: more records than expected would be a bug too.
        records += [(m.partition(), m.key(), m.value())
                    for m in consumer.consume(num_messages=1_000, timeout=0.3) if not m.error()]
        return records
    finally:
        consumer.close()


# --- pacing (pure) -------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_keeps_the_rate_with_few_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(1_000, clock=clock, sleep=clock.sleep)
    for _ in range(5_000):
        clock.now += 0.0001          # sending takes 0.1 ms: far faster than 1,000/s
        pacer.wait()
    assert clock.now == pytest.approx(5.0, abs=0.01)   # 5,000 events at 1,000/s
    assert len(clock.sleeps) < 5_000 / 2               # not one sleep per event


def test_pacer_after_a_stall_catches_up_one_burst_only() -> None:
    clock = FakeClock()
    pacer = Pacer(100, burst=10, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 5.0                 # broker stalled for 5 s (500 events of "debt")
    sent_without_sleep = 0
    while not clock.sleeps:
        pacer.wait()
        sent_without_sleep += 1
    assert sent_without_sleep <= 12  # one burst, not 500 events at full speed
    with pytest.raises(ValueError):
        Pacer(0)


# --- producer -> broker -> consumer --------------------------------------------------------

def test_round_trip_events_intact_and_keyed_by_user(settings: Settings) -> None:
    frame = synthetic.generate(600, seed=8, n_users=40, start_ms=START_MS)
    ensure_topics(settings)
    with EventProducer(settings) as producer:
        summary = replay(frame, producer, progress=False)
    assert (summary.sent, summary.failed) == (600, 0)

    records = consume_all(settings, settings.interactions_topic, 600)
    assert len(records) == 600
    by_id = {row.event_id: row for row in frame.itertuples()}
    partitions_of_user: dict[str, set[int]] = defaultdict(set)
    times_of_user: dict[str, list[int]] = defaultdict(list)
    for partition, key, value in records:
        event = parse_event(value)
        row = by_id[event.event_id]
        assert (event.user_id, event.item_id, event.event_type, event.timestamp) == (
            row.user_id, row.item_id, row.event_type, row.timestamp)
        assert event.value == (None if np.isnan(row.value) else row.value)
        assert key == row.user_id.encode()
        partitions_of_user[event.user_id].add(partition)
        times_of_user[event.user_id].append(event.timestamp)
    assert {e for e in by_id} == {parse_event(v).event_id for _, _, v in records}
    assert all(len(p) == 1 for p in partitions_of_user.values())
    # One partition per user, so a user's events arrive in the order they were sent.
    assert all(t == sorted(t) for t in times_of_user.values())
    assert len({p for ps in partitions_of_user.values() for p in ps}) > 1  # keys spread out


def test_invalid_rows_are_counted_and_not_sent(settings: Settings) -> None:
    frame = make_frame(
        user_id=["u1", "u2", "u3", "u4"], item_id=["i1", "i2", "i3", "i4"],
        event_type=["rating", "rating", "view", "rating"],
        timestamp=[START_MS, START_MS + 1, START_MS + 2, START_MS + 3],
        value=[4, 9, None, 5],   # a 9-star rating is out of range
    )
    ensure_topics(settings)
    with EventProducer(settings) as producer:
        summary = replay(frame, producer, progress=False)
    assert (summary.sent, summary.invalid, summary.failed) == (3, 1, 1)
    assert summary.reasons == {"rating_out_of_range": 1}
    assert "1 invalid rows: rating_out_of_range 1" in summary.line()
    users = {parse_event(v).user_id for _, _, v in consume_all(settings,
                                                                settings.interactions_topic, 3)}
    assert users == {"u1", "u3", "u4"}


# --- the CLI, in process -------------------------------------------------------------------

@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("RECSYS_INTERACTIONS_TOPIC", settings.interactions_topic)
    monkeypatch.setenv("RECSYS_DEAD_LETTER_TOPIC", settings.dead_letter_topic)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_cli_produces_synthetic_events_at_a_rate(cli_env: Settings,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = main(["produce", "--source", "synthetic", "--events", "300", "--seed", "3",
                 "--rate", "500", "--no-progress"])
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 0
    assert "sent 300 events, failed 0" in out and "events/s" in out
    assert elapsed >= 0.5                       # 300 events at 500/s take at least 0.6 s
    records = consume_all(cli_env, cli_env.interactions_topic, 300)
    assert len(records) == 300
    assert all(key == parse_event(value).user_id.encode() for _, key, value in records)


def test_cli_produces_a_mapped_csv_to_a_chosen_topic(cli_env: Settings,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"{cli_env.interactions_topic}.csv"
    code = main(["produce", "--source", f"csv:{FIXTURES / 'shop_orders.csv'}", "--map",
                 "user_id=customer,item_id=sku,event_type=action,timestamp=ts,value=qty",
                 "--topic", topic, "--no-progress"])
    assert code == 0
    assert f"-> {topic}: sent 6 events, failed 0" in capsys.readouterr().out
    events = [parse_event(v) for _, _, v in consume_all(cli_env, topic, 6)]
    assert sorted(e.event_type for e in events) == [
        "addtocart", "click", "transaction", "view", "view", "view"]


def test_cli_reports_bad_sources_without_a_traceback(
        cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["produce", "--source", f"csv:{FIXTURES / 'shop_orders.csv'}",
                 "--no-progress"])
    err = capsys.readouterr().err           # the CLI logs to stderr
    assert code == 1
    assert "needs a column mapping" in err and "Traceback" not in err
    assert main(["produce", "--source", "kafka:nowhere"]) == 1
    assert "unknown source" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["produce", "--events", "0"])
    assert "must be >= 1" in capsys.readouterr().err
