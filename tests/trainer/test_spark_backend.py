"""The Spark trainer backend (recsys.spark_als): a real Spark in local mode fits the ALS
candidate and the trainer publishes a version from those factors; the confidence and
regularisation mappings; Java missing and an unreachable master fail at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import spark_als
from recsys.als import AlsParams
from recsys.keys import Keys
from recsys.modelstore import load_model, read_current_version

ROOT = Path(__file__).resolve().parents[2]
# Small and quick; a regularisation at which Spark's ALS (count-scaled) beats popularity on
# this synthetic data (at lambda 50 it does not: docs/scale.md)
SPARK_FAST = AlsParams(factors=16, regularization=5.0, iterations=5, alpha=10.0)


def test_spark_ratings_give_sparks_confidence_and_preference_the_same_values():
    alpha = 10.0
    conf = sp.csr_matrix(np.array([[1.0 + alpha * 2.5, 0.0, -(1.0 + alpha * 0.4)],
                                   [0.0, 1.0 + alpha * 0.2, 0.0]], dtype=np.float32))
    r = spark_als.spark_ratings(conf, alpha)
    dense = np.zeros(conf.shape)
    dense[r.row, r.col] = r.data
    # Spark: confidence 1 + alpha * |r|, preference 1 iff r > 0
    assert 1 + alpha * abs(dense[0, 0]) == pytest.approx(conf[0, 0])
    assert 1 + alpha * abs(dense[0, 2]) == pytest.approx(-conf[0, 2])
    assert dense[0, 0] > 0 and dense[1, 1] > 0 and dense[0, 2] < 0


def test_reg_param_is_lambda_per_mean_positive_count_of_the_users_with_entries():
    conf = sp.csr_matrix(np.array([[11.0, 3.0, -2.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]))
    # 2 users with entries, 3 positive entries: a mean user has 1.5 of them
    assert spark_als.spark_reg_param(30.0, conf) == pytest.approx(30.0 / 1.5)


def test_java_missing_names_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    problem = spark_als.java_problem()
    assert problem is not None and spark_als.JAVA_PACKAGE in problem


@pytest.mark.integration
@pytest.mark.slow
def test_spark_backend_fits_the_als_candidate_and_publishes_it(make_trainer, small_frame,
                                                                 redis_client, settings):
    trainer = make_trainer(params=SPARK_FAST, trainer_backend="spark", spark_master="local[2]",
                           trainer_candidates=("popularity", "als"),
                           # no buy-again weight: one Spark fit less (it is not what is tested)
                           trainer_repeat_min_rate=1.0)
    trainer.store.append(small_frame)
    result = trainer.run_once()
    assert result.published, result.decision.reason
    manifest = result.manifest
    assert manifest["candidate"] == "als" and manifest["fit_backend"] == "spark"
    keys = Keys(settings.redis_namespace)
    assert read_current_version(redis_client, keys) == result.version
    model = load_model(redis_client, keys, result.version)
    assert model.item_factors.shape[1] == SPARK_FAST.factors
    # learnt, not zero rows: Spark's factors reached the published version
    assert float(np.abs(model.item_factors).sum(axis=1).min()) > 0
    # published from the refit on the whole history, by Spark too (no warm start in MLlib)
    assert manifest["trained_until_ms"] > manifest["holdout"]["cutoff_ms"]
    assert result.metrics["ndcg@10"] > result.baseline_metrics["ndcg@10"]


@pytest.mark.slow
def test_an_unreachable_master_fails_the_trainer_at_start_up_naming_it(tmp_path):
    env = {**os.environ, "RECSYS_TRAINER_BACKEND": "spark",
           "RECSYS_SPARK_MASTER": "spark://127.0.0.1:9", "RECSYS_SPARK_CONNECT_TIMEOUT_S": "3",
           "RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_MODEL_DIR": str(tmp_path / "m"),
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "shell.cli", "train", "--once", "--no-consume"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode != 0
    assert "spark://127.0.0.1:9" in out.stderr and "RECSYS_SPARK_MASTER" in out.stderr
    assert "Traceback" not in out.stderr
