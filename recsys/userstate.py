"""A user's state in the stream: bounded recent history plus what makes updates idempotent.

One `UserState` is one value of the Faust table, so the history and the dedupe memory are
persisted together, in one changelog record: after a crash they can never disagree.

Idempotence has two layers:

* **Offsets** (exact, unbounded): the state remembers the highest source offset it applied in
  its partition. A restarted or rebalanced worker re-reads everything after the last commit;
  each of those records has an offset at or below the watermark if it was applied already,
  whatever their number.
* **Event ids** (bounded): a producer that re-sends an event (retry after a timeout, a client
  that submits twice) creates a new record with a new offset and the same `event_id`. The last
  `max_ids` ids are kept as 63-bit hashes, which covers re-sends close in time.

History: item -> [accumulated weighted count, last event time ms]. When it grows past
`max_items`, the item touched longest ago (by event time) is forgotten. The fold-in turns the
weighted count w into the confidence c = 1 + alpha * w (recsys.confidence).

No I/O and no framework imports here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import orjson

from recsys.confidence import confidence
from recsys.foldin import UserHistory
from recsys.sequence_model import Sequences, recent_items, to_rows

K = TypeVar("K", bound=Hashable)


class StateDecodeError(ValueError):
    """A stored value is not a UserState encoding."""


def event_id_hash(event_id: str) -> int:
    """Stable 63-bit hash of an event id (fits a signed int64 and JSON integers)."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True, slots=True)
class Limits:
    max_items: int = 200
    max_ids: int = 64

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_ids < 1:
            raise ValueError("history and dedupe limits must be >= 1")


