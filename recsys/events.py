"""The interaction event: the one wire contract between producers and every consumer.

JSON on the wire, one event per Kafka message, keyed by `user_id` so that all of a user's
events land in one partition (and one Faust table shard). Validation happens at every edge
(HTTP ingest, producer client, stream worker) with the same code, and every rejection carries
a machine-readable `reason` plus the offending `field`, which is what the dead-letter topic and
the 4xx responses report.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from recsys.errors import RecsysError

MAX_ID_LENGTH = 128
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_CONTEXT_ENTRIES = 32
# The context key naming the served recommendation list an event came from.
RECOMMENDATION_ID = "recommendation_id"
RATING_MIN, RATING_MAX = 1.0, 5.0
MAX_QUANTITY = 1_000_000.0
# MovieLens-100K starts in 1997; anything before 1990 is a unit mistake (seconds vs ms, say),
# and anything after 2100 too (microseconds vs ms). Between those, a time in the future is not
# rejected: it is clamped to its arrival time by whoever uses it as a clock (recsys.eventtime).
MIN_TIMESTAMP_MS = 631_152_000_000  # 1990-01-01T00:00:00Z
MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
# Validation context key: read ISO-8601 text without a zone as UTC (Settings.event_time_naive_utc)
NAIVE_UTC = "naive_utc"


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADDTOCART = "addtocart"
    TRANSACTION = "transaction"
    RATING = "rating"
    # Negative feedback: the user does not want the item (recsys.confidence).
    DISLIKE = "dislike"
    HIDE = "hide"


NEGATIVE_EVENT_TYPES = frozenset({EventType.DISLIKE, EventType.HIDE})


class Reason(StrEnum):
    """Why an event was rejected. Stable strings: dashboards and DLQ consumers match on them."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    OVERSIZED_PAYLOAD = "oversized_payload"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_ID = "empty_id"
    ID_TOO_LONG = "id_too_long"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    TIMESTAMP_WITHOUT_TIMEZONE = "timestamp_without_timezone"
    RATING_OUT_OF_RANGE = "rating_out_of_range"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    CONTEXT_TOO_LARGE = "context_too_large"


class InvalidEvent(RecsysError):
    """An event failed validation. `reason` is a Reason, `field` the offending field or None."""

    def __init__(self, reason: Reason, message: str, field: str | None = None) -> None:
        super().__init__(f"{field + ': ' if field else ''}{message}")
        self.reason = reason
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, Any]:
        return {"reason": str(self.reason), "field": self.field, "message": self.message}


