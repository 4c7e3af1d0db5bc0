import time

import orjson
import pytest

from recsys.events import MAX_PAYLOAD_BYTES, Event, EventType, InvalidEvent, Reason, parse_event

NOW_MS = int(time.time() * 1000)


def good(**overrides):
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view",
             "timestamp": NOW_MS}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def reject(payload) -> InvalidEvent:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    return info.value


def test_accepts_minimal_event_and_round_trips():
    event = parse_event(orjson.dumps(good()))
    assert event.event_type is EventType.VIEW
    assert parse_event(event.to_json()) == event
    assert event.key == b"u1"


def test_accepts_iso_timestamp_numeric_ids_rating_and_context():
    event = parse_event(orjson.dumps(good(
        user_id=42, item_id=7, event_type="RATING", value=4, timestamp="2024-05-01T12:00:00Z",
        context={"page": "home", "position": 3})))
    assert (event.user_id, event.item_id, event.value) == ("42", "7", 4.0)
    assert event.timestamp == 1714564800000
    assert event.context == {"page": "home", "position": 3}


def test_transaction_with_quantity():
    assert parse_event(orjson.dumps(good(event_type="transaction", value=3))).value == 3.0


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "event_type", "timestamp"])
def test_missing_field(field):
    err = reject(good(**{field: ...}))
    assert (err.reason, err.field) == (Reason.MISSING_FIELD, field)


@pytest.mark.parametrize("field,value", [
    ("user_id", 1.5), ("item_id", ["a"]), ("event_id", True), ("event_type", 3),
    ("timestamp", "yesterday"), ("value", "five"),
])
def test_wrong_type(field, value):
    err = reject(good(**{field: value}))
    assert (err.reason, err.field) == (Reason.WRONG_TYPE, field)


def test_unknown_event_type():
    err = reject(good(event_type="wishlist"))
    assert (err.reason, err.field) == (Reason.UNKNOWN_EVENT_TYPE, "event_type")
    assert "wishlist" in err.message


def test_id_too_long():
    err = reject(good(item_id="x" * 129))
    assert (err.reason, err.field) == (Reason.ID_TOO_LONG, "item_id")


def test_empty_id():
    assert reject(good(user_id="  ")).reason == Reason.EMPTY_ID


@pytest.mark.parametrize("ts", [0, 874724710, NOW_MS * 1000, "1970-01-02T00:00:00Z",
                                "2150-01-01T00:00:00Z"])
def test_timestamp_out_of_range(ts):
    err = reject(good(timestamp=ts))
    assert (err.reason, err.field) == (Reason.TIMESTAMP_OUT_OF_RANGE, "timestamp")


def test_a_future_time_is_data_not_an_error():
    # Clamping to arrival is the consumers' job (recsys.eventtime); validation keeps the event.
    event = parse_event(orjson.dumps(good(timestamp=NOW_MS + 23 * 3_600_000)))
    assert event.timestamp == NOW_MS + 23 * 3_600_000


def test_iso_time_without_zone_is_rejected_unless_configured_as_utc():
    err = reject(good(timestamp="2024-05-01T12:00:00"))
    assert (err.reason, err.field) == (Reason.TIMESTAMP_WITHOUT_TIMEZONE, "timestamp")
    assert "time zone" in err.message
    event = parse_event(orjson.dumps(good(timestamp="2024-05-01T12:00:00")), naive_utc=True)
    assert event.timestamp == 1714564800000
    with_zone = parse_event(orjson.dumps(good(timestamp="2024-05-01T14:00:00+02:00")))
    assert with_zone.timestamp == 1714564800000


@pytest.mark.parametrize("value", [0, 6, 5.5])
def test_rating_out_of_range(value):
    err = reject(good(event_type="rating", value=value))
    assert (err.reason, err.field) == (Reason.RATING_OUT_OF_RANGE, "value")


def test_rating_without_value():
    err = reject(good(event_type="rating"))
    assert (err.reason, err.field) == (Reason.MISSING_FIELD, "value")


def test_negative_quantity():
    assert reject(good(value=-1)).reason == Reason.VALUE_OUT_OF_RANGE


def test_oversized_payload():
    err = reject(orjson.dumps(good(context={"blob": "x" * MAX_PAYLOAD_BYTES})))
    assert err.reason == Reason.OVERSIZED_PAYLOAD


def test_malformed_json_and_non_object():
    assert reject(b'{"event_id": ').reason == Reason.MALFORMED_JSON
    assert reject(b"[1, 2]").reason == Reason.NOT_AN_OBJECT


def test_context_too_large():
    err = reject(good(context={f"k{i}": i for i in range(40)}))
    assert (err.reason, err.field) == (Reason.CONTEXT_TOO_LARGE, "context")


def test_create_fills_id_and_time():
    event = Event.create("u", "i", "addtocart")
    assert len(event.event_id) == 32 and abs(event.timestamp - time.time() * 1000) < 5000
