"""Coalescing a batch by user, and what a dead letter carries."""

import base64

import orjson

from recsys.events import Event
from stream.decode import Record, coalesce, dead_letter_record


def _rec(offset, value, key=b"u1", partition=0):
    return Record("t", partition, offset, key, value)


def _ev(user, item, event_id, **kw):
    return Event.create(user, item, "view", event_id=event_id, **kw).to_json()


def test_events_are_grouped_by_user_in_offset_order():
    records = [_rec(0, _ev("u1", "a", "e1")), _rec(1, _ev("u2", "b", "e2"), key=b"u2"),
               _rec(2, _ev("u1", "c", "e3")), _rec(3, _ev("u1", "a", "e4"))]
    batch = coalesce(records)
    assert list(batch.by_user) == ["u1", "u2"]
    assert [e.event_id for e, _ in batch.by_user["u1"]] == ["e1", "e3", "e4"]
    assert [r.offset for _, r in batch.by_user["u1"]] == [0, 2, 3]
    assert batch.n_valid == 4 and not batch.rejected and batch.misrouted == 0


def test_invalid_records_are_rejected_with_their_reason_and_the_rest_kept():
    records = [_rec(0, b"{not json"), _rec(1, None), _rec(2, b'{"event_id": "x"}'),
               _rec(3, _ev("u1", "a", "e1")),
               _rec(4, orjson.dumps({"event_id": "e", "user_id": "u1", "item_id": "a",
                                     "event_type": "teleport", "timestamp": 1_700_000_000_000}))]
    batch = coalesce(records)
    assert [(r.record.offset, r.reason) for r in batch.rejected] == [
        (0, "malformed_json"), (1, "malformed_json"), (2, "missing_field"),
        (4, "unknown_event_type")]
    assert batch.rejected[3].field == "event_type"
    assert batch.n_valid == 1


def test_a_key_that_is_not_the_user_id_is_counted():
    batch = coalesce([_rec(0, _ev("u1", "a", "e1"), key=b"someone-else")])
    assert batch.misrouted == 1 and batch.n_valid == 1


def test_dead_letter_carries_reason_origin_and_the_untouched_payload():
    text = coalesce([_rec(7, b'{"user_id": 1', partition=3)]).rejected[0]
    key, value = dead_letter_record(text, "w1")
    letter = orjson.loads(value)
    assert key == b"u1"
    assert letter["reason"] == "malformed_json" and letter["message"]
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("t", 3, 7)
    assert letter["payload"] == '{"user_id": 1' and letter["payload_encoding"] == "utf-8"
    assert letter["worker"] == "w1"

    binary = coalesce([_rec(8, b"\xff\xfe\x00")]).rejected[0]
    letter = orjson.loads(dead_letter_record(binary, "w1")[1])
    assert letter["payload_encoding"] == "base64"
    assert base64.b64decode(letter["payload"]) == b"\xff\xfe\x00"


def test_a_redacted_dead_letter_keeps_only_size_and_digest_of_the_payload():
    import hashlib

    raw = b'{"user_id": "alice@example.com", "item_id": 3'
    rejected = coalesce([_rec(9, raw, partition=1)]).rejected[0]
    letter = orjson.loads(dead_letter_record(rejected, "w1", redact=True)[1])
    assert letter["payload"] is None and letter["payload_encoding"] == "redacted"
    assert letter["payload_bytes"] == len(raw)
    assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    assert (letter["reason"], letter["partition"], letter["offset"]) == ("malformed_json", 1, 9)
    assert b"alice" not in dead_letter_record(rejected, "w1", redact=True)[1]
