"""Serving fixtures: a small implicit ALS model fitted here and published to the test's Redis
namespace with the trainer's own contract (stage_model_version + activate_version)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
import redis as redis_lib
import scipy.sparse as sp

from recsys.keys import Keys
from recsys.modelstore import (
    SIMILAR_FORMAT,
    activate_version,
    pack_similar,
    stage_model_version,
)
from recsys.settings import Settings
from serving.main import create_app

N_CATEGORIES = 4
ITEMS_PER_CATEGORY = 10
N_USERS = 80
FACTORS = 8


@dataclass
class Published:
    version: str
    item_ids: list[str]
    item_factors: np.ndarray
    user_ids: list[str]
    user_factors: np.ndarray
    seen: dict[str, list[str]]
    category_of: dict[str, str]
    popularity: dict[str, float]
    similar: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def scores(self, user: str) -> np.ndarray:
        return self.item_factors @ self.user_factors[self.user_ids.index(user)]


def fit_model(seed: int = 7) -> tuple[list[str], list[str], np.ndarray, np.ndarray,
                                      dict[str, list[str]], dict[str, str]]:
    """Users who each like one category; implicit ALS (CPU) learns that structure."""
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(seed)
    items = [f"i{c}{j}" for c in range(N_CATEGORIES) for j in range(ITEMS_PER_CATEGORY)]
    category_of = {item: f"cat{item[1]}" for item in items}
    users = [f"u{n}" for n in range(N_USERS)]
    rows, cols, seen = [], [], {}
    for n, user in enumerate(users):
        cat = n % N_CATEGORIES
        picks = rng.choice(ITEMS_PER_CATEGORY, size=6, replace=False)
        seen[user] = [items[cat * ITEMS_PER_CATEGORY + j] for j in picks]
        rows += [n] * len(picks)
        cols += [cat * ITEMS_PER_CATEGORY + j for j in picks]
    conf = np.full(len(rows), 1.0 + 2.0 * 1.0, dtype=np.float32)  # c = 1 + alpha * w
    matrix = sp.csr_matrix((conf, (rows, cols)), shape=(len(users), len(items)))
    model = AlternatingLeastSquares(factors=FACTORS, regularization=0.05, iterations=12,
                                    alpha=1.0, random_state=seed)
    model.fit(matrix, show_progress=False)
    return (items, users, np.asarray(model.item_factors, dtype=np.float32),
            np.asarray(model.user_factors, dtype=np.float32), seen, category_of)


def manifest(version: str, n_items: int, factors: int, n_users: int = 0,
             beats_popularity: bool = True) -> dict:
    return {"version": version, "created_at": "2026-01-01T00:00:00Z", "factors": factors,
            "regularization": 0.05, "alpha": 2.0, "iterations": 12,
            "event_weights": {"view": 1.0, "click": 1.5, "addtocart": 4.0, "transaction": 8.0,
                              "rating": 1.0},
            "n_users": n_users, "n_items": n_items, "metrics": {}, "baseline_metrics": {},
            "snapshot": {"offsets": {}, "latest_event_ms": 0}, "similar_items_n": 5,
            "beats_popularity": beats_popularity}


def publish(client: redis_lib.Redis, keys: Keys, version: str, items: list[str],
            item_factors: np.ndarray, users: list[str], user_factors: np.ndarray,
            similar: dict | None = None, popularity: dict | None = None,
            beats_popularity: bool = True, packed_similar: bool = True) -> None:
    """Stage and activate a version as the trainer does. `similar`: item -> [(item, score)];
    stored packed (the trainer's format) or, with packed_similar=False, as the JSON of
    versions published before it."""
    meta = manifest(version, len(items), item_factors.shape[1], len(users), beats_popularity)
    if similar and packed_similar:
        row = {item: n for n, item in enumerate(items)}
        similar = {item: pack_similar(np.array([row[i] for i, _ in pairs]),
                                      np.array([score for _, score in pairs]))
                   for item, pairs in similar.items()}
        meta["similar_format"] = SIMILAR_FORMAT
    stage_model_version(client, keys, version, items, item_factors, meta,
                        user_ids=users, user_factors=user_factors, similar=similar,
                        popularity=popularity)
    activate_version(client, keys, version)


@pytest.fixture(scope="session")
def fitted():
    return fit_model()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_namespace)


@pytest.fixture
def published(fitted, settings: Settings, redis_client: redis_lib.Redis, keys: Keys
              ) -> Published:
    items, users, item_factors, user_factors, seen, category_of = fitted
    norms = np.linalg.norm(item_factors, axis=1)
    cosine = (item_factors @ item_factors.T) / np.outer(norms, norms)
    similar = {}
    for row, item in enumerate(items):
        order = [j for j in np.argsort(-cosine[row]) if j != row][:5]
        similar[item] = [(items[j], float(cosine[row, j])) for j in order]
    counts: dict[str, float] = {}
    for user_items in seen.values():
        for item in user_items:
            counts[item] = counts.get(item, 0.0) + 1.0
    publish(redis_client, keys, "v1", items, item_factors, users, user_factors,
            similar=similar, popularity=counts)
    now_ms = int(time.time() * 1000)
    pipe = redis_client.pipeline()
    for user, user_items in seen.items():
        pipe.zadd(keys.seen(user), {item: now_ms - n for n, item in enumerate(user_items)})
    pipe.execute()
    return Published("v1", items, item_factors, users, user_factors, seen, category_of,
                     counts, similar)


def with_overrides(settings: Settings, **changes) -> Settings:
    """A validated copy of the test's settings with some fields changed."""
    return Settings.model_validate({**settings.model_dump(), **changes})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process httpx client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as http:
        yield http
