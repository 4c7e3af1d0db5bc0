"""From an event frame to the ALS confidence matrix, with the rule of recsys.confidence.

    w_e   = event_weight(type, value)                      (recsys.confidence; ratings r/5)
    w_e  *= 0.5 ** (age_e / half_life)                     (optional time decay; age relative
                                                            to the newest event of the frame)
    c_ui  = 1 + alpha * sum of w_e over user u's events on item i

Pairs whose summed weight is 0 (an event type configured with weight 0) are left out: such an
event says nothing, and an explicit entry would still count as a positive for ALS.
Users and items get dense row/column indices in order of first appearance; the index covers
the whole frame so that a matrix of one part of it (the training part of a split) shares
rows and columns with the matrix of the whole (warm-started refit, evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.confidence import confidence, event_weights_array

MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class IndexedEvents:
    """Events as integer columns over a shared user/item index."""

    user_ids: np.ndarray  # row -> user id (str)
    item_ids: np.ndarray  # column -> item id (str)
    rows: np.ndarray  # int32 per event
    cols: np.ndarray  # int32 per event
    weights: np.ndarray  # float64 per event, decay applied
    timestamps: np.ndarray  # int64 per event (ms)
    # int64 per event: its row in the source (file order; the frame's index), which the
    # stratified split's seeded draw follows. None: the frame's order.
    source_rows: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)

    def __len__(self) -> int:
        return len(self.rows)


def decay_factors(timestamps: np.ndarray, half_life_days: float | None,
                  reference_ms: int | None = None) -> np.ndarray:
    ts = np.asarray(timestamps, dtype=np.int64)
    if half_life_days is None or ts.size == 0:
        return np.ones(ts.size, dtype=np.float64)
    ref = int(ts.max()) if reference_ms is None else int(reference_ms)
    age_days = np.maximum(ref - ts, 0) / MS_PER_DAY
    return np.power(0.5, age_days / half_life_days)


def index_events(frame: pd.DataFrame, event_weights: Mapping[str, float],
                 half_life_days: float | None = None,
                 reference_ms: int | None = None,
                 negative_rating_max: float | None = None) -> IndexedEvents:
    rows, user_ids = pd.factorize(frame["user_id"], sort=False)
    cols, item_ids = pd.factorize(frame["item_id"], sort=False)
    ts = frame["timestamp"].to_numpy(dtype=np.int64)
    weights = event_weights_of(frame["event_type"], frame["value"].to_numpy(), event_weights,
                               negative_rating_max)
    weights *= decay_factors(ts, half_life_days, reference_ms)
    return IndexedEvents(
        user_ids=np.asarray(user_ids, dtype=object), item_ids=np.asarray(item_ids, dtype=object),
        rows=rows.astype(np.int32), cols=cols.astype(np.int32), weights=weights, timestamps=ts,
        source_rows=source_rows_of(frame),
    )


def source_rows_of(frame: pd.DataFrame) -> np.ndarray | None:
    """Each event's row in its source: the frame's integer index (recsys.sources keeps it),
    None when the index is not a plain integer one."""
    index = frame.index
    if isinstance(index, pd.RangeIndex) or not pd.api.types.is_integer_dtype(index.dtype):
        return None
    return index.to_numpy(dtype=np.int64)


def event_weights_of(types: pd.Series, values: np.ndarray,
                     event_weights: Mapping[str, float],
                     negative_rating_max: float | None = None) -> np.ndarray:
    """recsys.confidence's `event_weights_array`, per event, float64.

    For categorical types (the history loads them so) the rule is applied to the few
    categories instead of a million strings: it is affine in the value (a constant per type,
    or weight * rating / 5), so w = a[type] + (b - a)[type] * value with a, b the weights of
    each category at value 0 and 1 (a missing value counts as 0, as in the rule).
    """
    if not isinstance(types.dtype, pd.CategoricalDtype):
        return event_weights_array(np.asarray(types), values, event_weights, negative_rating_max)
    names = np.asarray(types.cat.categories, dtype=str)
    at0 = event_weights_array(names, np.zeros(len(names)), event_weights)
    slope = event_weights_array(names, np.ones(len(names)), event_weights) - at0
    codes = types.cat.codes.to_numpy()
    weights = at0[codes]  # a code of -1 (missing type) is remapped below
    if (codes < 0).any():
        weights[codes < 0] = 0.0
    if slope.any():
        value = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
        weights += np.where(codes >= 0, slope[codes], 0.0) * value
    if negative_rating_max is not None and "rating" in names:
        # Negative ratings make the rating rule piecewise affine: apply it to those rows.
        rated = codes == int(np.flatnonzero(names == "rating")[0])
        weights[rated] = event_weights_array(np.full(int(rated.sum()), "rating"),
                                             np.asarray(values)[rated], event_weights,
                                             negative_rating_max)
    return weights


def weight_matrix(events: IndexedEvents, mask: np.ndarray | None = None) -> sp.csr_matrix:
    """Summed weights per (user, item) as CSR (users x items), float64, zeros removed."""
    rows, cols, w = events.rows, events.cols, events.weights
    if mask is not None:
        rows, cols, w = rows[mask], cols[mask], w[mask]
    summed = sp.csr_matrix((w, (rows, cols)), shape=events.shape, dtype=np.float64)
    summed.sum_duplicates()
    summed.eliminate_zeros()
    summed.sort_indices()
    return summed


def confidence_matrix(events: IndexedEvents, alpha: float,
                      mask: np.ndarray | None = None) -> sp.csr_matrix:
    """C as CSR float32 (users x items): stored values are full confidences 1 + alpha * w."""
    summed = weight_matrix(events, mask)
    conf = summed.astype(np.float32)
    conf.data = np.asarray(confidence(summed.data, alpha), dtype=np.float32)
    return conf
