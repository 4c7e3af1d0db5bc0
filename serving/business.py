"""The integration API's reads beyond "top-k for a user": explanations, scores of a given
list, a user's known items, the catalogue listing and batches of users.

Like `Recommender`, every function takes `holder.current` once and uses only that version
(invariant 2). Maths is the core's (recsys.explain, recsys.foldin via serving.scoring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from redis.exceptions import RedisError

from recsys.errors import ModelIntegrityError
from recsys.explain import explain, top_contributors
from recsys.item_filter import ItemFilter
from recsys.modelstore import unpack_vector
from serving import ServingError
from serving.fallback import Result
from serving.recommender import Recommender, _ranked
from serving.scoring import EMPTY_ROWS, join_rows, rows_of, score_batch, top_page
from serving.served_model import LoadedModel


class Unavailable(ServingError):
    """The model or Redis cannot answer this request now (503: a read that has no
    meaningful fallback)."""


class NotFound(ServingError):
    """The user or item is unknown to the served model (404)."""


class NotExplainable(ServingError):
    """The served version's user vectors are not an ALS fold-in (a neural version: 409)."""


@dataclass
class UserVector:
    user_id: str
    vector: np.ndarray | None
    seen: list[str]          # most recent first
    seen_ms: list[int]       # their last interaction times (epoch ms), same order
    hidden: list[str]        # items their negative feedback hides
    reason: str | None       # why there is no usable vector


def served_model(rec: Recommender) -> LoadedModel:
    model = rec.holder.current
    if model is None:
        raise Unavailable("no model version is in service yet")
    return model


async def read_users(rec: Recommender, model: LoadedModel, user_ids: Sequence[str],
                     seen_max: int | None = None) -> list[UserVector]:
    """Vectors under `model`'s version and seen items of many users, in one round trip."""
    if not rec.guard.available:
        raise Unavailable("Redis is unavailable; retry")
    seen_max = rec.settings.api_seen_max if seen_max is None else seen_max
    # One HMGET per hash that holds some of the users' vectors: one on one node, one per
    # user bucket in a cluster (whose pipeline sends each node its share).
    by_hash: dict[str, list[str]] = {}
    for user in dict.fromkeys(user_ids):
        by_hash.setdefault(rec.keys.user_vector_hash(model.version, user), []).append(user)
    try:
        pipe = rec.redis.pipeline(transaction=False)
        for hash_key, users in by_hash.items():
            pipe.hmget(hash_key, users)
        for user in user_ids:
            pipe.zrevrange(rec.keys.seen(user), 0, seen_max - 1, withscores=True)
        for user in user_ids:
            pipe.smembers(rec.keys.hidden(user))
        results = await pipe.execute()
    except (RedisError, OSError) as exc:
        rec.guard.failed("user_state", exc)
        raise Unavailable("Redis is unavailable; retry") from None
    rec.guard.succeeded()
    found: dict[str, bytes | None] = {}
    for users, values in zip(by_hash.values(), results, strict=False):
        found.update(zip(users, values, strict=True))
    raw_vectors = [found[user] for user in user_ids]
    rest = results[len(by_hash):]
    raw_seen, raw_hidden = rest[:len(user_ids)], rest[len(user_ids):]
    out = []
    for user, raw, seen_pairs, hidden_raw in zip(user_ids, raw_vectors, raw_seen, raw_hidden,
                                                 strict=True):
        seen = [member.decode() for member, _ in seen_pairs]
        seen_ms = [int(score) for _, score in seen_pairs]
        vector, reason = None, None
        if raw is None:
            reason = "no_user_vector" if seen else "unknown_user"
        else:
            try:
                vector = unpack_vector(raw, model.factors)
            except ModelIntegrityError:
                reason = "bad_user_vector"
            else:
                if not np.isfinite(vector).all():
                    vector, reason = None, "bad_user_vector"
        out.append(UserVector(user, vector, seen, seen_ms, [m.decode() for m in hidden_raw],
                              reason))
    return out


# --- explanations -------------------------------------------------------------------------
def because(model: LoadedModel, user: UserVector, item_id: str, n: int) -> dict:
    """The user's n items that contributed most to `item_id`'s score (recsys.explain)."""
    if model.model.tower is not None:
        raise NotExplainable(f"model version {model.version} is neural: its user vectors come "
                             "from a user tower, not from the ALS fold-in that explanations "
                             "decompose")
    row = model.index.get(item_id)
    if row is None:
        raise NotFound(f"item {item_id!r} is not in model version {model.version}")
    if user.vector is None:
        raise NotFound(f"user {user.user_id!r} has no vector under model version "
                       f"{model.version} ({user.reason})")
    history = np.unique(rows_of(model.index, [*user.seen, *user.hidden]))
    negative = np.isin(history, rows_of(model.index, user.hidden))
    result = explain(model.item_factors, model.model.yty, model.regularization, row,
                     history, user.vector, negative)
    ids = model.item_ids
    return {
        "user_id": user.user_id, "item_id": item_id, "model_version": model.version,
        "score": result.score,
        "explained_score": float(result.contributions.sum()),
        "residual": result.residual,
        "items": [{"item_id": ids[r], "contribution": float(c), "confidence": float(conf)}
                  for r, c, conf in zip(result.rows[:n].tolist(), result.contributions[:n],
                                        result.confidences[:n], strict=True)],
    }


