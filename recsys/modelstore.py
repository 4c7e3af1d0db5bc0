"""A published model version as the stream worker and the API see it, read from Redis.

The trainer writes versions (trainer/publish.py); this module is the reading side of that
contract plus the byte format of vectors. Factors travel as raw little-endian float32 — 4
bytes a number, no JSON text — so a 64-factor user vector is exactly 256 bytes in Redis.

Manifest fields every version carries (JSON):
    version, created_at (ISO-8601), factors, regularization, alpha, iterations,
    event_weights, n_users, n_items, metrics {name: value}, baseline_metrics {...},
    snapshot {offsets: {"topic:partition": next_offset}, latest_event_ms}, similar_items_n,
    ann_format (catalogues with an approximate-search index under Keys.model_ann),
    user_buckets (the Redis Cluster layout's bucket count its user vectors were written
    with; absent = the one-node layout, recsys.keys),
    model_kind ("als" when absent | "neural" | "item_item" | "popularity"); neural versions
    also carry tower {format, window, dim, hidden} and their tower weights under
    Keys.model_tower; item_item versions `neighbours` (N per item) and their neighbour matrix
    under Keys.model_neighbours. Versions fitted with item attributes carry `content`
    {format, map, blend, ...} and their content model under Keys.model_content
    (recsys.content). Versions without factors (item_item, popularity) carry
    factors = 0 (item factors of shape (n_items, 0)) and no user vectors.

A version whose kind or tower format this code cannot use fails to load (ModelIntegrityError):
the stream worker and the API keep the version they have and say why (log + metric).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import orjson
from redis.exceptions import WatchError

from recsys.content import ContentError, ContentModel, unpack_content
from recsys.errors import ModelIntegrityError, ModelNotFound
from recsys.foldin import gram
from recsys.keys import Keys
from recsys.sequence_model import TowerFormatError, UserTower, load_tower

log = logging.getLogger(__name__)

VECTOR_DTYPE = np.dtype("<f4")
MODEL_KINDS = ("als", "neural", "item_item", "popularity")


def pack_vector(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


# Similar-item lists: per item, (row of the neighbour in the version's item ids, cosine) records,
# best first. Packed rather than JSON text: far cheaper for the trainer to encode (JSON was
# the longest step after the fit on small catalogues; docs/benchmarks.md) and Redis holds 8
# bytes per neighbour instead of the id text plus the score's digits. A version's manifest
# names the format (`similar_format`); lists of versions without it are JSON [[item, score], ...].
SIMILAR_FORMAT = "rows-i32-scores-f32"
SIMILAR_DTYPE = np.dtype([("row", "<i4"), ("score", "<f4")])


def pack_similar(rows: np.ndarray, scores: np.ndarray) -> bytes:
    packed = np.empty(len(rows), dtype=SIMILAR_DTYPE)
    packed["row"] = rows
    packed["score"] = scores
    return packed.tobytes()


def unpack_similar(raw: bytes, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of one packed list; rows outside the version's `n_items` are dropped."""
    if len(raw) % SIMILAR_DTYPE.itemsize:
        raise ModelIntegrityError(f"similar list has {len(raw)} bytes; expected a multiple "
                                  f"of {SIMILAR_DTYPE.itemsize}")
    packed = np.frombuffer(raw, dtype=SIMILAR_DTYPE)
    valid = (packed["row"] >= 0) & (packed["row"] < n_items)
    return packed["row"][valid], packed["score"][valid]


NEIGHBOUR_ROW_DTYPE = np.dtype("<i4")


def pack_neighbours(rows: np.ndarray, weights: np.ndarray) -> bytes:
    """(n_items, N) rows then (n_items, N) weights, raw little-endian."""
    if rows.shape != weights.shape:
        raise ModelIntegrityError(f"neighbour rows {rows.shape} != weights {weights.shape}")
    return (np.ascontiguousarray(rows, dtype=NEIGHBOUR_ROW_DTYPE).tobytes()
            + np.ascontiguousarray(weights, dtype=VECTOR_DTYPE).tobytes())


