"""From events to ALS confidences: one rule, used by the trainer and the stream worker alike.

    weight(event) = event_weights[type]                     for view, click, addtocart, transaction
    weight(event) = event_weights["rating"] * rating / 5    for explicit ratings (1-5 stars)
    c_ui          = 1 + alpha * sum of weight(event) over the user's events on the item

A quantity in `value` does not multiply the weight: buying three of a thing is not three
times the preference. A rating of 1 still counts as a (weak) positive: it says the user
engaged with the item, which is what implicit ALS models; the rating predictor for RMSE is a
separate model (evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recsys.events import RATING_MAX, Event, EventType


def event_weight(event_type: str, value: float | None, weights: Mapping[str, float]) -> float:
    if event_type == EventType.RATING:
        return float(weights["rating"]) * float(value or 0.0) / RATING_MAX
    return float(weights[event_type])


def weight_of(event: Event, weights: Mapping[str, float]) -> float:
    return event_weight(event.event_type, event.value, weights)


def event_weights_array(
    event_types: np.ndarray, values: np.ndarray, weights: Mapping[str, float]
) -> np.ndarray:
    """Vectorised `event_weight` for columns of a table (trainer, evaluation)."""
    event_types = np.asarray(event_types).astype(str)
    out = np.zeros(len(event_types), dtype=np.float64)
    for name, weight in weights.items():
        mask = event_types == name
        if name == EventType.RATING:
            vals = np.nan_to_num(np.asarray(values, dtype=np.float64)[mask], nan=0.0)
            out[mask] = weight * vals / RATING_MAX
        else:
            out[mask] = weight
    return out


def confidence(weighted_count: np.ndarray | float, alpha: float) -> np.ndarray | float:
    return 1.0 + alpha * np.asarray(weighted_count, dtype=np.float64)