@dataclass(slots=True)
class UserState:
    items: dict[str, list[float]] = field(default_factory=dict)  # item -> [weight, last_ms]
    recent_ids: list[int] = field(default_factory=list)  # oldest first
    partition: int = -1
    offset: int = -1  # highest offset applied in `partition`
    last_event_ms: int = 0
    # Model version whose vector was last computed from this history (None: none yet).
    version: str | None = None
    # When this worker last applied an event of the user (its own clock, epoch ms; not the
    # client's event time): what idle expiry and the switch's recompute window look at.
    touched_ms: int = 0

    def last_active_ms(self) -> int:
        """The worker's time of the user's last event (event time for states written before
        `touched_ms` existed)."""
        return self.touched_ms or self.last_event_ms

    # --- updates -----------------------------------------------------------------------
    def is_replay(self, partition: int, offset: int) -> bool:
        return partition == self.partition and offset <= self.offset

    def apply(self, event_id: str, item: str, weight: float, timestamp_ms: int,
              partition: int, offset: int, limits: Limits) -> bool:
        """Fold one event into the history. False (and nothing changes but the offset
        watermark) when it was applied before."""
        if self.is_replay(partition, offset):
            return False
        self._advance(partition, offset)
        h = event_id_hash(event_id)
        if h in self.recent_ids:
            return False
        self.recent_ids.append(h)
        if len(self.recent_ids) > limits.max_ids:
            del self.recent_ids[: len(self.recent_ids) - limits.max_ids]
        entry = self.items.get(item)
        if entry is None:
            self.items[item] = [float(weight), int(timestamp_ms)]
            if len(self.items) > limits.max_items:
                self._evict_oldest(keep=item)
        else:
            entry[0] += float(weight)
            entry[1] = max(int(entry[1]), int(timestamp_ms))
        self.last_event_ms = max(self.last_event_ms, int(timestamp_ms))
        return True

    def _advance(self, partition: int, offset: int) -> None:
        if partition != self.partition:
            # The user's records moved (topic re-partitioned, or a producer keyed them
            # differently): offsets of different partitions are not comparable.
            self.partition, self.offset = partition, offset
        else:
            self.offset = max(self.offset, offset)

    def _evict_oldest(self, keep: str) -> None:
        # One item enters at a time, so one leaves: O(max_items) per eviction.
        oldest = min((i for i in self.items if i != keep), key=lambda i: self.items[i][1])
        del self.items[oldest]

    # --- reading -----------------------------------------------------------------------
    def known_history(self, item_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, int]:
        """(row indices, weighted counts) of the items the model knows, and how many it
        does not know (they stay in the history until a model that knows them arrives)."""
        rows: list[int] = []
        weights: list[float] = []
        for item, (weight, _) in self.items.items():
            row = item_index.get(item)
            if row is not None:
                rows.append(row)
                weights.append(weight)
        return (np.asarray(rows, dtype=np.int64), np.asarray(weights, dtype=np.float64),
                len(self.items) - len(rows))

    def has_events_after(self, latest_event_ms: int, topic_offsets: dict[str, int],
                         topic: str) -> bool:
        """Did this user act after a model's data snapshot?

        The snapshot is a set of Kafka offsets (the next offset the trainer would have read,
        per partition): an event at or past it was not in the training data, whatever time
        the producer wrote on it. A partition of the topic missing from a snapshot that has
        others was not read at all. Only a snapshot with no offsets for the topic (a history
        loaded from files) falls back to event time, the best it has."""
        prefix = f"{topic}:"
        if any(key.startswith(prefix) for key in topic_offsets):
            next_offset = topic_offsets.get(f"{prefix}{self.partition}")
            return next_offset is None or self.offset >= int(next_offset)
        return self.last_event_ms > latest_event_ms

    # --- wire format -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        raw = orjson.dumps({"i": self.items, "d": self.recent_ids, "p": self.partition,
                            "o": self.offset, "t": self.last_event_ms, "v": self.version,
                            "a": self.touched_ms})
        # orjson's result keeps its whole output buffer (~4 KB) allocated however short the
        # text; table values live long, so copy into an object of the right size (resident
        # memory per user in docs/benchmarks.md).
        return bytes(memoryview(raw))

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserState:
        if raw is None:
            return cls()
        try:
            data: Any = orjson.loads(raw)
            items = {str(k): [float(v[0]), int(v[1])] for k, v in data["i"].items()}
            return cls(items=items, recent_ids=[int(h) for h in data["d"]],
                       partition=int(data["p"]), offset=int(data["o"]),
                       last_event_ms=int(data["t"]), version=data.get("v"),
                       touched_ms=int(data.get("a", 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError,
                AttributeError) as exc:
            raise StateDecodeError(f"not a user state: {exc}") from None


def fold_in_inputs(states: Iterable[tuple[K, UserState]], item_index: dict[str, int],
                   alpha: float) -> tuple[list[K], list[UserHistory]]:
    """What `recsys.foldin.fold_in_batch` needs for these users under one model: the users
    with at least one item the model knows, and per user (item rows, confidences
    c = 1 + alpha * weighted count). A user with none is left out (no vector to write).

    The one place that turns stream state into fold-in inputs: the stream worker
    (stream.processor) and the replay evaluation (evaluation.replay) both call it."""
    users: list[K] = []
    histories: list[UserHistory] = []
    for user, state in states:
        rows, weights, _unknown = state.known_history(item_index)
        # A net weight of 0 (liked, then disliked as much) is no entry, as in the trainer's
        # matrix (recsys.matrix.weight_matrix drops zeros).
        nonzero = weights != 0.0
        rows, weights = rows[nonzero], weights[nonzero]
        if len(rows):
            users.append(user)
            histories.append((rows, np.asarray(confidence(weights, alpha))))
    return users, histories


def tower_inputs(states: Iterable[tuple[K, UserState]], item_index: dict[str, int],
                 window: int) -> tuple[list[K], Sequences]:
    """What the neural user tower (recsys.sequence_model.UserTower) needs for these users under
    one model: the users with at least one item the model knows, and per user the rows of
    those items, oldest first (by last touch, recsys.sequence_model.recent_items), cut to the
    newest `window`. Unknown items are skipped and counted (`Sequences.unknown`), as are users
    whose sequence was truncated. The stream worker and the replay both call it."""
    users = []
    sequences = []
    for user, state in states:
        users.append(user)
        sequences.append(recent_items(state.items))
    converted = to_rows(sequences, item_index, window)
    keep = [i for i, rows in enumerate(converted.rows) if len(rows)]
    return ([users[i] for i in keep],
            Sequences([converted.rows[i] for i in keep], converted.unknown, converted.truncated))