def unpack_neighbours(raw: bytes, n_items: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    size = n_items * n
    if len(raw) != size * 8:
        raise ModelIntegrityError(f"neighbours have {len(raw)} bytes; expected {size * 8} for "
                                  f"{n_items} items x {n}")
    rows = np.frombuffer(raw, dtype=NEIGHBOUR_ROW_DTYPE, count=size).reshape(n_items, n)
    weights = np.frombuffer(raw, dtype=VECTOR_DTYPE, offset=size * 4).reshape(n_items, n)
    if ((rows < -1) | (rows >= n_items)).any() or not np.isfinite(weights).all():
        raise ModelIntegrityError("neighbour rows out of range or weights not finite")
    return rows, weights


def unpack_vector(raw: bytes, factors: int) -> np.ndarray:
    if len(raw) != factors * VECTOR_DTYPE.itemsize:
        raise ModelIntegrityError(
            f"vector has {len(raw)} bytes; expected {factors * VECTOR_DTYPE.itemsize}"
        )
    return np.frombuffer(raw, dtype=VECTOR_DTYPE)


def pack_ids(ids: list[str]) -> bytes:
    return "\n".join(ids).encode("utf-8")


def pack_gram(matrix: np.ndarray) -> bytes:
    """A k x k Gram matrix (XtX of a version's user factors), float64 little-endian."""
    return np.ascontiguousarray(matrix, dtype="<f8").tobytes()


def unpack_gram(raw: bytes | None, factors: int) -> np.ndarray | None:
    """The Gram matrix written by `pack_gram`; None when absent or of the wrong size."""
    if not raw or len(raw) != factors * factors * 8:
        return None
    matrix = np.frombuffer(raw, dtype="<f8").reshape(factors, factors)
    return matrix if np.isfinite(matrix).all() else None


def unpack_ids(raw: bytes) -> list[str]:
    return raw.decode("utf-8").split("\n") if raw else []


@dataclass(eq=False)
class ModelVersion:
    """Item side of one model version, immutable once loaded."""

    version: str
    item_ids: list[str]
    item_factors: np.ndarray  # float32, (n_items, k), read-only; k = 0 without factors
    manifest: dict[str, Any] = field(default_factory=dict)
    tower: UserTower | None = None  # neural versions: recent items -> user vector
    neighbour_rows: np.ndarray | None = None  # item_item versions: (n_items, N) int32
    neighbour_weights: np.ndarray | None = None  # (n_items, N) float32
    content: ContentModel | None = None  # versions fitted with item attributes
    item_embeddings: np.ndarray | None = None  # (n_items, d') content embeddings, with it

    @property
    def kind(self) -> str:
        return str(self.manifest.get("model_kind") or "als")

    @property
    def uses_factors(self) -> bool:
        """Users of this version get vectors from the stream (ALS fold-in, or the neural
        version's user tower); item_item and popularity versions have none."""
        return self.kind in ("als", "neural") and self.factors > 0

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])

    @property
    def regularization(self) -> float:
        return float(self.manifest["regularization"])

    @property
    def alpha(self) -> float:
        return float(self.manifest["alpha"])

    @property
    def snapshot_latest_event_ms(self) -> int:
        return int(self.manifest.get("snapshot", {}).get("latest_event_ms", 0))

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.item_ids)}

    @cached_property
    def yty(self) -> np.ndarray:
        """Gram matrix of the item factors, cached for every fold-in against this version."""
        return gram(self.item_factors)


