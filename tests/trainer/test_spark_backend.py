"""The Spark trainer backend (recsys.spark_als): a real Spark in local mode fits the ALS
candidate and the trainer publishes a version from those factors; the confidence and
regularisation mappings; Java missing and an unreachable master fail at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys import spark_als
from recsys.als import AlsParams
from recsys.foldin import fold_in, gram
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


def test_the_fixed_lambda_sweep_solves_users_then_items_with_the_stream_fold_in():
    rng = np.random.default_rng(3)
    conf = sp.random(30, 20, density=0.25, format="csr", random_state=rng, dtype=np.float32)
    conf.data = 1.0 + 10.0 * conf.data
    conf.data[::7] *= -1.0  # negative feedback: preference 0, confidence |c|
    users0 = rng.normal(size=(30, 4)).astype(np.float32)
    items0 = rng.normal(size=(20, 4)).astype(np.float32)
    lam = 2.0
    users, items = spark_als.finish_fixed_lambda(conf, users0, items0, lam, sweeps=1)
    by_item = conf.T.tocsr()
    for u in range(30):
        row = conf.getrow(u)
        expected = fold_in(items0, gram(items0), lam, row.indices, row.data)
        np.testing.assert_allclose(users[u], expected, rtol=1e-4, atol=1e-5)
    for i in range(20):
        col = by_item.getrow(i)
        expected = fold_in(users, gram(users), lam, col.indices, col.data)
        np.testing.assert_allclose(items[i], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(items, items0)
    # no sweep: Spark's factors unchanged
    same = spark_als.finish_fixed_lambda(conf, users0, items0, lam, sweeps=0)
    assert same[0] is users0 and same[1] is items0


def test_java_missing_names_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    problem = spark_als.java_problem()
    assert problem is not None and spark_als.JAVA_PACKAGE in problem


@pytest.mark.integration
@pytest.mark.slow
def test_spark_backend_fits_the_als_candidate_and_publishes_it(make_trainer, small_frame,
                                                                 redis_client, settings,
                                                                 monkeypatch):
    read = []  # what the final fit had Spark read (a spy: the real function runs)
    weigh = spark_als.spark_weights
    monkeypatch.setattr(spark_als, "spark_weights",
                        lambda session, source: read.append(source) or weigh(session, source))
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
    # ... from the history's Parquet files, read by Spark itself
    assert len(read) == 1
    assert read[0].paths == tuple(p.as_uri() for p in trainer.store.files())
    assert read[0].shape[1] >= manifest["n_items"]
    assert result.metrics["ndcg@10"] > result.baseline_metrics["ndcg@10"]


@pytest.mark.slow
def test_a_local_fit_longer_than_sparks_lineage_allows_completes():
    # without a checkpoint directory MLlib's ALS overflows the JVM's stack past about 20
    # iterations and the context stops (recsys.spark_als._checkpoint_dir)
    rng = np.random.default_rng(0)
    conf = sp.random(40, 30, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    conf.data = 1.0 + 10.0 * conf.data
    options = spark_als.SparkOptions.of("local[2]")
    factors = spark_als.fit_als_spark(conf, AlsParams(factors=4, regularization=1.0,
                                                      iterations=30, alpha=10.0), options)
    assert factors.item_factors.shape == (30, 4)
    assert np.isfinite(factors.item_factors).all()
    assert float(np.abs(factors.item_factors).sum()) > 0


@pytest.mark.slow
def test_a_stopped_spark_session_is_replaced_by_a_working_one():
    options = spark_als.SparkOptions.of("local[2]")
    first = spark_als.spark_session(options)
    first.sparkContext.stop()  # as a failed job in local mode leaves it
    second = spark_als.spark_session(options)
    assert second.range(3).count() == 3


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


@pytest.mark.slow
def test_spark_weighs_the_parquet_history_as_the_driver_does(tmp_path):
    # Spark reads the history's files itself (file:// URI) and must give the driver's W:
    # same ids -> indices, the same decay reference, the negative-rating rule, retention
    from recsys.matrix import index_events, weight_matrix
    from trainer.history import HistoryStore
    from trainer.pipeline import TRAIN_COLUMNS

    day = 86_400_000
    rng = np.random.default_rng(5)
    n = 400
    types = rng.choice(["view", "click", "transaction", "rating", "dislike", "hide"], n)
    frame = pd.DataFrame({
        "event_id": [f"e{i}" for i in range(n)],
        "user_id": [f"u{u}" for u in rng.integers(0, 25, n)],
        "item_id": [f"i{i}" for i in rng.integers(0, 30, n)],
        "event_type": types,
        "value": np.where(types == "rating", rng.integers(1, 6, n).astype(float), np.nan),
        "timestamp": 1_735_689_600_000 + rng.integers(0, 40 * day, n)})
    store = HistoryStore((tmp_path / "history").as_uri(), retention_days=30)
    store.append(frame.iloc[:250])
    store.append(frame.iloc[250:])  # two files
    weights = {"view": 1.0, "click": 2.0, "transaction": 5.0, "rating": 3.0, "dislike": 2.0,
               "hide": 1.0, "addtocart": 3.0}
    loaded = store.load(columns=TRAIN_COLUMNS)
    assert len(loaded) < n  # retention dropped the oldest events: Spark must drop them too
    latest = int(loaded["timestamp"].max()) + day
    loaded = loaded.loc[loaded["item_id"] != "i3"].reset_index(drop=True)  # off the catalogue
    events = index_events(loaded, weights, 7.0, latest, negative_rating_max=2.0)
    expected = weight_matrix(events)
    assert (expected.data < 0).any() and (expected.data > 0).any()

    source = spark_als.HistorySource(
        paths=spark_als.spark_paths(store.location, store.files()),
        user_ids=events.user_ids, item_ids=events.item_ids, event_weights=weights,
        half_life_days=7.0, reference_ms=latest, negative_rating_max=2.0,
        min_timestamp_ms=int(events.timestamps.min()))
    assert all(p.startswith("file:///") for p in source.paths)
    session = spark_als.spark_session(spark_als.SparkOptions.of("local[2]"))
    got = spark_als.collect_weights(spark_als.spark_weights(session, source), source.shape)
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_allclose(got.data, expected.data, rtol=1e-12, atol=1e-12)


def test_history_locations_become_spark_paths(tmp_path):
    files = [tmp_path / "part-000000000001.parquet"]
    assert spark_als.spark_paths(str(tmp_path), files) == (files[0].as_uri(),)
    assert spark_als.spark_paths(tmp_path.as_uri(), files) == (files[0].as_uri(),)
    assert spark_als.spark_paths("s3://bucket/history", ["bucket/history/base-1.parquet"]) \
        == ("s3a://bucket/history/base-1.parquet",)
    assert spark_als.spark_paths("hdfs://nn:8020/h", ["/h/part-1.parquet"]) \
        == ("hdfs://nn:8020/h/part-1.parquet",)
