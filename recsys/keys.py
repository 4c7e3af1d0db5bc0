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
    {ns}:model:{v}:content           string  versions fitted with item attributes: the content
                                             model and the items' content embeddings
                                             (recsys.content.pack_content; manifest `content`)
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

Catalog (written by the API's PUT /v1/items and `recsys items load`, recsys.catalog_codec)
    {ns}:item:{item}                 hash    name, image_url, category, category_paths, brand,
                                             price, description, tags, available, attributes
    {ns}:catalog:category            hash    item id -> category, '' if none: every catalog
                                             item is a field (serving keeps it in memory)
    {ns}:catalog:facets              hash    item id -> JSON of what filters read (paths,
                                             brand, price, tags, attributes; in memory too)
    {ns}:catalog:unavailable         set     item ids that must not be recommended
    {ns}:catalog:generation          string  counter bumped by every catalog write (API
                                             replicas reload category/unavailable on change)
    {ns}:catalog:changes             zset    item id -> time (epoch ms) of its last catalog
                                             write, the newest CATALOG_CHANGES_MAX kept: API
                                             replicas map new items' attributes to factors
                                             from it (serving/content_items.py)
    {ns}:catalog:added               hash    item id -> when it first entered the catalogue
                                             (epoch ms, the API's clock; HSETNX: kept across
                                             later writes): the `new` boost condition
    {ns}:catalog:attribute_names     set     every `attributes` name a catalogue write used
                                             (rules naming another one are refused)

Business rules (the API's /v1/placements, recsys.rules)
    {ns}:placements                  hash    placement name -> JSON rules (boosts, pins,
                                             max_per, diversity)

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

Redis Cluster layout (`Keys(ns, user_buckets=B)`, B > 0; settings `redis_cluster`,
`redis_user_buckets`). A cluster places a key by the CRC16 of its hash tag (the text between
the first `{` and `}`), and a Lua script or MULTI may only touch keys of one slot. So the
keys that one script or transaction touches share a tag, and nothing else does:
    {ns:ctl}:model:current, {ns:ctl}:model:previous, {ns:ctl}:trainer:lease
                                     the pointer, the rollback list and the lease: the one
                                     activation script (fenced switch) runs in this slot
    {ns:model:v}:manifest, :item_ids, :item_factors, :similar, :tower, :neighbours, :ann,
    :content, {ns:model:v}:pop:alltime
                                     one version's item side: one MGET loads it
    {ns:u:b}:uvec:v                  hash: user id -> vector of the users in bucket b
                                     (b = crc32(user) mod B) under version v
    {ns:u:b}:seen:{user}, {ns:u:b}:hidden:{user}
                                     a user's state shares the bucket's tag with their vector:
                                     the API's one-script user read and the stream's per-bucket
                                     writes stay in one slot
    {ns:pop:w}, {ns:pop:w}:ref, {ns:pop:w}:batch:{id}, {ns:pop:w}:applied:{topic}
                                     one window's trending set and its guards (one script)
    {ns:model:v}:user_gram, :ivec, :ivec:seq, :ivec:updated, :ivec:refold
                                     the item fold-in's keys of a version (one script writes
                                     vectors, counter and stamps)
    {ns:i:item}:users, {ns:i:item}:conf
                                     an item's recent users and their confidences (one script)
    {ns:catalog}:item:{item}, :category, :facets, :unavailable, :generation, :changes
                                     the catalogue, written in one MULTI per batch
Experiments and erasure keys are single-key operations and keep their names. A version's
manifest records its B (`user_buckets`); a reader whose B differs refuses the version
(recsys.modelstore.check_user_layout), so vectors are never looked up in the wrong bucket.
The version pointer stays the one atomic switch: every key of a version is written before
the pointer moves, and readers resolve the pointer first.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# newest catalogue writes kept in Keys.catalog_changes (bounds its memory)
CATALOG_CHANGES_MAX = 100_000
POPULARITY_WINDOWS = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
_VERSION_KEY_SUFFIXES = frozenset({"manifest", "item_ids", "item_factors", "similar", "tower",
                                   "neighbours", "ann", "content", "user_gram"})
_ITEM_VECTOR_SUFFIXES = (":seq", ":updated", ":refold")
# cluster layout: a version's item fold-in keys share its model tag (one script writes them)
_CLUSTER_ITEM_VECTOR_SUFFIXES = frozenset({"ivec", "ivec:seq", "ivec:updated", "ivec:refold"})


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "recsys"
    # 0: one-node layout (the names above). B > 0: the Redis Cluster layout, user vectors and
    # user state spread over B hash-tagged buckets.
    user_buckets: int = 0

    @classmethod
    def for_settings(cls, settings: object) -> Keys:
        """The layout a deployment uses: its namespace, and buckets when in cluster mode."""
        cluster = bool(getattr(settings, "redis_cluster", False))
        return cls(str(getattr(settings, "redis_namespace", "recsys")),
                   int(getattr(settings, "redis_user_buckets", 0)) if cluster else 0)

    @property
    def cluster(self) -> bool:
        """Keys are laid out for Redis Cluster: a multi-key script or MULTI must stay within
        one hash tag, and a transaction cannot span them."""
        return self.user_buckets > 0

    def _tag(self, name: str) -> str:
        return "{" + f"{self.namespace}:{name}" + "}"

    def user_bucket(self, user_id: str) -> int:
        """The bucket of a user in the cluster layout (stable across processes)."""
        return zlib.crc32(user_id.encode("utf-8")) % self.user_buckets

    def _user_tag(self, user_id: str) -> str:
        return self._tag(f"u:{self.user_bucket(user_id)}")

    def same_slot_groups(self, users: list[str]) -> list[list[str]]:
        """Users grouped so that each group's keys share one slot (one group in the one-node
        layout): what one script or transaction may touch together."""
        if not self.cluster:
            return [list(users)] if users else []
        groups: dict[int, list[str]] = {}
        for user in users:
            groups.setdefault(self.user_bucket(user), []).append(user)
        return list(groups.values())

    # --- model versions ------------------------------------------------------------------
    @property
    def current_model(self) -> str:
        if self.cluster:
            return f"{self._tag('ctl')}:model:current"
        return f"{self.namespace}:model:current"

    @property
    def previous_models(self) -> str:
        if self.cluster:
            return f"{self._tag('ctl')}:model:previous"
        return f"{self.namespace}:model:previous"

    @property
    def model_switch_channel(self) -> str:
        return f"{self.namespace}:model:switch"

    def model_manifest(self, version: str) -> str:
        return self._version_key(version, "manifest")

    def model_item_ids(self, version: str) -> str:
        return self._version_key(version, "item_ids")

    def model_item_factors(self, version: str) -> str:
        return self._version_key(version, "item_factors")

    def model_similar(self, version: str) -> str:
        return self._version_key(version, "similar")

    def model_tower(self, version: str) -> str:
        return self._version_key(version, "tower")

    def model_ann(self, version: str) -> str:
        return self._version_key(version, "ann")

    def _version_key(self, version: str, suffix: str) -> str:
        if self.cluster:
            return f"{self._tag('model:' + version)}:{suffix}"
        return f"{self.namespace}:model:{version}:{suffix}"

    def model_content(self, version: str) -> str:
        return self._version_key(version, "content")

    def model_user_gram(self, version: str) -> str:
        """XtX of the version's user factors (the item fold-in's Gram matrix)."""
        return self._version_key(version, "user_gram")

    @property
    def trainer_lease(self) -> str:
        if self.cluster:  # beside the pointer: the fenced switch checks it in one script
            return f"{self._tag('ctl')}:trainer:lease"
        return f"{self.namespace}:trainer:lease"

    def version_key_patterns(self) -> list[str]:
        """SCAN patterns that match every version-scoped key (for orphan collection)."""
        if self.cluster:
            ns = self.namespace
            return ["{" + f"{ns}:model:*", "{" + f"{ns}:u:*}}:uvec:*"]
        return [f"{self.namespace}:model:*", f"{self.namespace}:uvec:*",
                f"{self.namespace}:pop:alltime:*", f"{self.namespace}:ivec:*"]

    def version_of(self, key: str) -> str | None:
        """The version a version-scoped key belongs to; None for any other key."""
        ns = self.namespace
        if self.cluster:
            return self._cluster_version_of(key)
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
        return self._version_key(version, "neighbours")

    def _cluster_version_of(self, key: str) -> str | None:
        model, buckets = "{" + f"{self.namespace}:model:", "{" + f"{self.namespace}:u:"
        if key.startswith(model):
            version, sep, suffix = key[len(model):].partition("}:")
            if sep and version and suffix in (_VERSION_KEY_SUFFIXES | {"pop:alltime"}
                                              | _CLUSTER_ITEM_VECTOR_SUFFIXES):
                return version
        elif key.startswith(buckets):
            _, sep, version = key[len(buckets):].partition("}:uvec:")
            return version if sep and version else None
        return None

    def model_keys(self, version: str) -> list[str]:
        """Every key of one version, its user vectors included."""
        return [
            self.model_manifest(version),
            *self.user_vector_hashes(version),
            self.model_item_ids(version),
            self.model_item_factors(version),
            self.model_similar(version),
            self.model_tower(version),
            self.model_neighbours(version),
            self.model_ann(version),
            self.model_content(version),
            self.popularity_alltime(version),
            self.model_user_gram(version),
            *self.item_vector_keys(version),
        ]

    # --- user state ------------------------------------------------------------------------
    def user_vectors(self, version: str) -> str:
        """The hash of user vectors computed against `version` (field: the user id), in the
        one-node layout. Code that may run against a cluster uses user_vector_hash."""
        if self.cluster:
            raise ValueError("the cluster layout has one user-vector hash per bucket: "
                             "use Keys.user_vector_hash(version, user)")
        return f"{self.namespace}:uvec:{version}"

    def user_vector_hash(self, version: str, user_id: str) -> str:
        """The hash that holds `user_id`'s vector under `version` (field: the user id)."""
        if self.cluster:
            return f"{self._user_tag(user_id)}:uvec:{version}"
        return f"{self.namespace}:uvec:{version}"

    def user_vector_hashes(self, version: str) -> list[str]:
        """Every user-vector hash of `version` (one, or one per bucket)."""
        if self.cluster:
            return [f"{self._tag(f'u:{b}')}:uvec:{version}" for b in range(self.user_buckets)]
        return [f"{self.namespace}:uvec:{version}"]

    def user_vector_pattern(self, user_id: str) -> str:
        """SCAN pattern of every hash that may hold `user_id`'s vector (any version)."""
        if self.cluster:
            return f"{self._user_tag(user_id)}:uvec:*"
        return f"{self.namespace}:uvec:*"

    # --- item fold-in (stream-learned item vectors) ---------------------------------------
    def item_vectors(self, version: str) -> str:
        """The hash of item vectors the stream learned under `version` (field: the item id)."""
        if self.cluster:
            return self._version_key(version, "ivec")
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
        if self.cluster:  # with its confidences: one script updates both
            return f"{self._tag('i:' + item_id)}:users"
        return f"{self.namespace}:iusers:{item_id}"

    def item_confidences(self, item_id: str) -> str:
        """Those users' confidences on the item (hash user -> confidence)."""
        if self.cluster:
            return f"{self._tag('i:' + item_id)}:conf"
        return f"{self.namespace}:iconf:{item_id}"

    def seen(self, user_id: str) -> str:
        if self.cluster:
            return f"{self._user_tag(user_id)}:seen:{user_id}"
        return f"{self.namespace}:seen:{user_id}"

    def hidden(self, user_id: str) -> str:
        if self.cluster:
            return f"{self._user_tag(user_id)}:hidden:{user_id}"
        return f"{self.namespace}:hidden:{user_id}"

    # --- popularity ------------------------------------------------------------------------
    def popularity(self, window: str) -> str:
        if window not in POPULARITY_WINDOWS:
            raise ValueError(f"unknown popularity window {window!r}")
        if self.cluster:  # its ref, batch guards and watermarks hang off it: one slot
            return self._tag(f"pop:{window}")
        return f"{self.namespace}:pop:{window}"

    def popularity_ref(self, window: str) -> str:
        return f"{self.popularity(window)}:ref"

    def popularity_batch(self, window: str, batch_id: str) -> str:
        return f"{self.popularity(window)}:batch:{batch_id}"

    def popularity_applied(self, window: str, topic: str) -> str:
        """Hash partition -> highest offset of `topic` counted in the window (the replay
        guard of stream.trending). Keyed by topic: a recreated topic under a new name starts
        afresh; recreating one under the same name needs these keys deleted."""
        return f"{self.popularity(window)}:applied:{topic}"

    def popularity_alltime(self, version: str) -> str:
        if self.cluster:
            return self._version_key(version, "pop:alltime")
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
        if self.cluster:  # with the catalogue's indexes: a batch of PUTs is one MULTI
            return f"{self._tag('catalog')}:item:{item_id}"
        return f"{self.namespace}:item:{item_id}"

    def _catalog_key(self, name: str) -> str:
        if self.cluster:
            return f"{self._tag('catalog')}:{name}"
        return f"{self.namespace}:catalog:{name}"

    @property
    def catalog_category(self) -> str:
        return self._catalog_key("category")

    @property
    def catalog_facets(self) -> str:
        return self._catalog_key("facets")

    @property
    def catalog_unavailable(self) -> str:
        return self._catalog_key("unavailable")

    @property
    def catalog_generation(self) -> str:
        return self._catalog_key("generation")

    @property
    def catalog_changes(self) -> str:
        return self._catalog_key("changes")

    @property
    def catalog_added(self) -> str:
        return f"{self.namespace}:catalog:added"

    @property
    def catalog_attribute_names(self) -> str:
        return f"{self.namespace}:catalog:attribute_names"

    @property
    def placements(self) -> str:
        return f"{self.namespace}:placements"

    # --- experiments ---------------------------------------------------------------------
    @property
    def experiments(self) -> str:
        return f"{self.namespace}:experiments"

    def experiment_counts(self, name: str) -> str:
        return f"{self.namespace}:experiment:{name}:counts"