def parse_model(version: str, manifest: bytes | None, item_ids: bytes | None,
                item_factors: bytes | None, tower: bytes | None = None,
                neighbours: bytes | None = None, content: bytes | None = None
                ) -> ModelVersion:
    """Build a ModelVersion from its Redis values, checking that they fit together."""
    if manifest is None or item_ids is None or item_factors is None:
        raise ModelNotFound(f"model version {version!r} is not (completely) in Redis")
    meta = orjson.loads(manifest)
    kind = meta.get("model_kind", "als")
    if kind not in MODEL_KINDS:
        raise ModelIntegrityError(f"version {version}: unsupported model kind {kind!r}; this "
                                  f"code serves {MODEL_KINDS}")
    ids = unpack_ids(item_ids)
    k = int(meta["factors"])
    flat = np.frombuffer(item_factors, dtype=VECTOR_DTYPE)
    if flat.size != len(ids) * k:
        raise ModelIntegrityError(
            f"version {version}: {flat.size} factor values for {len(ids)} items x {k} factors"
        )
    matrix = flat.reshape(len(ids), k)
    if not np.isfinite(matrix).all():
        raise ModelIntegrityError(f"version {version}: item factors contain NaN or Inf")
    user_tower = None
    if kind == "neural":
        try:
            user_tower = load_tower(matrix, meta, tower)
        except TowerFormatError as exc:
            raise ModelIntegrityError(f"version {version}: neural user tower: {exc}") from None
    rows = weights = None
    if kind == "item_item":
        if neighbours is None:
            raise ModelNotFound(f"item_item version {version!r} has no neighbours in Redis")
        rows, weights = unpack_neighbours(neighbours, len(ids), int(meta["neighbours"]))
    content_model = embeddings = None
    if content is not None:
        try:
            content_model, embeddings = unpack_content(content, len(ids))
        except ContentError as exc:
            # the collaborative part is whole: serve it, without the content part
            log.warning("version %s: content model unusable (%s): served without it",
                        version, exc)
    return ModelVersion(version=version, item_ids=ids, item_factors=matrix, manifest=meta,
                        tower=user_tower, neighbour_rows=rows, neighbour_weights=weights,
                        content=content_model, item_embeddings=embeddings)


def check_user_layout(model: ModelVersion, keys: Keys) -> ModelVersion:
    """Refuse a version whose user vectors were written in another key layout than this
    deployment reads: its vectors would be looked up in the wrong buckets (cluster) or hash."""
    written = int(model.manifest.get("user_buckets") or 0)
    if written != keys.user_buckets:
        raise ModelIntegrityError(
            f"version {model.version} was published with user_buckets={written} "
            f"({'cluster' if written else 'one-node'} layout); this deployment reads "
            f"user_buckets={keys.user_buckets}: set RECSYS_REDIS_CLUSTER and "
            "RECSYS_REDIS_USER_BUCKETS like the trainer that published it")
    return model


