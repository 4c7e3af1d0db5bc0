"""The trainer's own durable interaction history: Parquet files in `settings.data_dir/history`,
or wherever `trainer_history_uri` points: any filesystem pyarrow understands (a local path,
`file:///...`, `s3://bucket/prefix`), read and written through `pyarrow.fs`.

Why Parquet (pyarrow): the trainer only ever reads whole columns (user, item, type, value,
time) of the whole history to build a sparse matrix, which is what a columnar format is for;
ids compress well with dictionary encoding and a million events read back in a fraction of a
second. Parquet files are immutable, so appending is "one new file per flush" and a periodic
compaction merges them (dropping events older than the retention window and duplicates).

Exactly-once from Kafka without a transaction manager: every file carries, in its own
key-value metadata, the next offset of every partition it covers (`recsys.offsets`,
{"topic:partition": next_offset}). A file is written under a temporary name and renamed into
place, so its rows and its offsets appear together or not at all. On restart the consumer
seeks each assigned partition to the highest stored offset: what is on disk is exactly what
was consumed. (On an object store "rename" is a copy of the finished object, which appears
whole or not at all: the same guarantee.) Kafka's committed group offsets are also updated
after each flush, but only so that lag shows in the usual tools; the files are the source of
truth.

Unreadable files (a corrupt Parquet footer or page) are moved to `quarantine/` beside the
history, with an error log line and `recsys_trainer_history_quarantined_total`, and the trainer
goes on without them instead of failing every run.

Compaction writes `base-<seq>-<random>.parquet` naming the files it replaces (`recsys.replaces`); a
crash between writing it and deleting those files is repaired on the next open.

Dedupe by (user, event id), like the stream worker's per-user dedupe: event ids are the
client's, and two producers numbering their events "1", "2", ... must not lose each other's
events. Every stored (user, event id) pair is kept as a 64-bit hash in a sorted array (8 bytes
an event, not a Python string set); a new event whose pair hash is known is skipped.

Retention: events older than `retention_days` before the newest stored event are dropped at
compaction and ignored by `load` (relative to the newest event rather than the wall clock,
so that replaying an old dataset keeps it).
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys.quality import unique_sorted
from recsys.sources import FRAME_COLUMNS
from trainer.errors import HistoryError

log = logging.getLogger(__name__)
T = TypeVar("T")

MS_PER_DAY = 86_400_000
OFFSETS_KEY = b"recsys.offsets"
REPLACES_KEY = b"recsys.replaces"
_DICTIONARY_COLUMNS = ("user_id", "item_id", "event_type")  # few distinct values: codes
# part-<seq>-<random>.parquet: the sequence orders files, the random suffix keeps two
# processes that append at once (the lease forbids it, a stray `--from-file` might not) from
# overwriting each other's file. Names without the suffix (older histories) still match.
_PART_RE = re.compile(r"^(part|base)-(\d{12})(?:-[0-9a-f]{8})?\.parquet$")
_BASE_RE = re.compile(r"^base-.*\.parquet$")
_TMP_RE = re.compile(r".*\.tmp$")

SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("event_type", pa.string()),
    ("value", pa.float64()),
    ("timestamp", pa.int64()),
    # where the row came from: Kafka partition/offset, or -1/-1 for a seeded dataset
    ("source_partition", pa.int32()),
    ("source_offset", pa.int64()),
])


def id_hashes(event_ids: Iterable[str] | np.ndarray | pd.Series) -> np.ndarray:
    """Deterministic 64-bit hashes of event ids (pandas' SipHash with a fixed key)."""
    values = np.asarray(event_ids, dtype=object)
    return pd.util.hash_array(values, categorize=False).astype(np.uint64)


def event_key_hashes(user_ids: Iterable[str] | np.ndarray | pd.Series,
                     event_ids: Iterable[str] | np.ndarray | pd.Series) -> np.ndarray:
    """64-bit hashes of (user, event id) pairs: the trainer's dedupe key. The two ids are
    hashed apart and combined (h_user * odd constant XOR h_event, mod 2^64), which costs no
    string building: about twice the hashing of the event ids alone."""
    return (id_hashes(user_ids) * _MIX) ^ id_hashes(event_ids)


_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd: a bijection mod 2^64


@dataclass(frozen=True)
class Snapshot:
    """Where a history (and the model trained on it) stands in the stream."""

    offsets: dict[str, int] = field(default_factory=dict)
    latest_event_ms: int = 0
    n_events: int = 0

    def as_manifest(self) -> dict[str, Any]:
        return {"offsets": dict(self.offsets), "latest_event_ms": int(self.latest_event_ms)}


def offset_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def open_location(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a local path or a filesystem URI pyarrow understands."""
    text = str(location)
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, pa.ArrowException) as exc:
        raise HistoryError(f"history location {text!r} is not a filesystem URI pyarrow "
                           f"understands: {exc}") from exc
    return fs, path.rstrip("/")


class HistoryStore:
    """Append-only Parquet event store with per-partition offsets kept beside the rows.

    `location` is a local path or a filesystem URI (module docstring). Files are named by
    PurePosixPath; on the local filesystem they are Paths."""

    def __init__(self, location: str | Path, retention_days: float | None = None,
                 quarantine: str = "quarantine",
                 on_quarantine: Callable[[], object] | None = None) -> None:
        self.fs, root = open_location(location)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self.directory: PurePosixPath = Path(root) if self._local else PurePosixPath(root)
        self.location = str(location)
        self.retention_days = retention_days
        self.quarantine_dir = self.directory / quarantine
        self._on_quarantine = on_quarantine
        try:
            self.fs.create_dir(str(self.directory), recursive=True)
        except (OSError, pa.ArrowException) as exc:
            raise HistoryError(f"cannot open the history at {self.location}: {exc}") from exc
        self._offsets: dict[str, int] = {}
        self._known_ids: np.ndarray | None = None  # built on first use: see `_known`
        self._latest_ms = 0
        self._seq = 0
        self._recover()
        self._scan()

    # --- opening -----------------------------------------------------------------------
    def _list(self, pattern: re.Pattern[str]) -> list[PurePosixPath]:
        infos = self.fs.get_file_info(pafs.FileSelector(str(self.directory),
                                                        allow_not_found=True))
        return [self.directory / info.base_name for info in infos
                if info.type == pafs.FileType.File and pattern.match(info.base_name)]

    def _exists(self, path: PurePosixPath) -> bool:
        return self.fs.get_file_info(str(path)).type != pafs.FileType.NotFound

    def _delete(self, path: PurePosixPath) -> None:
        try:
            self.fs.delete_file(str(path))
        except FileNotFoundError:
            pass

    def files(self) -> list[PurePosixPath]:
        return sorted(self._list(_PART_RE), key=lambda p: (_seq_of(p), p.name))

    def quarantine(self, path: PurePosixPath, exc: BaseException) -> None:
        """Move an unreadable file aside (it would fail every run) and go on without it. Its
        events are missing from training until restored; later files carry the offsets."""
        self.fs.create_dir(str(self.quarantine_dir), recursive=True)
        target = self.quarantine_dir / f"{path.name}.{uuid.uuid4().hex[:8]}"
        try:
            self.fs.move(str(path), str(target))
        except FileNotFoundError:
            return
        if self._local:
            _fsync_dir(Path(self.directory))
        self._known_ids = None  # rebuilt without it on next use
        log.error("history file %s is unreadable (%s): moved to %s; training goes on without "
                  "its events", path.name, exc, target)
        if self._on_quarantine is not None:
            self._on_quarantine()

    def _readable(self, read: Callable[[PurePosixPath], T]) -> list[T]:
        """`read` of every file; a file that fails is quarantined and left out."""
        out = []
        for path in self.files():
            try:
                out.append(read(path))
            except (OSError, ValueError, pa.ArrowException, HistoryError) as exc:
                self.quarantine(path, exc)
        return out

    def _recover(self) -> None:
        for stale in self._list(_TMP_RE):
            self._delete(stale)
        for base in self._list(_BASE_RE):
            try:
                replaces = _metadata(base, self.fs).get(REPLACES_KEY, [])
            except HistoryError as exc:
                self.quarantine(base, exc)
                continue
            for name in replaces:
                leftover = self.directory / name
                if leftover != base and self._exists(leftover):
                    log.warning("removing %s, already merged into %s", leftover.name, base.name)
                    self._delete(leftover)

    def _scan(self) -> None:
        """Offsets, newest event time and file sequence, from the files' footers only."""
        for path, meta, latest in self._readable(
                lambda p: (p, _metadata(p, self.fs), _max_timestamp(p, self.fs))):
            for key, offset in meta.get(OFFSETS_KEY, {}).items():
                self._offsets[key] = max(self._offsets.get(key, 0), int(offset))
            self._latest_ms = max(self._latest_ms, latest)
            self._seq = max(self._seq, _seq_of(path))

    @property
    def _known(self) -> np.ndarray:
        """Sorted hashes of every stored (user, event id). Read from the files when first
        needed (append, compaction, n_events): hashing a large history costs time that a
        process that only trains (`train --once --no-consume`) should not pay."""
        if self._known_ids is None:
            def read(path: PurePosixPath) -> np.ndarray:
                table = pq.read_table(str(path), columns=["user_id", "event_id"],
                                      filesystem=self.fs)
                return event_key_hashes(table.column("user_id").to_numpy(zero_copy_only=False),
                                        table.column("event_id").to_numpy(zero_copy_only=False))

            hashes = self._readable(read)
            self._known_ids = (unique_sorted(np.concatenate(hashes)) if hashes else
                               np.empty(0, dtype=np.uint64))
        return self._known_ids

    @_known.setter
    def _known(self, value: np.ndarray) -> None:
        self._known_ids = value

    # --- state -------------------------------------------------------------------------
    @property
    def offsets(self) -> dict[str, int]:
        """Next offset to consume per "topic:partition" (what the stored rows cover)."""
        return dict(self._offsets)

    def partition_offsets(self, topic: str) -> dict[int, int]:
        prefix = f"{topic}:"
        return {int(k[len(prefix):]): v for k, v in self._offsets.items() if k.startswith(prefix)}

    @property
    def n_events(self) -> int:
        return int(self._known.size)

    @property
    def latest_event_ms(self) -> int:
        return self._latest_ms

    def snapshot(self) -> Snapshot:
        return Snapshot(self.offsets, self._latest_ms, self.n_events)

    # --- writing -----------------------------------------------------------------------
    def append(self, frame: pd.DataFrame, offsets: Mapping[str, int] | None = None) -> int:
        """Store new events (an event frame, optionally with source_partition/source_offset
        columns) together with the offsets they bring the history to. Events whose id is
        already stored, or repeated within `frame`, are skipped. Returns the rows written.

        A call with no new rows but new offsets still writes (an empty file), so that offsets
        of skipped (invalid or duplicate) messages are not consumed again after a restart.
        """
        if len(frame):
            frame = frame.loc[~frame.duplicated(subset=["user_id", "event_id"])]
        hashes = (event_key_hashes(frame["user_id"], frame["event_id"]) if len(frame) else
                  np.empty(0, np.uint64))
        if len(hashes) and self._known.size:
            pos = np.searchsorted(self._known, hashes)
            seen = self._known[np.minimum(pos, self._known.size - 1)] == hashes
            frame, hashes = frame.loc[~seen], hashes[~seen]
        new_offsets = {k: int(v) for k, v in (offsets or {}).items()
                       if int(v) > self._offsets.get(k, -1)}
        if not len(frame) and not new_offsets:
            return 0
        table = _to_table(frame)
        meta = {OFFSETS_KEY: orjson.dumps({**self._offsets, **new_offsets})}
        self._seq += 1
        self._write(table, f"part-{self._seq:012d}-{uuid.uuid4().hex[:8]}.parquet", meta)
        self._offsets.update(new_offsets)
        if len(hashes):
            self._known = unique_sorted(np.concatenate([self._known, hashes]))
            self._latest_ms = max(self._latest_ms, int(frame["timestamp"].max()))
        return len(frame)

    def erase(self, users: Iterable[str]) -> int:
        """Remove every row of `users` from the files (erasure): each file holding one is
        rewritten without them, under its own name, with its metadata (offsets) kept.
        Returns the rows removed."""
        wanted = pa.array(sorted({str(u) for u in users}), type=pa.string())
        if not len(wanted):
            return 0
        removed = 0
        for path in self.files():
            try:
                ids = pq.read_table(str(path), columns=["user_id"],
                                    filesystem=self.fs).column("user_id")
            except (OSError, pa.ArrowException) as exc:
                self.quarantine(path, exc)
                continue
            hit = pc.is_in(ids.cast(pa.string()), value_set=wanted)
            n = pc.sum(hit).as_py() or 0
            if not n:
                continue
            table = pq.read_table(str(path), schema=SCHEMA, filesystem=self.fs)
            meta = pq.read_schema(str(path), filesystem=self.fs).metadata or {}
            kept = table.filter(pc.invert(pc.is_in(table.column("user_id"), value_set=wanted)))
            self._write(kept, path.name, dict(meta))
            removed += int(n)
        if removed:
            self._known_ids = None  # the erased events' ids go with them
            log.info("erasure: %d history rows of %d users removed", removed, len(wanted))
        return removed

    def _write(self, table: pa.Table, name: str, meta: dict[bytes, bytes]) -> PurePosixPath:
        final = self.directory / name
        tmp = self.directory / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        table = table.replace_schema_metadata(meta)
        pq.write_table(table, str(tmp), compression="zstd", use_dictionary=True,
                       filesystem=self.fs)
        if self._local:
            with open(tmp, "rb") as handle:  # durable before it becomes visible
                os.fsync(handle.fileno())
        self.fs.move(str(tmp), str(final))
        if self._local:
            _fsync_dir(Path(self.directory))
        return final

    def compact(self) -> Path | None:
        """Merge every file into one base file: retention applied, duplicates removed."""
        files = self.files()
        if len(files) <= 1:
            return None
        started = time.perf_counter()
        tables = self._readable(
            lambda p: (p, pq.read_table(str(p), schema=SCHEMA, filesystem=self.fs)))
        files = [p for p, _ in tables]
        if not files:
            return None
        table = pa.concat_tables([t for _, t in tables])
        frame = table.to_pandas()
        frame = frame.loc[~frame.duplicated(subset=["user_id", "event_id"])]
        frame = self._apply_retention(frame)
        meta = {OFFSETS_KEY: orjson.dumps(self._offsets),
                REPLACES_KEY: orjson.dumps([p.name for p in files])}
        seq = _seq_of(files[-1])
        base = self._write(_to_table(frame), f"base-{seq:012d}-{uuid.uuid4().hex[:8]}.parquet",
                           meta)
        for path in files:
            if path != base:
                self._delete(path)
        self._known = (unique_sorted(event_key_hashes(frame["user_id"], frame["event_id"]))
                       if len(frame) else np.empty(0, np.uint64))
        log.info("history compacted: %d files -> %s, %d events (%.2fs)", len(files), base.name,
                 len(frame), time.perf_counter() - started)
        return base

    # --- reading -----------------------------------------------------------------------
    def _apply_retention(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.retention_days is None or not len(frame):
            return frame
        horizon = int(frame["timestamp"].max()) - int(self.retention_days * MS_PER_DAY)
        return frame.loc[frame["timestamp"].to_numpy() >= horizon]

    def load(self, with_source: bool = False, columns: list[str] | None = None
             ) -> pd.DataFrame:
        """The whole history as an event frame (ids as pandas categoricals: cheap to index),
        retention applied; not sorted (callers that need order sort by timestamp).

        `columns` narrows the read (default: every event column, plus the source columns
        with `with_source`); the trainer leaves out event_id, a unique string per row that
        costs as much to decode as all the other columns together. `timestamp` is always
        read (retention needs it)."""
        files = self.files()
        columns = list(columns) if columns is not None else (
            FRAME_COLUMNS + (["source_partition", "source_offset"] if with_source else []))
        if "timestamp" not in columns:
            columns.append("timestamp")
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=SCHEMA.field(c).type.to_pandas_dtype())
                                 for c in columns})
        dictionary = [c for c in _DICTIONARY_COLUMNS if c in columns]
        # no schema= here: it would override read_dictionary and decode every id to a
        # string (every file is written with SCHEMA anyway)
        tables = self._readable(
            lambda p: pq.read_table(str(p), columns=columns, read_dictionary=dictionary,
                                    filesystem=self.fs))
        if not tables:
            return self.load(with_source, columns) if self.files() else pd.DataFrame(
                {c: pd.Series(dtype=SCHEMA.field(c).type.to_pandas_dtype()) for c in columns})
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (OSError, pa.ArrowException) as exc:
            raise HistoryError(f"cannot read the history in {self.location}: {exc}") from exc
        # no unify_dictionaries(): 0.2 s for 1M rows even when every chunk shares one
        # dictionary (one file); _to_frame's combine_chunks unifies differing ones itself
        frame = _to_frame(table)
        return self._apply_retention(frame).reset_index(drop=True)


