"""Versions of every kind, published by the real trainer into a real Redis, served by the app:
an item-item version is scored from the user's recent items, a popularity version answers as
popularity (not as a fallback)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from recsys.candidates.neighbours import score_items, tie_break
from recsys.keys import Keys
from recsys.modelstore import load_model
from trainer.pipeline import Trainer, history_store
from trainer.publish import load_from_disk
from trainer.telemetry import TrainerMetrics

from .conftest import running_app, with_overrides

pytestmark = pytest.mark.integration

START_MS = 1_735_689_600_000


def taste_frame(n_users: int = 300, seed: int = 0) -> pd.DataFrame:
    """Four disjoint tastes of 12 items each: item-item models learn them at once."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        taste = user % 4
        items = rng.choice(12, size=6, replace=False)
        for n, item in enumerate(items):
            rows.append((f"u{user}", f"i{taste * 12 + int(item)}",
                         START_MS + (n * n_users + user) * 60_000))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["event_type"] = "transaction"
    frame["value"] = np.nan
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    return frame


def no_taste_frame(n_users: int = 300, seed: int = 0) -> pd.DataFrame:
    """One skewed distribution for everybody: nothing beats popularity."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, 41) ** 1.2
    p /= p.sum()
    rows = []
    for user in range(n_users):
        for n, item in enumerate(rng.choice(40, size=6, p=p, replace=False)):
            rows.append((f"u{user}", f"i{int(item)}", START_MS + (n * n_users + user) * 60_000))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["event_type"] = "transaction"
    frame["value"] = np.nan
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    return frame


def train(settings, frame: pd.DataFrame, **overrides):
    run_settings = with_overrides(settings, trainer_tune_budget_s=5.0, **overrides)
    store = history_store(run_settings)
    store.append(frame)
    trainer = Trainer(run_settings, metrics=TrainerMetrics(), store=store)
    try:
        return trainer.run_once()
    finally:
        trainer.redis.close()


def write_seen(redis_client, keys: Keys, user: str, items: list[str]) -> None:
    """The user's seen set as the stream worker writes it (item -> last time, ms)."""
    now = int(time.time() * 1000)
    redis_client.zadd(keys.seen(user), {item: now - n for n, item in enumerate(items)})


@pytest.mark.anyio
async def test_item_item_version_is_scored_from_the_users_recent_items(settings, redis_client):
    keys = Keys(settings.redis_namespace)
    result = train(settings, taste_frame(), trainer_candidates=("ease",))
    assert result.published, result.decision.reason
    manifest = result.manifest
    assert manifest["model_kind"] == "item_item" and manifest["candidate"] == "ease"
    board = {e["name"]: e for e in manifest["selection"]["leaderboard"]}
    assert set(board) == {"popularity", "ease"} and board["ease"]["holdout"]
    model = load_model(redis_client, keys)
    assert model.kind == "item_item" and not model.uses_factors
    assert not redis_client.exists(keys.user_vectors(result.version))  # no vectors at all

    # a visitor of taste 1 (items i12..i23), known to serving only through their seen set
    history = ["i12", "i13", "i14"]
    write_seen(redis_client, keys, "newcomer", history)
    async with running_app(settings) as client:
        r = await client.get("/v1/users/newcomer/recommendations", params={"k": 5})
        anon = await client.post("/v1/recommendations/anonymous", params={"k": 5}, json={
            "items": [{"item_id": i, "event_type": "view"} for i in history]})
    body = r.json()
    assert r.status_code == 200 and body["source"] == "personalized"
    assert body["model_version"] == result.version
    got = [item["item_id"] for item in body["items"]]
    # what the published neighbour matrix gives, computed independently from the disk copy
    stored = load_from_disk(settings.model_dir, result.version)
    ids = stored.item_ids.tolist()
    rows = np.array([ids.index(i) for i in history])
    scores = score_items(rows, stored.neighbour_rows, stored.neighbour_weights,
                         tie_break(stored.item_scores))
    scores[rows] = -np.inf
    assert got == [ids[j] for j in np.argsort(-scores, kind="stable")[:5]]
    assert all(12 <= int(item[1:]) < 24 for item in got)  # the visitor's taste, not others'
    assert not set(got) & set(history)
    assert anon.status_code == 200 and anon.json()["source"] == "anonymous"
    assert [i["item_id"] for i in anon.json()["items"]] == got


@pytest.mark.anyio
async def test_popularity_version_answers_as_popularity(settings, redis_client):
    keys = Keys(settings.redis_namespace)
    result = train(settings, no_taste_frame(), trainer_candidates=("als", "knn_cosine"))
    assert result.published
    assert result.manifest["model_kind"] == "popularity", result.manifest["selection"]["reason"]
    write_seen(redis_client, keys, "u1", ["i0"])
    async with running_app(settings) as client:
        r = await client.get("/v1/users/u1/recommendations", params={"k": 5})
        similar = await client.get("/v1/items/i3/similar", params={"k": 3})
    body = r.json()
    assert r.status_code == 200 and body["source"] == "popularity"
    got = [item["item_id"] for item in body["items"]]
    assert len(got) == 5 and "i0" not in got
    assert got[0] == "i1"  # the most bought item the user does not have
    # a popularity version still knows which items go together (cosine neighbours)
    assert similar.status_code == 200 and similar.json()["source"] == "similar"
    assert len(similar.json()["items"]) == 3