def _decode(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def read_current_version(redis: Any, keys: Keys) -> str | None:
    """Synchronous redis client: id of the version in service, or None."""
    return _decode(redis.get(keys.current_model))


def load_model(redis: Any, keys: Keys, version: str | None = None) -> ModelVersion:
    """Synchronous redis client: load `version` (default: the current one)."""
    version = version or read_current_version(redis, keys)
    if version is None:
        raise ModelNotFound("no model version has been published yet")
    manifest, ids, factors, tower, neighbours, content = redis.mget(
        [keys.model_manifest(version), keys.model_item_ids(version),
         keys.model_item_factors(version), keys.model_tower(version),
         keys.model_neighbours(version), keys.model_content(version)]
    )
    return check_user_layout(
        parse_model(version, manifest, ids, factors, tower, neighbours, content), keys)


async def aread_current_version(redis: Any, keys: Keys) -> str | None:
    """redis.asyncio client: id of the version in service, or None."""
    return _decode(await redis.get(keys.current_model))


async def aload_model(redis: Any, keys: Keys, version: str | None = None) -> ModelVersion:
    """redis.asyncio client: load `version` (default: the current one)."""
    version = version or await aread_current_version(redis, keys)
    if version is None:
        raise ModelNotFound("no model version has been published yet")
    manifest, ids, factors, tower, neighbours, content = await redis.mget(
        [keys.model_manifest(version), keys.model_item_ids(version),
         keys.model_item_factors(version), keys.model_tower(version),
         keys.model_neighbours(version), keys.model_content(version)]
    )
    return check_user_layout(
        parse_model(version, manifest, ids, factors, tower, neighbours, content), keys)


# --- writing side (trainer, tests) -------------------------------------------------------
# Protocol: every key of version v is written first (stage_model_version); only then does
# activate_version move the `current` pointer, in one Lua script together with the `previous`
# list, and announce v on the switch channel. A reader that GETs `current` and then reads
# version-scoped keys can therefore never see half a model or a mix of two.

USER_VECTOR_BATCH = 5_000
SimilarLists = Mapping[str, list[tuple[str, float]] | bytes]


def stage_model_version(
    redis: Any,
    keys: Keys,
    version: str,
    item_ids: list[str],
    item_factors: np.ndarray,
    manifest: dict[str, Any],
    user_ids: list[str] | None = None,
    user_factors: np.ndarray | None = None,
    similar: SimilarLists | Callable[[], SimilarLists] | None = None,
    popularity: dict[str, float] | None = None,
    tower: bytes | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ann: bytes | Callable[[], bytes | None] | None = None,
    content: bytes | None = None,
) -> None:
    """Write every key of one version (synchronous client). Does not make it current.

    `similar` values may be given already JSON-encoded (bytes), which saves re-encoding
    large lists; `similar` may also be a callable returning them, called once the other
    keys are written (the trainer computes the lists meanwhile); `ann` (a packed
    recsys.ann layout, or a callable returning it) likewise. User vectors go into the
    version's hash (or, in the cluster layout, its bucket hashes) in HSET batches (one command
    per batch); the manifest, which records the layout, is written last."""
    item_factors = np.asarray(item_factors, dtype=VECTOR_DTYPE)
    if item_factors.shape != (len(item_ids), int(manifest["factors"])):
        raise ModelIntegrityError(
            f"item factors {item_factors.shape} do not match {len(item_ids)} ids x "
            f"{manifest['factors']} factors"
        )
    if not np.isfinite(item_factors).all():
        raise ModelIntegrityError("refusing to stage item factors that contain NaN or Inf")
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.model_item_ids(version), pack_ids(item_ids))
    pipe.set(keys.model_item_factors(version), item_factors.tobytes())
    if tower is not None:
        pipe.set(keys.model_tower(version), tower)
    if neighbours is not None:
        rows, weights = neighbours
        if rows.shape != (len(item_ids), int(manifest.get("neighbours", -1))):
            raise ModelIntegrityError(f"neighbours {rows.shape} do not match {len(item_ids)} "
                                      f"items x {manifest.get('neighbours')}")
        if not np.isfinite(weights).all():
            raise ModelIntegrityError("refusing to stage neighbour weights with NaN or Inf")
        pipe.set(keys.model_neighbours(version), pack_neighbours(rows, weights))
    if popularity:
        pipe.zadd(keys.popularity_alltime(version), popularity)
    if content is not None:
        pipe.set(keys.model_content(version), content)
    pipe.execute()
    if user_ids is not None and user_factors is not None:
        user_factors = np.asarray(user_factors, dtype=VECTOR_DTYPE)
        if not np.isfinite(user_factors).all():
            raise ModelIntegrityError("refusing to stage user factors that contain NaN or Inf")
        by_hash: dict[str, dict[str, bytes]] = {}
        for row, user in enumerate(user_ids):
            by_hash.setdefault(keys.user_vector_hash(version, user), {})[user] = (
                user_factors[row].tobytes())
        for hash_key, vectors in by_hash.items():
            users = list(vectors)
            for start in range(0, len(users), USER_VECTOR_BATCH):
                redis.hset(hash_key, mapping={user: vectors[user]
                                              for user in users[start:start + USER_VECTOR_BATCH]})
        redis.set(keys.model_user_gram(version), pack_gram(gram(user_factors)))
    # The similar lists come after the rest: a caller may still be computing them (a
    # callable is only called now), while the other keys are already on their way.
    if callable(similar):
        similar = similar()
    if similar:
        encoded = [(item, pairs if isinstance(pairs, bytes) else orjson.dumps(pairs))
                   for item, pairs in similar.items()]
        pipe = redis.pipeline(transaction=False)
        for start in range(0, len(encoded), USER_VECTOR_BATCH):
            pipe.hset(keys.model_similar(version),
                      mapping=dict(encoded[start:start + USER_VECTOR_BATCH]))
        pipe.execute()
    if callable(ann):
        ann = ann()
    if ann is not None:
        redis.set(keys.model_ann(version), ann)
    if keys.cluster:
        manifest = {**manifest, "user_buckets": keys.user_buckets}
    # The manifest goes last: its presence marks the version as completely staged.
    redis.set(keys.model_manifest(version), orjson.dumps(manifest))