def _seq_of(path: PurePosixPath) -> int:
    return int(_PART_RE.match(path.name).group(2))  # type: ignore[union-attr]


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """Dictionary columns become pandas categoricals straight from their codes and dictionary
    (a third of the time of pyarrow's to_pandas for a million rows); the others, numpy."""
    data = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            chunk = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
            categories = pd.Index(chunk.dictionary.to_numpy(zero_copy_only=False), dtype=object)
            codes = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            data[name] = pd.Categorical.from_codes(codes, categories=categories)
        else:
            data[name] = column.to_pandas()
    return pd.DataFrame(data)


def _to_table(frame: pd.DataFrame) -> pa.Table:
    n = len(frame)
    data = {
        "event_id": frame["event_id"].astype(str).to_numpy(),
        "user_id": frame["user_id"].astype(str).to_numpy(),
        "item_id": frame["item_id"].astype(str).to_numpy(),
        "event_type": frame["event_type"].astype(str).to_numpy(),
        "value": frame["value"].to_numpy(dtype=np.float64),
        "timestamp": frame["timestamp"].to_numpy(dtype=np.int64),
        "source_partition": (frame["source_partition"].to_numpy(dtype=np.int32)
                             if "source_partition" in frame else np.full(n, -1, np.int32)),
        "source_offset": (frame["source_offset"].to_numpy(dtype=np.int64)
                          if "source_offset" in frame else np.full(n, -1, np.int64)),
    }
    return pa.Table.from_pydict(data, schema=SCHEMA)


def _max_timestamp(path: PurePosixPath, fs: pafs.FileSystem) -> int:
    """Newest event time in a file: from the row groups' statistics (footer only) when the
    writer stored them (pyarrow does), else by reading the column."""
    try:
        meta = pq.read_metadata(str(path), filesystem=fs)
        column = meta.schema.names.index("timestamp")
        stats = [meta.row_group(g).column(column).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max for s in stats):
            return max((int(s.max) for s in stats), default=0)
        table = pq.read_table(str(path), columns=["timestamp"], filesystem=fs)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise HistoryError(f"unreadable history file {path}: {exc}") from exc
    return int(pc.max(table["timestamp"]).as_py() or 0) if table.num_rows else 0


def _metadata(path: PurePosixPath, fs: pafs.FileSystem) -> dict[bytes, Any]:
    try:
        raw = pq.read_schema(str(path), filesystem=fs).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise HistoryError(f"unreadable history file {path}: {exc}") from exc
    return {k: orjson.loads(v) for k, v in raw.items() if k in (OFFSETS_KEY, REPLACES_KEY)}


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