def because_lists(model: LoadedModel, user: UserVector, item_ids: Sequence[str], n: int
                  ) -> list[list[dict]]:
    """For each item of a served list, the user's n items that contributed most to its
    score (the /because maths for the whole list: one solve, recsys.explain). Items the
    model does not know, and users without a vector, get []."""
    out: list[list[dict]] = [[] for _ in item_ids]
    if model.model.tower is not None or user.vector is None:
        return out
    positions = [pos for pos, item in enumerate(item_ids) if item in model.index]
    if not positions:
        return out
    targets = np.asarray([model.index[item_ids[pos]] for pos in positions], dtype=np.intp)
    history = np.unique(rows_of(model.index, [*user.seen, *user.hidden]))
    negative = np.isin(history, rows_of(model.index, user.hidden))
    rows, parts = top_contributors(model.item_factors, model.model.yty, model.regularization,
                                   targets, history, user.vector, negative, n)
    ids = model.item_ids
    for pos, item_rows, item_parts in zip(positions, rows.tolist(), parts.tolist(),
                                          strict=True):
        out[pos] = [{"item_id": ids[r], "contribution": c}
                    for r, c in zip(item_rows, item_parts, strict=True)]
    return out


# --- scores of a given list ---------------------------------------------------------------
def scores_of(model: LoadedModel, user: UserVector, item_ids: Sequence[str]) -> dict:
    """y_i^T x_u for each id the model knows; null and known=false for the others. A user
    without a vector gets null scores and the reason as `source`."""
    index = model.index
    rows = [index.get(item) for item in item_ids]
    known = np.asarray([r is not None for r in rows], dtype=bool)
    values: list[float | None] = [None] * len(item_ids)
    if user.vector is not None and known.any():
        picked = np.asarray([r for r in rows if r is not None], dtype=np.intp)
        computed = model.item_factors[picked] @ user.vector.astype(model.item_factors.dtype)
        for pos, value in zip(np.flatnonzero(known).tolist(), computed.tolist(), strict=True):
            values[pos] = value
    return {
        "user_id": user.user_id, "model_version": model.version,
        "source": "personalized" if user.vector is not None else f"none:{user.reason}",
        "items": [{"item_id": item, "score": value, "known": bool(ok)}
                  for item, value, ok in zip(item_ids, values, known.tolist(), strict=True)],
    }


# --- batches ------------------------------------------------------------------------------
@dataclass
class UserList:
    """One user's list of a batch, and the items their negative feedback hides when the
    batch read them (None: it did not; a pin must ask `Recommender.hidden`)."""

    result: Result
    hidden: list[str] | None


async def for_users(rec: Recommender, user_ids: Sequence[str], k: int, exclude_seen: bool,
                    filters: ItemFilter | None) -> list[UserList]:
    """`Recommender.for_user` for many users, with one scoring pass: the batch's vectors are
    scored in one matrix product (serving.scoring.score_batch). Users the model cannot
    answer get the same fallbacks as one by one."""
    model = rec.holder.current
    if model is None or not model.beats_popularity or not rec.guard.available:
        return [UserList(await rec.for_user(user, k, exclude_seen, filters), None)
                for user in user_ids]
    try:
        users = await read_users(rec, model, user_ids)
    except Unavailable:
        return [UserList(await rec.for_user(user, k, exclude_seen, filters), None)
                for user in user_ids]
    with_vector = [u for u in users if u.vector is not None]
    # Catalogue state after the last await: no await until the model's rows are ranked.
    unavailable = rec.catalog.excluded_rows(model, filters)
    candidates = rec.catalog.candidate_rows(model, filters)
    ranked: dict[str, Result] = {}
    if with_vector:
        matrix = score_batch(model.item_factors, [u.vector for u in with_vector])
        for user, scores in zip(with_vector, matrix, strict=True):
            seen_rows = rows_of(model.index, user.seen) if exclude_seen else EMPTY_ROWS
            hidden_rows = rows_of(model.index, user.hidden)
            rows, values = top_page(scores, 0, k,
                                    join_rows(unavailable, seen_rows, hidden_rows), candidates)
            if len(rows):
                ranked[user.user_id] = Result(_ranked(model, rows, values), "personalized",
                                              model.version)
    out = []
    for user in users:
        result = ranked.get(user.user_id)
        if result is None:
            result = await rec._user_fallback(user.reason or "no_candidates", user.user_id, k,
                                              exclude_seen, filters, user.seen,
                                              hidden=user.hidden)
        out.append(UserList(result, user.hidden))
    return out
