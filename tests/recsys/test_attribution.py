"""Attribution on a known click log: exact counts, each click once, nothing outside the window."""

from __future__ import annotations

import pytest

from recsys.attribution import (
    Impression,
    InvalidImpression,
    Outcome,
    Unattributed,
    UserAttribution,
    attribute_log,
    position_bucket,
    tally,
)
from recsys.events import Event

WINDOW = 60_000
T0 = 1_700_000_000_000


def imp(rid: str, user: str, items: list[str], at: int, variant: str = "model") -> Impression:
    return Impression(rid, user, tuple(items), T0 + at, "user", "personalized", "v1", variant,
                      "exp")


def ev(eid: str, user: str, item: str, kind: str, at: int, rid: str | None = None) -> Event:
    return Event.create(user, item, kind, timestamp=T0 + at, event_id=eid,
                        context={"recommendation_id": rid} if rid else None)


def by_event(results: list) -> dict[str, Outcome | Unattributed]:
    out: dict[str, Outcome | Unattributed] = {}
    for result in results:
        out.setdefault(result.event_id, result)  # the first: a redelivery comes later
    return out


def test_known_click_log() -> None:
    a = imp("r-a", "u1", ["i1", "i2", "i3"], 0)
    b = imp("r-b", "u2", ["i1", "i9"], 0, variant="popularity")
    log = [
        a, b,
        ev("e1", "u1", "i2", "click", 1_000, "r-a"),        # named: position 2
        ev("e2", "u1", "i2", "click", 2_000, "r-a"),        # second click, same item: once
        ev("e1", "u1", "i2", "click", 1_000, "r-a"),        # redelivered event
        ev("e3", "u1", "i3", "addtocart", 3_000),           # window: position 3
        ev("e4", "u1", "i7", "click", 3_000, "r-a"),        # not in the list
        ev("e5", "u1", "i1", "click", 3_000, "r-b"),        # another user's list: forged
        ev("e6", "u2", "i9", "transaction", WINDOW + 1),    # after the window
        ev("e7", "u2", "i1", "click", 5_000, "r-none"),     # never served
        ev("e8", "u1", "i1", "view", 1_000, "r-a"),         # a view is not an outcome
        ev("e9", "u2", "i9", "click", 10, "r-late"),        # its list arrives later
        imp("r-late", "u2", ["i9"], 0, variant="popularity"),
        ev("e10", "u1", "i1", "click", WINDOW + 5, "r-a"),  # named, but too late
    ]
    results = by_event(attribute_log(log, WINDOW))
    assert isinstance(results["e1"], Outcome) and results["e1"].position == 2
    assert results["e1"].by == "id" and results["e1"].bucket == "2-3"
    assert results["e2"] == Unattributed("click", "duplicate", "e2")
    assert isinstance(results["e3"], Outcome) and results["e3"].by == "window"
    assert results["e3"].outcome == "addtocart" and results["e3"].position == 3
    assert results["e4"].reason == "item_not_in_list"  # type: ignore[union-attr]
    assert results["e5"].reason == "unknown_recommendation"  # type: ignore[union-attr]
    assert results["e6"].reason == "no_impression"  # type: ignore[union-attr]
    assert results["e7"].reason == "unknown_recommendation"  # type: ignore[union-attr]
    assert "e8" not in results
    assert isinstance(results["e9"], Outcome)
    assert results["e9"].impression.recommendation_id == "r-late"
    assert results["e10"].reason == "outside_window"  # type: ignore[union-attr]
    all_results = attribute_log(log, WINDOW)
    # The redelivered e1 is a duplicate, not a second click.
    dupes = [r for r in all_results if isinstance(r, Unattributed) and r.reason == "duplicate"]
    assert {r.event_id for r in dupes} == {"e1", "e2"}
    counts = tally([a, b], all_results)
    assert counts["model"].impressions == 1 and counts["model"].outcomes["click"] == 1
    assert counts["model"].outcomes["addtocart"] == 1
    assert counts["popularity"].outcomes["click"] == 1  # e9, through the late list


def test_window_picks_the_most_recent_list_and_never_outside() -> None:
    log = [imp("r1", "u", ["x"], 0), imp("r2", "u", ["x"], 10_000),
           ev("c1", "u", "x", "click", 20_000), ev("c2", "u", "x", "click", 9_000),
           ev("c3", "u", "x", "click", -1)]
    results = by_event(attribute_log(log, WINDOW))
    assert results["c1"].impression.recommendation_id == "r2"  # type: ignore[union-attr]
    assert results["c2"].impression.recommendation_id == "r1"  # type: ignore[union-attr]
    assert results["c3"].reason == "no_impression"  # type: ignore[union-attr]


def test_pending_events_expire_unattributed_and_state_round_trips() -> None:
    state = UserAttribution()
    assert state.add_event(ev("p", "u", "x", "click", 0, "r-x"), WINDOW) is None
    assert state.expire(T0 + WINDOW + 1, WINDOW) == [
        Unattributed("click", "unknown_recommendation", "p")]
    state.add_impression(imp("r", "u", ["x", "y"], 0), WINDOW)
    assert isinstance(state.add_event(ev("q", "u", "y", "transaction",
                                         5, "r"), WINDOW), Outcome)
    copy = UserAttribution.from_dict(state.to_dict())
    assert copy.add_event(ev("q2", "u", "y", "transaction", 6, "r"), WINDOW) == Unattributed(
        "purchase", "duplicate", "q2")
    copy.expire(T0 + WINDOW + 10, WINDOW)
    assert copy.empty


def test_bad_impressions_are_rejected() -> None:
    with pytest.raises(InvalidImpression, match="items"):
        Impression.from_dict({"recommendation_id": "r", "subject": "u", "items": "x",
                              "served_at": 1, "endpoint": "user", "source": "p"})
    with pytest.raises(InvalidImpression, match="not JSON"):
        Impression.from_json(b"{")
    good = imp("r", "u", ["a"], 0)
    assert Impression.from_json(good.to_json()) == good


def test_position_buckets() -> None:
    assert [position_bucket(p) for p in (1, 2, 3, 4, 10, 11, 50, 51)] == [
        "1", "2-3", "2-3", "4-10", "4-10", "11-50", "11-50", "51+"]


def test_the_event_schema_checks_the_recommendation_id() -> None:
    from recsys.events import InvalidEvent, validate_event

    base = {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "click",
            "timestamp": T0}
    with pytest.raises(InvalidEvent, match="recommendation_id must be a string"):
        validate_event({**base, "context": {"recommendation_id": 7}})
    with pytest.raises(InvalidEvent, match="recommendation_id must be a string"):
        validate_event({**base, "context": {"recommendation_id": "x" * 129}})
    ok = validate_event({**base, "context": {"recommendation_id": "r1"}})
    assert ok.context == {"recommendation_id": "r1"}
