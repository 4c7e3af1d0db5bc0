"""The Redis key layout: every key this project reads or writes is built here, and only here.

All keys start with the deployment's namespace (`settings.redis_namespace`, default `recsys`),
so several deployments or test runs can share one Redis.

Model versions (written by the trainer, read by stream and serving)
    {ns}:model:current               string  id of the version in service (the pointer)
    {ns}:model:previous              list    ids of earlier versions, newest first (rollback)
    {ns}:model:{v}:manifest          string  JSON manifest (hyper-parameters, metrics, snapshot)
    {ns}:model:{v}:item_ids          string  item ids, newline-separated, row order of factors
    {ns}:model:{v}:item_factors      string  float32 little-endian, shape (n_items, k)
    {ns}:model:{v}:similar           hash    item id -> top-N neighbours, best first: packed
                                             (int32 row in item_ids, float32 cosine) records
                                             (recsys.modelstore.pack_similar); JSON
                                             [[item, score], ...] when the manifest has no
                                             `similar_format`
    {ns}:model:{v}:tower             string  neural versions only: the user tower's weights
                                             (np.savez bytes, recsys.sequence_model)
    {ns}:model:{v}:neighbours        string  item_item versions: int32 LE (n_items, N) neighbour
                                             rows (-1 pads), then float32 LE (n_items, N) weights
    {ns}:model:{v}:ann               string  catalogues of `ann_min_items` or more: the
                                             approximate-search layout over item_factors
                                             (recsys.ann.pack_layout; manifest `ann_format`)
    {ns}:model:{v}:user_gram         string  XtX of the version's user factors, float64 LE (k, k):
                                             the item fold-in's Gram matrix (recsys.foldin)
    {ns}:model:switch                pub/sub channel: the new version id, after the pointer moved
    {ns}:trainer:lease               string  token of the one trainer allowed to write versions
                                             (SET NX PX, renewed while it runs; trainer/lease.py)

User state (written by the trainer for the users it fitted, and by the stream worker)
    {ns}:uvec:{v}                    hash    user id -> float32 LE vector computed against version v
                                             (one hash per version: retiring one is a single UNLINK)
    {ns}:ivec:{v}                    hash    item id -> float32 LE vector learned by the stream's
                                             item fold-in under version v (items v does not know)
    {ns}:ivec:{v}:seq                string  counter bumped by every write of that hash
    {ns}:ivec:{v}:updated            zset    item id -> the counter's value at its last write: API
                                             processes poll `seq` and read the items above the
                                             last value they merged
    {ns}:ivec:{v}:refold             string  a model switch's re-fold of the previous version's
                                             fresh items is claimed here (SET NX; one worker)
    {ns}:iusers:{item}               zset    user id -> last interaction time (ms): the item's most
                                             recent users (`stream_item_foldin_max_users`),
                                             merged from every stream worker; not versioned
    {ns}:iconf:{item}                hash    user id -> the user's confidence on the item (the
                                             confidence rule; negative = negative feedback)
    {ns}:seen:{user}                 zset    item id -> last interaction time (epoch ms)
    {ns}:hidden:{user}               set     items whose net feedback is negative (dislike,
                                             hide, low ratings): never recommended to the user

Popularity (written by the stream worker; trainer seeds the all-time list)
    {ns}:pop:{window}                zset    item id -> forward-decayed score (window: 1h, 24h, 7d)
    {ns}:pop:{window}:ref            string  reference time (epoch s) of that zset's decay
    {ns}:pop:{window}:batch:{id}     string  a stream batch's increments were applied (TTL:
                                             stream_batch_guard_ttl_s); makes retries idempotent
    {ns}:pop:{window}:applied:{topic} hash   partition -> highest source offset counted in the
                                             window: a replay after a crash counts nothing twice
    {ns}:pop:alltime:{v}             zset    item id -> training popularity of version v

Catalog (written by the API's PUT /v1/items)
    {ns}:item:{item}                 hash    name, image_url, category, price, available, attributes
    {ns}:catalog:category            hash    item id -> category, '' if none: every catalog
                                             item is a field (serving keeps it in memory)
    {ns}:catalog:unavailable         set     item ids that must not be recommended
    {ns}:catalog:generation          string  counter bumped by every catalog write (API
                                             replicas reload category/unavailable on change)

Experiments (the API's /v1/admin/experiments, recsys.experiments)
    {ns}:experiments                 hash    experiment name -> JSON config (variants, shares,
                                             active flag)
    {ns}:experiment:{name}:counts    hash    "{variant}:{impressions|click|addtocart|purchase}"
                                             -> count (written by the stream's attribution)

Erasure (recsys.erasure)
    {ns}:erasure:users               set     users erased whose rows the trainer has still to
                                             remove from its history (it removes them, then
                                             the user from this set)
    {ns}:erasure:items               set     items removed from the catalogue: the trainer
                                             drops them from every training set (kept)

Putting the version into the user-vector key (rather than a field beside the vector) makes
invariant 2 hold by construction: a reader that resolved version v can only ever fetch vectors
computed against v.
"""

