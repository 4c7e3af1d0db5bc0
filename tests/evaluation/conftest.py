"""Small structured event frames for the evaluation tests (fast, with known answers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.settings import Settings, load_settings
from recsys.sources import make_frame

T0 = 1_700_000_000_000
DAY = 86_400_000


def clustered_frame(n_users: int = 300, n_items: int = 200, n_clusters: int = 10,
                    per_user: int = 16, seed: int = 0, start_user: int = 0,
                    t_start: int = T0, days: float = 30.0, noise: float = 0.1) -> pd.DataFrame:
    """Each user likes one cluster of items (popularity-skewed inside it) plus a little noise;
    events spread uniformly over `days`. Personalised models should beat popularity by far."""
    rng = np.random.default_rng(seed)
    cluster_of_item = np.arange(n_items) % n_clusters
    item_pop = 1.0 / (1 + rng.permutation(n_items))
    users, items, times = [], [], []
    for u in range(n_users):
        c = rng.integers(n_clusters)
        pool = np.flatnonzero(cluster_of_item == c)
        p = item_pop[pool] / item_pop[pool].sum()
        n_own = min(per_user, len(pool))
        own = rng.choice(pool, size=n_own, replace=False, p=p)
        extra = rng.choice(n_items, size=max(1, int(noise * per_user)), replace=False)
        chosen = np.unique(np.concatenate([own, extra]))
        users += [start_user + u] * len(chosen)
        items += chosen.tolist()
        times += (t_start + rng.uniform(0, days * DAY, len(chosen))).astype(np.int64).tolist()
    return make_frame(user_id=[f"u{u}" for u in users], item_id=[f"i{i}" for i in items],
                      event_type="view", timestamp=times)


@pytest.fixture(scope="session")
def clustered() -> pd.DataFrame:
    return clustered_frame()


@pytest.fixture
def fast_settings(tmp_path) -> Settings:
    """Settings with a small, quick ALS; no broker or Redis needed by these pure tests."""
    return load_settings(als_factors=16, als_regularization=1.0, als_iterations=10, alpha=5.0,
                         data_dir=tmp_path / "data", model_dir=tmp_path / "models",
                         trainer_tune_budget_s=5.0)
