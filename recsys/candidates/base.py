"""The candidate contract: fit on a training matrix -> a fitted model that ranks and exports.

The training input of every candidate is the same: W, users x items, the summed event weights
per (user, item) (recsys.matrix.weight_matrix). Each candidate turns it into what it needs
(ALS: confidences 1 + alpha * w; item-item models: a binary matrix). A holdout
(recsys.split.Holdout) built from W carries each test user's training items and weights, so
every candidate ranks the same users from the same histories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.spark_als import SparkOptions
from recsys.split import Holdout

KIND_ALS = "als"
KIND_ITEM_ITEM = "item_item"
KIND_POPULARITY = "popularity"
KIND_NEURAL = "neural"
MODEL_KINDS = (KIND_ALS, KIND_ITEM_ITEM, KIND_POPULARITY, KIND_NEURAL)


@dataclass(frozen=True)
class FitContext:
    """What a fit may use beyond its parameters."""

    seed: int = 42
    threads: int = 0  # 0 = all cores (implicit's convention)
    neighbours: int = 100  # item-item: neighbours kept per item (what serving holds)
    max_items: int = 20_000  # EASE: largest catalogue it is fitted on (an n x n inverse)
    spark: SparkOptions | None = None  # ALS fitted by Spark MLlib there (None: implicit)
    # sequence models: per user row, the item columns of the training events oldest first
    # (recsys.sequence_train.user_sequences); the weight matrix has lost the order. A fit
    # keeps of each sequence only the items its matrix holds (the validation carve's fit part)
    sequences: Sequence[Sequence[int]] | None = None
    neural: Any = None  # recsys.sequence_train.NeuralParams (None: its defaults)
    deadline: float | None = None  # time.perf_counter() by which a fit should end (selection)


@dataclass
class Export:
    """What a published version of a fitted candidate holds (beside ids and popularity).

    als:        item_factors (n_items, k), user_factors (n_users, k), manifest fields
                factors / regularization / alpha / iterations
    item_item:  neighbour_rows (n_items, N) int32, -1 padded; neighbour_weights float32
    popularity: item_scores only
    neural:     item_factors (n_items, d), tower (recsys.sequence_model.TOWER_ARRAYS)
    """

    kind: str
    item_scores: np.ndarray  # float64 per item: the candidate's popularity view
    item_factors: np.ndarray | None = None
    user_factors: np.ndarray | None = None
    neighbour_rows: np.ndarray | None = None
    neighbour_weights: np.ndarray | None = None
    tower: dict[str, np.ndarray] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


class Fitted(Protocol):
    name: str
    kind: str
    params: dict[str, Any]
    seconds: float

    def rank(self, holdout: Holdout, k: int) -> np.ndarray:
        """Top-k item columns per holdout user, best first (-1 pads), training items and
        columns not allowed by the holdout excluded."""

    def export(self) -> Export: ...


FitFn = Callable[[sp.csr_matrix, Mapping[str, Any], FitContext], Fitted]


@dataclass(frozen=True)
class CandidateSpec:
    """A candidate: how to fit it, its default point and its search space.

    `space` lists the values tried per parameter (coordinate steps from the best point);
    `skip(shape, ctx)` returns a reason when the candidate does not apply to a matrix of
    that shape (EASE above its item bound), else None.
    """

    name: str
    kind: str
    fit: FitFn
    defaults: Mapping[str, Any]
    space: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    skip: Callable[[tuple[int, int], FitContext], str | None] | None = None
    description: str = ""


def binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The same sparsity pattern with every stored value 1.0 (float32)."""
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.data[:] = 1.0
    return out
