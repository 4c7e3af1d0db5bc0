"""From events to ALS confidences: one rule, used by the trainer and the stream worker alike.

    weight(event) = event_weights[type]                     for view, click, addtocart, transaction
    weight(event) = event_weights["rating"] * rating / 5    for explicit ratings (1-5 stars)
    weight(event) = -event_weights[type]                    for dislike and hide (negative)
    weight(event) = -event_weights["rating"] * (m + 1 - rating) / 5
                                                            for ratings <= m = negative_rating_max
    w_ui          = sum of weight(event) over the user's events on the item
    c_ui          =  1 + alpha * w_ui     when w_ui > 0: preference 1, confidence c
                  = -(1 + alpha * |w_ui|) when w_ui < 0: preference 0, confidence |c|
    (w_ui = 0: no entry at all, as if the user never touched the item)

A negative c is implicit's own convention for negative feedback (its `least_squares` and
`recalculate_user`: b gets nothing from the item, A gets (|c| - 1) y yt), so the trainer passes
these values to implicit unchanged and the fold-in (recsys.foldin) reads them the same way.
A disliked item thus pulls the user's vector away from it with a confidence that grows with
the evidence, instead of counting as a weak positive.

A quantity in `value` does not multiply the weight: buying three of a thing is not three
times the preference. With `negative_rating_max` unset, a rating of 1 still counts as a
(weak) positive: it says the user engaged with the item.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recsys.events import NEGATIVE_EVENT_TYPES, RATING_MAX, RATING_MIN, Event, EventType


def event_weight(event_type: str, value: float | None, weights: Mapping[str, float],
                 negative_rating_max: float | None = None) -> float:
    if event_type == EventType.RATING:
        rating = float(value or 0.0)
        if negative_rating_max is not None and RATING_MIN <= rating <= negative_rating_max:
            return -float(weights["rating"]) * (negative_rating_max + 1.0 - rating) / RATING_MAX
        return float(weights["rating"]) * rating / RATING_MAX
    if event_type in NEGATIVE_EVENT_TYPES:
        return -float(weights[event_type])
    return float(weights[event_type])


def weight_of(event: Event, weights: Mapping[str, float],
              negative_rating_max: float | None = None) -> float:
    return event_weight(event.event_type, event.value, weights, negative_rating_max)


def event_weights_array(
    event_types: np.ndarray, values: np.ndarray, weights: Mapping[str, float],
    negative_rating_max: float | None = None,
) -> np.ndarray:
    """Vectorised `event_weight` for columns of a table (trainer, evaluation)."""
    event_types = np.asarray(event_types).astype(str)
    out = np.zeros(len(event_types), dtype=np.float64)
    for name, weight in weights.items():
        mask = event_types == name
        if name == EventType.RATING:
            vals = np.nan_to_num(np.asarray(values, dtype=np.float64)[mask], nan=0.0)
            rated = weight * vals / RATING_MAX
            if negative_rating_max is not None:
                negative = (vals >= RATING_MIN) & (vals <= negative_rating_max)
                rated = np.where(negative,
                                 -weight * (negative_rating_max + 1.0 - vals) / RATING_MAX, rated)
            out[mask] = rated
        elif name in NEGATIVE_EVENT_TYPES:
            out[mask] = -weight
        else:
            out[mask] = weight
    return out


def confidence(weighted_count: np.ndarray | float, alpha: float) -> np.ndarray | float:
    """c = sign(w) (1 + alpha |w|): negative for negative feedback (see the module notes)."""
    w = np.asarray(weighted_count, dtype=np.float64)
    c = 1.0 + alpha * np.abs(w)
    return np.where(w < 0, -c, c)