def _custom(reason: Reason, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(str(reason), message, ctx or None)


def _parse_timestamp(value: Any, naive_utc: bool = False) -> int:
    """Epoch milliseconds (int) or ISO-8601 text -> epoch milliseconds.

    ISO text must carry its zone ("Z" or "+02:00"): a time without one is whatever the
    producer's local time was, and reading it as UTC is how a client hours ahead of UTC ends
    up in the future. It is rejected unless `naive_utc` (a deployment whose producers all
    send UTC can say so)."""
    if isinstance(value, bool):
        raise _custom(Reason.WRONG_TYPE, "timestamp must be epoch milliseconds or ISO-8601 text")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _custom(Reason.TIMESTAMP_OUT_OF_RANGE, "timestamp must be finite")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _custom(
                Reason.WRONG_TYPE, "timestamp text is not ISO-8601: {value}", value=value[:64]
            ) from None
        if parsed.tzinfo is None:
            if not naive_utc:
                raise _custom(
                    Reason.TIMESTAMP_WITHOUT_TIMEZONE,
                    "timestamp text {value} has no time zone; add 'Z' or an offset "
                    "like +02:00, or send epoch milliseconds",
                    value=value[:64],
                )
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    raise _custom(Reason.WRONG_TYPE, "timestamp must be epoch milliseconds or ISO-8601 text")


def _check_id(value: Any) -> str:
    # Numeric ids are common (MovieLens, Retailrocket); they are carried as text.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _custom(Reason.WRONG_TYPE, "must be a string (or an integer)")
    text = str(value)
    if not text or text.isspace():
        raise _custom(Reason.EMPTY_ID, "must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise _custom(
            Reason.ID_TOO_LONG,
            "is {length} characters; at most {limit} allowed",
            length=len(text),
            limit=MAX_ID_LENGTH,
        )
    if any(ord(ch) < 32 for ch in text):
        raise _custom(Reason.WRONG_TYPE, "must not contain control characters")
    return text


class Event(BaseModel):
    """One user-item interaction."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    user_id: str
    item_id: str
    event_type: EventType
    timestamp: int = Field(description="Epoch milliseconds (ISO-8601 accepted on input).")
    value: float | None = Field(default=None, description="Rating 1-5, or a quantity.")
    context: dict[str, str | int | float | bool] | None = Field(
        default=None,
        description="Free map of at most 32 entries. `recommendation_id`: the id of the served "
        "recommendation list this event came from (every recommendation response carries "
        "one); the event is then attributed to that list (recsys.attribution). An id that was "
        "not served to this user counts as unattributed, never as someone else's click.")

    _check_ids = field_validator("event_id", "user_id", "item_id", mode="before")(
        lambda v: _check_id(v)
    )

    @field_validator("event_type", mode="before")
    @classmethod
    def _check_type(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise _custom(Reason.WRONG_TYPE, "must be a string")
        lowered = value.lower()
        if lowered not in EventType._value2member_map_:
            raise _custom(
                Reason.UNKNOWN_EVENT_TYPE,
                "unknown event type '{value}'; expected one of {known}",
                value=value[:32],
                known=", ".join(t.value for t in EventType),
            )
        return lowered

    @field_validator("timestamp", mode="before")
    @classmethod
    def _check_timestamp(cls, value: Any, info: ValidationInfo) -> int:
        millis = _parse_timestamp(value, bool((info.context or {}).get(NAIVE_UTC)))
        if not MIN_TIMESTAMP_MS <= millis < MAX_TIMESTAMP_MS:
            raise _custom(
                Reason.TIMESTAMP_OUT_OF_RANGE,
                "timestamp {value} ms is outside 1990-01-01 .. 2100-01-01 (a unit mistake?)",
                value=millis,
            )
        return millis

    @field_validator("value", mode="before")
    @classmethod
    def _check_value(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _custom(Reason.WRONG_TYPE, "must be a number")
        if not math.isfinite(value):
            raise _custom(Reason.VALUE_OUT_OF_RANGE, "must be finite")
        return float(value)

    @field_validator("context", mode="before")
    @classmethod
    def _check_context(cls, value: Any) -> Any:
        if value is not None and isinstance(value, dict) and len(value) > MAX_CONTEXT_ENTRIES:
            raise _custom(
                Reason.CONTEXT_TOO_LARGE, "at most {limit} entries", limit=MAX_CONTEXT_ENTRIES
            )
        if isinstance(value, dict) and RECOMMENDATION_ID in value:
            rid = value[RECOMMENDATION_ID]
            if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_LENGTH:
                raise _custom(Reason.WRONG_TYPE,
                              "context.recommendation_id must be a string of 1-{limit} "
                              "characters", limit=MAX_ID_LENGTH)
        return value

    @model_validator(mode="after")
    def _check_value_for_type(self) -> Event:
        if self.event_type is EventType.RATING:
            if self.value is None:
                raise _custom(Reason.MISSING_FIELD, "value: a rating event needs a value 1-5")
            if not RATING_MIN <= self.value <= RATING_MAX:
                raise _custom(
                    Reason.RATING_OUT_OF_RANGE,
                    "value: rating {value} is outside 1-5",
                    value=self.value,
                )
        elif self.value is not None and not 0.0 < self.value <= MAX_QUANTITY:
            raise _custom(
                Reason.VALUE_OUT_OF_RANGE,
                "value: quantity {value} is outside (0, {limit}]",
                value=self.value,
                limit=MAX_QUANTITY,
            )
        return self

    # --- wire format ---------------------------------------------------------------------
    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @property
    def key(self) -> bytes:
        return self.user_id.encode("utf-8")

    @classmethod
    def create(
        cls,
        user_id: str | int,
        item_id: str | int,
        event_type: str,
        *,
        timestamp: int | str | None = None,
        value: float | None = None,
        event_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Event:
        """Validated constructor for producers; fills a random event id and `now`."""
        return validate_event(
            {
                "event_id": event_id or uuid.uuid4().hex,
                "user_id": user_id,
                "item_id": item_id,
                "event_type": event_type,
                "timestamp": int(time.time() * 1000) if timestamp is None else timestamp,
                "value": value,
                "context": context,
            }
        )


# Pydantic's built-in error types, mapped to our stable reasons.
_PYDANTIC_REASONS = {
    "missing": Reason.MISSING_FIELD,
    "string_too_long": Reason.ID_TOO_LONG,
}


def _to_invalid_event(exc: ValidationError) -> InvalidEvent:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    kind = err["type"]
    if kind in Reason._value2member_map_:
        reason = Reason(kind)
    else:
        reason = _PYDANTIC_REASONS.get(kind, Reason.WRONG_TYPE)
    message = err["msg"]
    if kind == "missing":
        message = "required field is missing"
    # Model-level checks name their field in the message ("value: ...").
    if field is None and ": " in message:
        field, message = message.split(": ", 1)
    return InvalidEvent(reason, message, field)


def validate_event(data: Any, *, naive_utc: bool = False) -> Event:
    """Validate an already-decoded JSON object; raise InvalidEvent with a precise reason.
    `naive_utc`: read ISO times without a zone as UTC instead of rejecting them."""
    if not isinstance(data, dict):
        raise InvalidEvent(Reason.NOT_AN_OBJECT, "an event must be a JSON object")
    try:
        return Event.model_validate(data, context={NAIVE_UTC: naive_utc})
    except ValidationError as exc:
        raise _to_invalid_event(exc) from None


def parse_event(raw: bytes | str, *, naive_utc: bool = False) -> Event:
    """Decode and validate one event from the wire."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise InvalidEvent(
            Reason.OVERSIZED_PAYLOAD,
            f"payload is {len(raw)} bytes; at most {MAX_PAYLOAD_BYTES} allowed",
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(Reason.MALFORMED_JSON, f"not valid JSON: {exc}") from None
    return validate_event(data, naive_utc=naive_utc)