# Moves the pointer in one atomic step inside Redis. KEYS = current, previous, the trainer
# lease and (one-node layout) the version's manifest; ARGV = version, how many previous
# versions to keep, and the lease token ('' = unfenced). With a token, the switch only
# happens while the lease key still holds it: a trainer whose lease expired (paused,
# partitioned) and was taken over cannot move the pointer afterwards. Checking and switching
# in one script closes the read-then-MULTI race of two activations. In the cluster layout the
# pointer, the list and the lease share one slot and the manifest lives with its version in
# another, so the staged check runs just before the script instead of inside it.
LUA_ACTIVATE = """
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return redis.error_reply('FENCED the trainer lease is no longer held by this token')
end
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 0 then
  return redis.error_reply('NOTSTAGED version ' .. ARGV[1] .. ' is not staged')
end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if previous and previous ~= ARGV[1] then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  redis.call('LPUSH', KEYS[2], previous)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
end
return previous
"""


class Fenced(ModelIntegrityError):
    """An activation was refused: the caller's lease (fencing token) is no longer current."""


def activate_version(redis: Any, keys: Keys, version: str, keep_previous: int = 10,
                     fence: tuple[str, str] | None = None) -> str | None:
    """Atomically make `version` current; returns the version it replaced (or None).

    `fence` = (lease key, token): only switch while the lease key holds the token."""
    from redis.exceptions import ResponseError

    names = [keys.current_model, keys.previous_models,
             fence[0] if fence is not None else keys.trainer_lease]
    if keys.cluster:
        if not redis.exists(keys.model_manifest(version)):
            raise ModelNotFound(f"version {version!r} is not staged; refusing to activate it")
    else:
        names.append(keys.model_manifest(version))
    try:
        previous = redis.eval(LUA_ACTIVATE, len(names), *names, version,
                              max(1, keep_previous), fence[1] if fence else "")
    except ResponseError as exc:
        if str(exc).startswith("FENCED"):
            raise Fenced(f"refusing to activate {version!r}: {exc}") from None
        if str(exc).startswith("NOTSTAGED"):
            raise ModelNotFound(f"version {version!r} is not staged; refusing to activate "
                                "it") from None
        raise
    redis.publish(keys.model_switch_channel, version)
    return _decode(previous)


def delete_model_version(redis: Any, keys: Keys, version: str) -> int:
    """Remove every key of a version that is no longer current or kept for rollback."""
    if _decode(redis.get(keys.current_model)) == version:
        raise ModelIntegrityError(f"refusing to delete the current version {version!r}")
    # UNLINK: Redis frees the (large) user-vector hash in a background thread.
    return int(redis.unlink(*keys.model_keys(version)))


def current_and_previous(redis: Any, keys: Keys) -> tuple[str | None, list[str]]:
    """Synchronous client: the version in service and the rollback list, newest first."""
    current, previous = redis.get(keys.current_model), redis.lrange(keys.previous_models, 0, -1)
    return _decode(current), [v for v in (_decode(p) for p in previous) if v]


def rollback_version(redis: Any, keys: Keys) -> tuple[str, str | None]:
    """Make the newest previous version current again, atomically (WATCH/MULTI).

    The version rolled back from leaves the rollback list, so a second rollback goes one
    further back instead of returning to it. Returns (restored, replaced). The one rollback
    used by the CLI (`recsys model rollback`) and the API's admin route."""
    with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.current_model, keys.previous_models)
                current = _decode(pipe.get(keys.current_model))
                target = _decode(pipe.lindex(keys.previous_models, 0))
                if target is None:
                    raise ModelNotFound("no previous model version to roll back to")
                # Through the client, not the watching pipeline: in a cluster the manifest
                # lives in its version's slot, and a transaction stays in the pointer's.
                if not redis.exists(keys.model_manifest(target)):
                    raise ModelIntegrityError(
                        f"previous version {target!r} is no longer in Redis")
                pipe.multi()
                pipe.set(keys.current_model, target)
                pipe.lpop(keys.previous_models)
                pipe.execute()
                break
            except WatchError:
                continue  # someone published meanwhile: decide again on fresh state
    redis.publish(keys.model_switch_channel, target)
    log.warning("rolled back from %s to %s", current, target)
    return target, current
