"""Fixtures of the trainer tests: small real datasets and a trainer bound to the test's own
Redis namespace and directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from recsys.als import AlsParams
from recsys.settings import Settings
from recsys.sources import synthetic
from recsys.sources.movielens import load_movielens
from trainer.pipeline import Trainer, history_store
from trainer.telemetry import TrainerMetrics

START_MS = 1_735_689_600_000  # 2025-01-01: fixed, so the frame is the same on every run


@pytest.fixture(scope="session")
def synthetic_frame() -> pd.DataFrame:
    return synthetic.generate(60_000, seed=7, start_ms=START_MS, days=30)


@pytest.fixture(scope="session")
def small_frame() -> pd.DataFrame:
    """For the mechanics of publishing (not quality): a few seconds per run at most."""
    return synthetic.generate(15_000, seed=3, start_ms=START_MS, days=20)


# Small and quick: for tests of publishing mechanics, not of model quality.
FAST = AlsParams(factors=16, regularization=50.0, iterations=5, alpha=10.0)


@pytest.fixture(scope="session")
def _ml100k_cache() -> dict[Path, pd.DataFrame]:
    return {}


@pytest.fixture
def ml100k_frame(ml100k_path: Path, _ml100k_cache: dict[Path, pd.DataFrame]) -> pd.DataFrame:
    if ml100k_path not in _ml100k_cache:
        _ml100k_cache[ml100k_path] = load_movielens(ml100k_path)
    return _ml100k_cache[ml100k_path]


@pytest.fixture
def make_trainer(settings: Settings, redis_client) -> Callable[..., Trainer]:
    """make_trainer(params=None, **setting_overrides): a Trainer on the test's settings; all
    trainers of one test share the history directory, model directory and Redis namespace."""

    def make(params: AlsParams | None = None, **overrides) -> Trainer:
        run_settings = settings.model_copy(update=overrides) if overrides else settings
        return Trainer(run_settings, redis=redis_client, metrics=TrainerMetrics(),
                       store=history_store(run_settings), params=params)

    return make
