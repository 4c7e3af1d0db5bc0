"""Reference rows from external libraries, fitted on the same split in the same run, so that
"ahead of the peers" is a measured ratio rather than a number remembered from elsewhere.

    recsys evaluate --source movielens:u.data.gz --protocol stratified --reference cornac-bpr

* **cornac-bpr**: cornac's BPR (the library behind Microsoft Recommenders' published ML-100K
  table) with their benchmark notebook's parameters: k 200, 100 iterations, learning rate
  0.01, lambda 0.001, seed 42 (a seed makes cornac train on one thread: deterministic). It
  is fitted on the split's training (user, item) pairs as positives (BPR is pairwise: the
  value does not matter) and ranks like every other row: training items excluded, only
  items that occur in training. score(u, i) = b_i + p_u . q_i (cornac's own `score`).

cornac is an optional extra (`pip install 'streaming-recsys[reference]'`, pinned): without
it, asking for the row is a clear error before anything is fitted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.protocols import Split
from recsys.errors import RecsysError
from recsys.matrix import IndexedEvents
from recsys.topk import rank

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'streaming-recsys[reference]'"


class ReferenceRowError(RecsysError):
    """A reference row cannot be produced (its library is missing, or it failed)."""


@dataclass(frozen=True)
class Reference:
    name: str          # the option value (`--reference NAME`)
    row: str           # the row's label in tables
    library: str       # the module that must import
    describe: str      # one line for the report
    rank: Callable[[Split, IndexedEvents, int], np.ndarray]


# Microsoft Recommenders' ML-100K benchmark notebook's BPR parameters.
CORNAC_BPR = {"k": 200, "max_iter": 100, "learning_rate": 0.01, "lambda_reg": 0.001,
              "seed": 42}


def rank_cornac_bpr(split: Split, events: IndexedEvents, k: int) -> np.ndarray:
    import cornac

    train = np.flatnonzero(split.train_mask)
    if events.source_rows is not None:  # the file's order, as a notebook reading it would
        train = train[np.argsort(events.source_rows[train], kind="stable")]
    rows, cols = events.rows[train], events.cols[train]
    # cornac indexes users and items by first appearance; our integer ids go through it
    triples = zip(rows.tolist(), cols.tolist(), [1.0] * len(rows), strict=True)
    dataset = cornac.data.Dataset.from_uir(triples, seed=CORNAC_BPR["seed"])
    model = cornac.models.BPR(**CORNAC_BPR, verbose=False)
    model.fit(dataset)
    n_items = split.conf_train.shape[1]
    # cornac's item index -> our column; items cornac never saw are not `allowed` anyway
    item_cols = np.array([int(raw) for raw in dataset.item_ids], dtype=np.int64)
    user_index = dataset.uid_map
    h = split.holdout
    user_rows = np.array([user_index[int(u)] for u in h.users], dtype=np.int64)

    def scores(start: int, stop: int) -> np.ndarray:
        block = np.full((stop - start, n_items), -np.inf, dtype=np.float32)
        known = model.u_factors[user_rows[start:stop]] @ model.i_factors.T + model.i_biases
        block[:, item_cols] = known
        return block

    return rank(scores, h.n_users, n_items, k, exclude=h.exclude, allowed=h.allowed)


REFERENCES = {
    "cornac-bpr": Reference(
        name="cornac-bpr", row="cornac BPR (reference)", library="cornac",
        describe="cornac {version} BPR, Microsoft Recommenders' notebook parameters (k 200, "
        "100 iterations, learning rate 0.01, lambda 0.001, seed 42), fitted on this split's "
        "training pairs in this run",
        rank=rank_cornac_bpr),
}


def check_available(names: Sequence[str]) -> dict[str, str]:
    """The library version of each requested reference; ReferenceRowError naming the extra when
    one cannot be imported (checked before any model is fitted)."""
    import importlib

    versions: dict[str, str] = {}
    for name in names:
        if name not in REFERENCES:
            raise ReferenceRowError(f"unknown reference {name!r}; known: {sorted(REFERENCES)}")
        library = REFERENCES[name].library
        try:
            module = importlib.import_module(library)
        except ImportError as exc:
            raise ReferenceRowError(
                f"--reference {name} needs the optional library {library!r}, which is not "
                f"installed ({exc}); install the extra: {EXTRA_HINT}") from None
        versions[name] = str(getattr(module, "__version__", "?"))
    return versions


def reference_rankings(split: Split, events: IndexedEvents, k: int, names: Sequence[str],
                       ) -> dict[str, tuple[np.ndarray, float]]:
    """Each reference's top-k on `split` (same users, exclusions and catalogue as the
    project's rows) and the seconds it took, keyed by its row label."""
    out: dict[str, tuple[np.ndarray, float]] = {}
    for name in names:
        ref = REFERENCES[name]
        started = time.perf_counter()
        recs = ref.rank(split, events, k)
        out[ref.row] = (recs, time.perf_counter() - started)
        log.info("%s on the %s split: %.1f s", ref.row, split.protocol, out[ref.row][1])
    return out