from __future__ import annotations

from dataclasses import dataclass

POPULARITY_WINDOWS = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
_VERSION_KEY_SUFFIXES = frozenset({"manifest", "item_ids", "item_factors", "similar", "tower",
                                   "neighbours", "ann", "user_gram"})
_ITEM_VECTOR_SUFFIXES = (":seq", ":updated", ":refold")


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "recsys"

    # --- model versions ------------------------------------------------------------------
    @property
    def current_model(self) -> str:
        return f"{self.namespace}:model:current"

    @property
    def previous_models(self) -> str:
        return f"{self.namespace}:model:previous"

    @property
    def model_switch_channel(self) -> str:
        return f"{self.namespace}:model:switch"

    def model_manifest(self, version: str) -> str:
        return f"{self.namespace}:model:{version}:manifest"

    def model_item_ids(self, version: str) -> str:
        return f"{self.namespace}:model:{version}:item_ids"

    def model_item_factors(self, version: str) -> str:
        return f"{self.namespace}:model:{version}:item_factors"

    def model_similar(self, version: str) -> str:
        return f"{self.namespace}:model:{version}:similar"

    def model_tower(self, version: str) -> str:
        return f"{self.namespace}:model:{version}:tower"

    def model_ann(self, version: str) -> str:
        return f"{self.namespace}:model:{version}:ann"

    def model_user_gram(self, version: str) -> str:
        """XtX of the version's user factors (the item fold-in's Gram matrix)."""
        return f"{self.namespace}:model:{version}:user_gram"

    @property
    def trainer_lease(self) -> str:
        return f"{self.namespace}:trainer:lease"

    def version_key_patterns(self) -> list[str]:
        """SCAN patterns that match every version-scoped key (for orphan collection)."""
        return [f"{self.namespace}:model:*", f"{self.namespace}:uvec:*",
                f"{self.namespace}:pop:alltime:*", f"{self.namespace}:ivec:*"]

    def version_of(self, key: str) -> str | None:
        """The version a version-scoped key belongs to; None for any other key."""
        ns = self.namespace
        for prefix in (f"{ns}:uvec:", f"{ns}:pop:alltime:"):
            if key.startswith(prefix):
                return key[len(prefix):] or None
        if key.startswith(f"{ns}:ivec:"):
            rest = key[len(f"{ns}:ivec:"):]
            for suffix in _ITEM_VECTOR_SUFFIXES:
                if rest.endswith(suffix):
                    return rest[:-len(suffix)] or None
            return rest or None
        prefix = f"{ns}:model:"
        if key.startswith(prefix):
            version, sep, suffix = key[len(prefix):].rpartition(":")
            if sep and version and suffix in _VERSION_KEY_SUFFIXES:
                return version
        return None

    def model_neighbours(self, version: str) -> str:
        return f"{self.namespace}:model:{version}:neighbours"

    def model_keys(self, version: str) -> list[str]:
        """Every key of one version, its user vectors included."""
        return [
            self.model_manifest(version),
            self.user_vectors(version),
            self.model_item_ids(version),
            self.model_item_factors(version),
            self.model_similar(version),
            self.model_tower(version),
            self.model_neighbours(version),
            self.model_ann(version),
            self.popularity_alltime(version),
            self.model_user_gram(version),
            *self.item_vector_keys(version),
        ]

    # --- user state ------------------------------------------------------------------------
    def user_vectors(self, version: str) -> str:
        """The hash of user vectors computed against `version` (field: the user id)."""
        return f"{self.namespace}:uvec:{version}"

    # --- item fold-in (stream-learned item vectors) ---------------------------------------
    def item_vectors(self, version: str) -> str:
        """The hash of item vectors the stream learned under `version` (field: the item id)."""
        return f"{self.namespace}:ivec:{version}"

    def item_vectors_seq(self, version: str) -> str:
        return f"{self.item_vectors(version)}:seq"

    def item_vectors_updated(self, version: str) -> str:
        return f"{self.item_vectors(version)}:updated"

    def item_vectors_refold(self, version: str) -> str:
        return f"{self.item_vectors(version)}:refold"

    def item_vector_keys(self, version: str) -> list[str]:
        return [self.item_vectors(version), self.item_vectors_seq(version),
                self.item_vectors_updated(version), self.item_vectors_refold(version)]

    def item_users(self, item_id: str) -> str:
        """An item's most recent users (zset user -> last interaction ms)."""
        return f"{self.namespace}:iusers:{item_id}"

    def item_confidences(self, item_id: str) -> str:
        """Those users' confidences on the item (hash user -> confidence)."""
        return f"{self.namespace}:iconf:{item_id}"

    def seen(self, user_id: str) -> str:
        return f"{self.namespace}:seen:{user_id}"

    def hidden(self, user_id: str) -> str:
        return f"{self.namespace}:hidden:{user_id}"

    # --- popularity ------------------------------------------------------------------------
    def popularity(self, window: str) -> str:
        if window not in POPULARITY_WINDOWS:
            raise ValueError(f"unknown popularity window {window!r}")
        return f"{self.namespace}:pop:{window}"

    def popularity_ref(self, window: str) -> str:
        return f"{self.popularity(window)}:ref"

    def popularity_batch(self, window: str, batch_id: str) -> str:
        return f"{self.popularity(window)}:batch:{batch_id}"

    def popularity_applied(self, window: str, topic: str) -> str:
        """Hash partition -> highest offset of `topic` counted in the window (the replay
        guard of stream.popularity). Keyed by topic: a recreated topic under a new name starts
        afresh; recreating one under the same name needs these keys deleted."""
        return f"{self.popularity(window)}:applied:{topic}"

    def popularity_alltime(self, version: str) -> str:
        return f"{self.namespace}:pop:alltime:{version}"

    # --- erasure --------------------------------------------------------------------------
    @property
    def erasure_users(self) -> str:
        return f"{self.namespace}:erasure:users"

    @property
    def erasure_items(self) -> str:
        return f"{self.namespace}:erasure:items"

    # --- catalog ---------------------------------------------------------------------------
    def item(self, item_id: str) -> str:
        return f"{self.namespace}:item:{item_id}"

    @property
    def catalog_category(self) -> str:
        return f"{self.namespace}:catalog:category"

    @property
    def catalog_unavailable(self) -> str:
        return f"{self.namespace}:catalog:unavailable"

    @property
    def catalog_generation(self) -> str:
        return f"{self.namespace}:catalog:generation"

    # --- experiments ---------------------------------------------------------------------
    @property
    def experiments(self) -> str:
        return f"{self.namespace}:experiments"

    def experiment_counts(self, name: str) -> str:
        return f"{self.namespace}:experiment:{name}:counts"
