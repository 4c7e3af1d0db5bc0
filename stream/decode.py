"""From a micro-batch of Kafka records to validated events coalesced by user (pure).

Records of one user arrive in one partition, in offset order; `coalesce` keeps that order per
user, so folding a user's events into their state is the same whether they came in one batch
or many. A record that fails validation becomes a `Rejected` with the reason, and
`dead_letter_record` turns it into what goes to the dead-letter topic: the reason, the field,
the message, where it came from (topic/partition/offset) and the original payload, untouched.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field

import orjson

from recsys.events import Event, InvalidEvent, parse_event

PROCESSING_ERROR = "processing_error"  # dead-letter reason of events a failing batch gave up


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, framework-free."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # The record's Kafka timestamp (ms): its arrival time, what an event time is clamped to
    # (recsys.eventtime). None when unknown: the worker's clock is used.
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    record: Record
    reason: str
    field: str | None
    message: str


@dataclass(slots=True)
class Coalesced:
    by_user: dict[str, list[tuple[Event, Record]]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    misrouted: int = 0  # valid events whose Kafka key is not their user id

    @property
    def n_valid(self) -> int:
        return sum(len(events) for events in self.by_user.values())


def coalesce(records: list[Record], naive_utc: bool = False) -> Coalesced:
    out = Coalesced()
    for record in records:
        try:
            event = parse_event(record.value if record.value is not None else b"",
                                naive_utc=naive_utc)
        except InvalidEvent as exc:
            out.rejected.append(Rejected(record, str(exc.reason), exc.field, exc.message))
            continue
        if record.key is not None and record.key != event.key:
            out.misrouted += 1
        out.by_user.setdefault(event.user_id, []).append((event, record))
    return out


def _payload_fields(raw: bytes | None) -> dict[str, str | None]:
    if raw is None:
        return {"payload": None, "payload_encoding": None}
    try:
        return {"payload": raw.decode("utf-8"), "payload_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(raw).decode("ascii"), "payload_encoding": "base64"}


def _redacted_fields(raw: bytes | None) -> dict[str, str | int | None]:
    if raw is None:
        return {"payload": None, "payload_encoding": None}
    return {"payload": None, "payload_encoding": "redacted", "payload_bytes": len(raw),
            "payload_sha256": hashlib.sha256(raw).hexdigest()}


def dead_letter_record(rejected: Rejected, worker: str, redact: bool = False
                       ) -> tuple[bytes | None, bytes]:
    """(key, value) of the dead-letter record for one rejected input record. `redact`: the
    payload is replaced by its size and SHA-256 (Settings.dead_letter_redact_payload); the
    topic, partition and offset still lead to the original while the source retains it."""
    rec = rejected.record
    key_text = None
    if rec.key is not None:
        key_text = rec.key.decode("utf-8", errors="replace")
    value = {
        "reason": rejected.reason,
        "field": rejected.field,
        "message": rejected.message,
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key": key_text,
        **(_redacted_fields(rec.value) if redact else _payload_fields(rec.value)),
        "worker": worker,
        "rejected_at_ms": int(time.time() * 1000),
    }
    return rec.key, orjson.dumps(value)
