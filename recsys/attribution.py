"""Impressions and attribution: which served list earned which click, add-to-cart, purchase.

An *impression* is one served recommendation list (serving records it on the impressions
topic, keyed like the interactions topic by user or session id, so one consumer sees both
streams of a user in the same partition). An event is attributed to an impression of the
same user when

- it names it (`context.recommendation_id`) and its item is in that list, at most
  `window_ms` after the list was served; or
- it names none and hits an item of a list served to that user at most `window_ms` before
  the event (the most recent such list wins).

Rules that keep the counts exact:
- each (recommendation, item, event type) counts once: a second click on the same
  recommended item, or a redelivered event (same event id), is a `duplicate`;
- an id that is not a list served to *this* user (unknown, expired, forged, another user's)
  is `unknown_recommendation`, never a guess; an item not in the named list is
  `item_not_in_list`; later than the window is `outside_window`;
- an event that names a list not seen yet, or hits no list seen yet, waits (the impression
  may be late: the two topics are consumed independently) until a list arrives or the
  stream has moved LATE_IMPRESSION_MS past it, then it is `unknown_recommendation` (named)
  or `no_impression`.
Event times are the stream's (already clamped to arrival, recsys.eventtime); a named event a
little earlier than its list's server time (a client clock behind) still counts: it named
the list and hit one of its items.

The state is per user (`UserAttribution`), plain data, so a Faust table or any store can
hold it; `attribute_log` runs a whole log through it (tests, offline replay).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from recsys.errors import RecsysError
from recsys.events import RECOMMENDATION_ID, Event, EventType

# The context key an event names its recommendation list with.
CONTEXT_KEY = RECOMMENDATION_ID
# Outcomes counted, and their names in metrics and reports.
OUTCOMES = {EventType.CLICK: "click", EventType.ADDTOCART: "addtocart",
            EventType.TRANSACTION: "purchase"}
# Position buckets (1-based, inclusive upper bounds): a bounded label set for metrics.
POSITION_BUCKETS = ((1, "1"), (3, "2-3"), (10, "4-10"), (50, "11-50"))
LAST_BUCKET = "51+"
# Per user: impressions kept (newest win), pending events, event ids remembered for dedupe.
MAX_IMPRESSIONS_PER_USER = 64
MAX_PENDING_PER_USER = 32
MAX_EVENT_IDS_PER_USER = 256
MAX_ITEMS_PER_IMPRESSION = 1000
MAX_ID_CHARS = 256
# How far (stream time) an impression may trail the events that followed it.
LATE_IMPRESSION_MS = 30_000


class InvalidImpression(RecsysError):
    """An impression record that cannot be read (malformed, wrong types, too large)."""


def position_bucket(position: int) -> str:
    for bound, name in POSITION_BUCKETS:
        if position <= bound:
            return name
    return LAST_BUCKET


@dataclass(frozen=True, slots=True)
class Impression:
    recommendation_id: str
    subject: str  # user id (or session id of an anonymous visitor): the topic's key
    items: tuple[str, ...]
    served_at_ms: int  # the API's clock
    endpoint: str
    source: str
    model_version: str | None = None
    variant: str | None = None
    experiment: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({"recommendation_id": self.recommendation_id,
                             "subject": self.subject, "items": self.items,
                             "served_at": self.served_at_ms, "endpoint": self.endpoint,
                             "source": self.source, "model_version": self.model_version,
                             "variant": self.variant, "experiment": self.experiment})

    @property
    def key(self) -> bytes:
        return self.subject.encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Impression:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidImpression(f"not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Impression:
        if not isinstance(data, dict):
            raise InvalidImpression("not an object")

        def text(name: str, optional: bool = False) -> str | None:
            value = data.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
                raise InvalidImpression(f"{name}: must be a string of 1-{MAX_ID_CHARS} chars")
            return value

        items = data.get("items")
        if (not isinstance(items, list) or len(items) > MAX_ITEMS_PER_IMPRESSION
                or not all(isinstance(i, str) for i in items)):
            raise InvalidImpression(f"items: must be a list of at most "
                                    f"{MAX_ITEMS_PER_IMPRESSION} item ids")
        served = data.get("served_at")
        if not isinstance(served, int) or isinstance(served, bool) or served < 0:
            raise InvalidImpression("served_at: must be epoch milliseconds")
        return cls(recommendation_id=str(text("recommendation_id")),
                   subject=str(text("subject")), items=tuple(items), served_at_ms=served,
                   endpoint=str(text("endpoint")), source=str(text("source")),
                   model_version=text("model_version", True), variant=text("variant", True),
                   experiment=text("experiment", True))


@dataclass(frozen=True, slots=True)
class Outcome:
    """An event attributed to an impression."""

    impression: Impression
    outcome: str  # click | addtocart | purchase
    item_id: str
    position: int  # 1-based, in the served list
    event_id: str
    by: str  # "id" (named the list) or "window" (hit a recommended item)

    @property
    def bucket(self) -> str:
        return position_bucket(self.position)


@dataclass(frozen=True, slots=True)
class Unattributed:
    outcome: str
    reason: str  # unknown_recommendation | item_not_in_list | outside_window | no_impression
    #               | duplicate
    event_id: str


Result = Outcome | Unattributed


@dataclass
class UserAttribution:
    """One user's attribution state: recent impressions, counted keys, waiting events."""

    impressions: list[Impression] = field(default_factory=list)  # oldest first
    counted: set[tuple[str, str, str]] = field(default_factory=set)  # (rid, item, outcome)
    event_ids: list[str] = field(default_factory=list)
    pending: list[Event] = field(default_factory=list)

    # --- feeding --------------------------------------------------------------------------
    def add_impression(self, impression: Impression, window_ms: int) -> list[Result]:
        """Keep the list; events that were waiting for it are attributed now."""
        if any(i.recommendation_id == impression.recommendation_id for i in self.impressions):
            return []  # a redelivered impression
        self.impressions.append(impression)
        del self.impressions[:-MAX_IMPRESSIONS_PER_USER]
        waiting = [e for e in self.pending if _resolves(e, impression, window_ms)]
        if not waiting:
            return []
        self.pending = [e for e in self.pending if e not in waiting]
        return [self._attribute(e, window_ms) for e in waiting]

    def add_event(self, event: Event, window_ms: int) -> Result | None:
        """The event's attribution, or None when it is not an outcome or waits for its list."""
        outcome = OUTCOMES.get(event.event_type)
        if outcome is None:
            return None
        if event.event_id in self.event_ids:
            return Unattributed(outcome, "duplicate", event.event_id)
        self.event_ids.append(event.event_id)
        del self.event_ids[:-MAX_EVENT_IDS_PER_USER]
        result = self._attribute(event, window_ms)
        if (isinstance(result, Unattributed)
                and result.reason in ("unknown_recommendation", "no_impression")
                and len(self.pending) < MAX_PENDING_PER_USER):
            self.pending.append(event)  # its list may still arrive
            return None
        return result

    def expire(self, now_ms: int, window_ms: int) -> list[Unattributed]:
        """Forget lists older than the window (and their counted keys); events that waited
        LATE_IMPRESSION_MS (stream time) for a list are unattributed. `now_ms`: the newest
        time the stream has seen, not the wall clock (a replay of old data works the same)."""
        horizon = now_ms - window_ms
        self.impressions = [i for i in self.impressions if i.served_at_ms >= horizon]
        live = {i.recommendation_id for i in self.impressions}
        self.counted = {key for key in self.counted if key[0] in live}
        late = [e for e in self.pending if e.timestamp < now_ms - LATE_IMPRESSION_MS]
        self.pending = [e for e in self.pending if e not in late]
        return [_gave_up(e) for e in late]

    def flush_pending(self) -> list[Unattributed]:
        """Everything still waiting is unattributed (end of a log)."""
        out = [_gave_up(e) for e in self.pending]
        self.pending = []
        return out

    @property
    def empty(self) -> bool:
        return not (self.impressions or self.pending)

    # --- the rules ------------------------------------------------------------------------
    def _find(self, rid: str) -> Impression | None:
        for impression in self.impressions:
            if impression.recommendation_id == rid:
                return impression
        return None

    def _attribute(self, event: Event, window_ms: int) -> Result:
        outcome = OUTCOMES[event.event_type]
        rid = _named(event)
        if rid is not None:
            impression = self._find(rid)
            if impression is None:
                return Unattributed(outcome, "unknown_recommendation", event.event_id)
            if event.item_id not in impression.items:
                return Unattributed(outcome, "item_not_in_list", event.event_id)
            if event.timestamp > impression.served_at_ms + window_ms:
                return Unattributed(outcome, "outside_window", event.event_id)
            return self._count(impression, event, outcome, "id")
        for impression in reversed(self.impressions):
            if (impression.served_at_ms <= event.timestamp
                    <= impression.served_at_ms + window_ms
                    and event.item_id in impression.items):
                return self._count(impression, event, outcome, "window")
        return Unattributed(outcome, "no_impression", event.event_id)

    def _count(self, impression: Impression, event: Event, outcome: str, by: str) -> Result:
        key = (impression.recommendation_id, event.item_id, outcome)
        if key in self.counted:
            return Unattributed(outcome, "duplicate", event.event_id)
        self.counted.add(key)
        return Outcome(impression, outcome, event.item_id,
                       impression.items.index(event.item_id) + 1, event.event_id, by)

    # --- storage (a Faust table value, or any JSON store) ---------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"impressions": [orjson.loads(i.to_json()) for i in self.impressions],
                "counted": sorted(list(k) for k in self.counted),
                "event_ids": self.event_ids,
                "pending": [orjson.loads(e.to_json()) for e in self.pending]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserAttribution:
        if not data:
            return cls()
        return cls(impressions=[Impression.from_dict(i) for i in data.get("impressions", [])],
                   counted={(a, b, c) for a, b, c in data.get("counted", [])},
                   event_ids=list(data.get("event_ids", [])),
                   pending=[Event.model_validate(e) for e in data.get("pending", [])])


