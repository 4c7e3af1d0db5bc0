"""The model version in service, held in memory, and the background task that swaps it.

Requests read `holder.current` once and use only that object, so a swap (one attribute
assignment) is atomic from their point of view: a request that started on version A finishes
on A, the next one sees B. Loading happens in a worker thread with its own synchronous Redis
client, so a 100 MB factor read never stalls the event loop.

A new version is noticed by recsys.model_watch (the switch channel, instantly, and a poll of
the current pointer every `api_model_poll_s` in case a message was missed); this module is
the API's reaction: load the version with everything serving derives from it, swap it in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.ann import ANN_FORMAT, AnnIndex, unpack_layout
from recsys.candidates.neighbours import tie_break
from recsys.content import ContentModel, stacked_items
from recsys.errors import ModelIntegrityError
from recsys.keys import Keys
from recsys.model_watch import ModelSwitchWatcher
from recsys.modelstore import ModelVersion, load_model
from recsys.neighbours import item_norms
from recsys.redis_client import redis_client, subscriber_client
from recsys.settings import Settings
from serving.heap import settle_after_load
from serving.scoring import rows_of
from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

# A version that failed to load is retried after this long, not on every poll.
FAILED_RETRY_S = 30.0
# The watcher's Redis failures, as labels of recsys_api_redis_errors_total.
REDIS_ERROR_LABELS = {"refresh": "model_refresh", "watch": "model_watch"}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One model version plus everything serving derives from it once, at load time."""

    model: ModelVersion
    norms: np.ndarray
    popular_rows: np.ndarray  # rows ordered by the version's all-time popularity, best first
    popular_scores: np.ndarray
    popular_rank: np.ndarray  # row -> position in popular_rows (n_items when absent)
    event_weights: dict[str, float]
    regularization: float
    alpha: float
    beats_popularity: bool
    loaded_at: float
    load_seconds: float
    # Ratings up to this are negative feedback under this version (None: none are; also for
    # versions published before the setting existed, which were fitted that way).
    negative_rating_max: float | None = None
    kind: str = "als"  # the version's model_kind: als | item_item | popularity
    neighbour_rows: np.ndarray | None = None  # item_item: (n_items, N) int32
    neighbour_weights: np.ndarray | None = None  # item_item: (n_items, N) float32
    neighbour_bias: np.ndarray | None = None  # item_item: popularity tie-break per row
    buy_again_weight: float = 0.0  # > 0: exclude_seen=false fuses the user's own items in
    ann: AnnIndex | None = None  # catalogues of `ann_min_items` or more (recsys/ann.py)
    # versions with a content model and factors: [y_i, e_i] per row (serving/content_items.py)
    hybrid_items: np.ndarray | None = None
    # rows the version was published with; rows past it were mapped from attributes since
    n_model_items: int = 0
    # items whose rows (past n_model_items) hold the stream's item fold-in vectors
    # (serving.fresh_items): flagged `fresh` in responses
    stream_items: frozenset[str] = frozenset()
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def item_ids(self) -> list[str]:
        return self.model.item_ids

    @property
    def item_factors(self) -> np.ndarray:
        return self.model.item_factors

    @property
    def index(self) -> dict[str, int]:
        return self.model.item_index

    @property
    def factors(self) -> int:
        return self.model.factors

    @property
    def content(self) -> ContentModel | None:
        return self.model.content

    @property
    def item_embeddings(self) -> np.ndarray | None:
        return self.model.item_embeddings

    @property
    def n_fresh(self) -> int:
        return len(self.stream_items)

    def is_fresh_row(self, row: int) -> bool:
        """A row of the stream's item fold-in (not the version's, nor mapped from content)."""
        return row >= self.n_model_items and self.item_ids[row] in self.stream_items

    def fresh_among(self, items: Iterable[str]) -> list[str]:
        """Which of these items are the stream's (the response flags them `fresh`)."""
        stream = self.stream_items
        return [item for item in items if item in stream] if stream else []

    def popular(self, rows: np.ndarray | None = None) -> Iterator[tuple[str, float]]:
        """All-time popularity of this version (or of `rows` only), lazily, best first.

        Callers stop after k items, so nothing here may touch every item per request.
        """
        ids, scores, rank = self.item_ids, self.popular_scores, self.popular_rank
        if rows is None:
            for pos, row in enumerate(self.popular_rows):
                yield ids[row], float(scores[pos])
            return
        ranked = rows[np.argsort(rank[rows], kind="stable")]
        for row in ranked:
            pos = rank[row]
            if pos >= len(scores):
                return  # the rest have no popularity under this version
            yield ids[row], float(scores[pos])


