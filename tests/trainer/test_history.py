"""The trainer's Parquet history: dedupe, offsets beside the rows, compaction, retention and an
exactly-once restart of its consumer against the real broker."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.events import Event
from recsys.producer import EventProducer
from recsys.sources import make_frame
from trainer.history import HistoryStore
from trainer.ingest import HistoryConsumer

T0 = 1_700_000_000_000
DAY = 86_400_000


def frame(n: int, start: int = 0, ts0: int = T0, step: int = 1000) -> pd.DataFrame:
    idx = np.arange(start, start + n)
    return make_frame(user_id=idx % 7, item_id=idx % 11, event_type="view",
                      timestamp=ts0 + idx * step, event_id=[f"e{i}" for i in idx])


def raw_rows(store: HistoryStore) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas() for p in store.files()], ignore_index=True)


def test_append_dedupes_by_event_id_and_keeps_offsets_with_the_rows(tmp_path):
    store = HistoryStore(tmp_path)
    assert store.append(frame(10), {"t:0": 10}) == 10
    assert store.append(frame(10, start=5), {"t:0": 15}) == 5  # e5..e9 already stored
    assert store.append(frame(3), {"t:0": 15}) == 0  # nothing new: no file written
    assert len(store.files()) == 2
    reopened = HistoryStore(tmp_path)
    assert reopened.offsets == {"t:0": 15}
    assert reopened.n_events == 15
    assert reopened.append(frame(1, start=3)) == 0  # dedupe survives a restart
    loaded = reopened.load()
    assert sorted(loaded["event_id"]) == sorted(f"e{i}" for i in range(15))
    assert reopened.latest_event_ms == T0 + 14 * 1000


def test_compaction_merges_applies_retention_and_recovers_from_a_crash(tmp_path):
    store = HistoryStore(tmp_path, retention_days=2)
    store.append(frame(5, ts0=T0 - 10 * DAY), {"t:0": 5})  # far older than the window
    store.append(frame(5, start=5), {"t:0": 10, "t:1": 3})
    store.append(frame(5, start=10), {"t:0": 12})
    parts = [p.name for p in store.files()]
    base = store.compact()
    assert base is not None and [p.name for p in store.files()] == [base.name]
    reopened = HistoryStore(tmp_path, retention_days=2)
    assert reopened.offsets == {"t:0": 12, "t:1": 3}
    assert sorted(reopened.load()["event_id"]) == sorted(f"e{i}" for i in range(5, 15))
    # a crash after the base was written but before the merged parts were deleted
    meta = pq.read_schema(base).metadata
    assert orjson.loads(meta[b"recsys.replaces"]) == parts
    leftover = tmp_path / parts[-1]
    pq.write_table(pq.read_table(base), leftover)
    recovered = HistoryStore(tmp_path, retention_days=2)
    assert not leftover.exists()
    assert len(recovered.load()) == 10


def test_a_file_uri_location_reads_and_writes_through_pyarrow_fs(tmp_path):
    uri = (tmp_path / "hist").as_uri()  # file:///...
    store = HistoryStore(uri, retention_days=2)
    assert not store.files()
    store.append(frame(5), {"t:0": 5})
    store.append(frame(5, start=5), {"t:0": 10})
    store.erase(["3"])  # rewrites a file in place through the filesystem
    assert store.compact() is not None
    reopened = HistoryStore(uri, retention_days=2)
    assert reopened.offsets == {"t:0": 10}
    assert sorted(reopened.load()["event_id"]) == sorted(f"e{i}" for i in range(10)
                                                         if i % 7 != 3)
    # the same files as the plain path sees them: one location, two spellings
    assert [p.name for p in HistoryStore(tmp_path / "hist").files()] == \
        [p.name for p in reopened.files()]


def test_a_location_pyarrow_does_not_understand_is_a_clear_error(tmp_path):
    from trainer.errors import HistoryError

    with pytest.raises(HistoryError, match="nosuchfs://x"):
        HistoryStore("nosuchfs://x/history")


@pytest.mark.integration
def test_restart_resumes_exactly_once(settings):
    """Produce, consume, stop, produce more, crash mid-way, restart: every event exactly once
    on disk."""
    store_dir = settings.data_dir / "history"

    def produce(lo: int, hi: int) -> None:
        with EventProducer(settings) as producer:
            for i in range(lo, hi):
                producer.send(Event.create(f"u{i % 13}", f"i{i % 17}", "view",
                                           timestamp=T0 + i, event_id=f"ev{i}"))
            producer.send_raw(b"u1", b"{not json")  # invalid: skipped, counted, not stored

    produce(0, 300)
    with HistoryConsumer(settings, HistoryStore(store_dir)) as consumer:
        assert consumer.catch_up(timeout=60) == 300
        assert consumer.stats.invalid == {"malformed_json": 1}
    produce(300, 500)
    # a consumer that dies before its flush: what it read is lost with it, offsets included
    crashed = HistoryConsumer(settings, HistoryStore(store_dir))
    crashed.wait_for_assignment()
    deadline = time.monotonic() + 20
    while crashed.stats.consumed == 0 and time.monotonic() < deadline:
        crashed._poll(0.5)
    assert crashed.stats.consumed > 0 and crashed.stats.stored == 0
    crashed.flush = lambda: 0  # as if killed: nothing written, not even on revoke
    crashed._consumer.close()
    # the next run, like a new process, sees only what is on disk
    store = HistoryStore(store_dir)
    with HistoryConsumer(settings, store) as consumer:
        assert consumer.catch_up(timeout=60) == 200
        assert consumer.stats.duplicates == 0
    rows = raw_rows(HistoryStore(store_dir))
    assert len(rows) == 500
    assert rows["event_id"].is_unique
    assert set(rows["event_id"]) == {f"ev{i}" for i in range(500)}
    # (partition, offset) pairs are unique too: no message was stored twice
    assert not rows.duplicated(["source_partition", "source_offset"]).any()
    total = sum(HistoryStore(store_dir).partition_offsets(settings.interactions_topic).values())
    assert total == 502  # 500 events + 2 invalid messages, all consumed exactly once


def test_a_future_dated_event_is_stored_at_its_arrival(settings):
    """A client clock a day ahead must not push the history's newest time (the trainer's
    decay reference and snapshot time) into tomorrow."""
    now = int(time.time() * 1000)
    with EventProducer(settings) as producer:
        producer.send(Event.create("u1", "i1", "view", timestamp=now + 23 * 3_600_000,
                                   event_id="ahead"))
        producer.send(Event.create("u2", "i2", "view", timestamp=now - 3_600_000,
                                   event_id="past"))
    store = HistoryStore(settings.data_dir / "history")
    with HistoryConsumer(settings, store) as consumer:
        assert consumer.catch_up(timeout=60) == 2
        assert consumer.stats.clamped == {"future": 1}
    rows = raw_rows(HistoryStore(settings.data_dir / "history")).set_index("event_id")
    assert now <= rows.loc["ahead", "timestamp"] <= int(time.time() * 1000)
    assert rows.loc["past", "timestamp"] == now - 3_600_000
    assert HistoryStore(settings.data_dir / "history").latest_event_ms <= int(time.time() * 1000)