def _resolves(event: Event, impression: Impression, window_ms: int) -> bool:
    """Could this newly arrived list be the one a waiting event belongs to?"""
    rid = _named(event)
    if rid is not None:
        return rid == impression.recommendation_id
    return (event.item_id in impression.items
            and impression.served_at_ms <= event.timestamp <= impression.served_at_ms + window_ms)


def _gave_up(event: Event) -> Unattributed:
    reason = "unknown_recommendation" if _named(event) is not None else "no_impression"
    return Unattributed(OUTCOMES[event.event_type], reason, event.event_id)


def _named(event: Event) -> str | None:
    if not event.context:
        return None
    value = event.context.get(CONTEXT_KEY)
    return value if isinstance(value, str) and value else None


def attribute_log(records: Iterable[Impression | Event], window_ms: int) -> list[Result]:
    """Attribute a log (impressions and events in arrival order), each user's state on its
    own; events still waiting at the end are unattributed."""
    states: dict[str, UserAttribution] = {}
    results: list[Result] = []
    for record in records:
        if isinstance(record, Impression):
            state = states.setdefault(record.subject, UserAttribution())
            results.extend(state.add_impression(record, window_ms))
            continue
        state = states.setdefault(record.user_id, UserAttribution())
        result = state.add_event(record, window_ms)
        if result is not None:
            results.append(result)
    for state in states.values():
        results.extend(state.flush_pending())
    return results


@dataclass
class Tally:
    """Impressions and attributed outcomes per (variant or model version) group."""

    impressions: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES.values(), 0))


def tally(impressions: Sequence[Impression], results: Iterable[Result],
          group: str = "variant") -> dict[str, Tally]:
    """Impressions and attributed outcomes per value of `group` (an Impression field)."""
    out: dict[str, Tally] = {}
    for impression in impressions:
        name = str(getattr(impression, group))
        out.setdefault(name, Tally()).impressions += 1
    for result in results:
        if isinstance(result, Outcome):
            name = str(getattr(result.impression, group))
            out.setdefault(name, Tally()).outcomes[result.outcome] += 1
    return out
