"""Candidate recommenders the trainer chooses from, behind one interface.

    spec   = registry.get("ease")                       # what a candidate is and how to tune it
    fitted = spec.fit(train, params, ctx)                # train: users x items summed weights
    recs   = fitted.rank(holdout, k)                     # offline: (n_users, k) item columns
    export = fitted.export()                             # what a published version holds

Three serving kinds (`model_kind` in a version's manifest):

* `als`        item and user factors; the stream folds users in (recsys.foldin) and serving
               scores x_u . y_i;
* `item_item`  a sparse top-N neighbour matrix per item (int32 columns, float32 weights);
               serving scores a user from their recent items at request time:
               score(j) = sum over recent items i of W[i, j]  (binary history, as Redis holds);
* `popularity` nothing but the popularity list: the floor;
* `neural`     item embeddings and a user tower's weights (recsys.sequence_model); the
               stream runs each user's newest items through the tower, serving scores
               u . e_i as for ALS. Fitted only where PyTorch (the `neural` extra) is installed.

Adding a candidate is one module with a `fit` function and a `register(CandidateSpec(...))`
call (see registry.py): the trainer, `recsys tune` and `recsys evaluate` pick it up by name.
"""

from recsys.candidates.base import (
    KIND_ALS,
    KIND_ITEM_ITEM,
    KIND_NEURAL,
    KIND_POPULARITY,
    MODEL_KINDS,
    CandidateSpec,
    Export,
    FitContext,
    Fitted,
)
from recsys.candidates.registry import REGISTRY, get, names, register

__all__ = ["KIND_ALS", "KIND_ITEM_ITEM", "KIND_NEURAL", "KIND_POPULARITY", "MODEL_KINDS",
           "REGISTRY", "CandidateSpec", "Export", "FitContext", "Fitted", "get", "names",
           "register"]