def build_loaded_model(client: Any, keys: Keys, version: str, settings: Settings) -> LoadedModel:
    """Read one version from Redis (synchronous client) and derive the serving state."""
    start = time.perf_counter()
    model = load_model(client, keys, version)
    pairs = client.zrange(keys.popularity_alltime(version), 0, -1, desc=True, withscores=True)
    index = model.item_index  # built here, in the loader thread, not on a first request
    ids = [member.decode() if isinstance(member, bytes) else member for member, _ in pairs]
    scores = np.asarray([score for _, score in pairs], dtype=np.float64)
    keep = np.fromiter((item in index for item in ids), dtype=bool, count=len(ids))
    popular_rows = rows_of(index, ids)
    popular_rank = np.full(len(model.item_ids), len(popular_rows), dtype=np.int64)
    popular_rank[popular_rows] = np.arange(len(popular_rows))
    manifest = model.manifest
    _ = model.yty  # cached for anonymous fold-ins
    bias = None
    if model.neighbour_rows is not None:
        by_row = np.zeros(len(model.item_ids), dtype=np.float64)
        by_row[popular_rows] = scores[keep] if len(scores) else 0.0
        bias = tie_break(by_row)
    ann = _load_ann(client, keys, model, settings)
    hybrid = (stacked_items(model.item_factors, model.item_embeddings)
              if model.content is not None and model.item_embeddings is not None
              and model.factors > 0 and model.kind == "als" else None)
    return LoadedModel(
        model=model,
        norms=item_norms(model.item_factors),
        popular_rows=popular_rows,
        popular_scores=scores[keep] if len(scores) else scores,
        popular_rank=popular_rank,
        # The version's own confidence rule, so a session is folded in with the maths the
        # factors were fitted with (settings only fill what an older manifest lacks).
        event_weights={**settings.event_weights, **(manifest.get("event_weights") or {})},
        regularization=float(manifest.get("regularization", settings.als_regularization)),
        alpha=float(manifest.get("alpha", settings.alpha)),
        # A manifest without the flag predates the gate: serve it.
        beats_popularity=bool(manifest.get("beats_popularity", True)),
        loaded_at=time.time(),
        load_seconds=time.perf_counter() - start,
        negative_rating_max=manifest.get("negative_rating_max"),
        kind=model.kind,
        neighbour_rows=model.neighbour_rows,
        neighbour_weights=model.neighbour_weights,
        neighbour_bias=bias,
        buy_again_weight=float((manifest.get("buy_again") or {}).get("weight") or 0.0),
        ann=ann,
        hybrid_items=hybrid,
        n_model_items=len(model.item_ids),
    )


def _load_ann(client: Any, keys: Keys, model: ModelVersion, settings: Settings
              ) -> AnnIndex | None:
    """The version's approximate-search index when its catalogue is large enough. A version
    without a usable one is still served, by scoring every item (logged)."""
    if len(model.item_ids) < settings.ann_min_items:
        return None
    if model.manifest.get("ann_format") != ANN_FORMAT:
        log.warning("version %s has %d items but no %s index: every request scores every "
                    "item", model.version, len(model.item_ids), ANN_FORMAT)
        return None
    raw = client.get(keys.model_ann(model.version))
    try:
        if raw is None:
            raise ModelIntegrityError("its index key is missing")
        layout = unpack_layout(raw, len(model.item_ids), model.factors)
        return AnnIndex(model.item_factors, layout, settings.ann_probe)
    except ModelIntegrityError as exc:
        log.warning("version %s: unusable ANN index (%s): every request scores every item",
                    model.version, exc)
        return None


class ServedModel:
    """The version in service and its loader; `watcher` (recsys.model_watch) decides when."""

    def __init__(self, settings: Settings, keys: Keys, redis: Any,
                 metrics: ApiMetrics) -> None:
        self.settings = settings
        self.keys = keys
        self.redis = redis
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self._loader_client: Any = None
        poll = settings.api_model_poll_s
        self.watcher: ModelSwitchWatcher[LoadedModel] = ModelSwitchWatcher(
            redis, keys, poll_s=poll,
            in_use=lambda: self.current.version if self.current is not None else None,
            load=self.load, install=self.install,
            # its own connection: the control client's timeouts are for commands
            listener=lambda: subscriber_client(settings, socket_connect_timeout=2),
            failed_retry_s=FAILED_RETRY_S, resubscribe_s=min(poll, 2.0),
            on_load_error=lambda version, exc: metrics.model_load_failures.inc(),
            on_redis_error=lambda where, exc: metrics.redis_errors.labels(
                REDIS_ERROR_LABELS[where]).inc())

    def _loader(self) -> Any:
        if self._loader_client is None:
            # Generous timeout: a 500,000-item version is a 128 MB value.
            self._loader_client = redis_client(self.settings, socket_timeout=60,
                                               socket_connect_timeout=5)
        return self._loader_client

    async def load(self, version: str) -> LoadedModel:
        """Read a version and derive its serving state without installing it (also the
        loader of experiments' version variants)."""
        # A worker thread with its own synchronous client: the event loop never waits.
        return await asyncio.to_thread(build_loaded_model, self._loader(), self.keys, version,
                                       self.settings)

    def install(self, loaded: LoadedModel) -> None:
        """Swap the served version (one reference assignment)."""
        previous = self.current
        self.current = loaded
        self.metrics.set_model(loaded.version, len(loaded.item_ids), loaded.loaded_at,
                               previous.version if previous else None)
        self.metrics.factor_load_seconds.observe(loaded.load_seconds)
        self.metrics.model_switches.inc()
        log.info("serving model version %s (%d items x %d factors, loaded in %.3fs)%s",
                 loaded.version, len(loaded.item_ids), loaded.factors, loaded.load_seconds,
                 f"; replaced {previous.version}" if previous else "")
        settle_after_load(f"model version {loaded.version}")

    async def refresh(self) -> bool:
        """Load and install the current version if it is not the one in memory.

        Returns True when a new version was installed. Redis errors propagate.
        """
        return await self.watcher.refresh()

    def start(self) -> None:
        self.watcher.start(name="model-holder")

    async def stop(self) -> None:
        await self.watcher.stop()
        if self._loader_client is not None:
            self._loader_client.close()
            self._loader_client = None
