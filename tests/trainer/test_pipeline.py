"""The training run end to end against a real Redis: the gate, publishing, rollback, garbage
collection, failing runs and the atomicity of a model switch as a concurrent reader sees it."""

from __future__ import annotations

import threading
import time

import numpy as np
import orjson
import pandas as pd
import pytest

from recsys.als import AlsParams, Factors, check_finite
from recsys.errors import ModelIntegrityError, ModelNotFound, NotEnoughData
from recsys.keys import Keys
from recsys.modelstore import (
    SIMILAR_FORMAT,
    load_model,
    read_current_version,
    unpack_similar,
    unpack_vector,
)
from trainer.publish import disk_versions, read_manifest, rollback

from .conftest import FAST

pytestmark = pytest.mark.integration

BAD = AlsParams(factors=2, regularization=5000.0, iterations=1, alpha=10.0)


def split_by_time(frame, share: float):
    cut = frame["timestamp"].quantile(share)
    return frame[frame["timestamp"] < cut], frame[frame["timestamp"] >= cut]


def sample(registry, name: str, **labels) -> float | None:
    return registry.get_sample_value(name, labels or None)


def test_gate_rejects_a_worse_model_and_keeps_serving_then_accepts_a_good_one(
        make_trainer, synthetic_frame, redis_client, settings):
    keys = Keys(settings.redis_namespace)
    old, new = split_by_time(synthetic_frame, 0.7)
    first = make_trainer()
    first.store.append(old)
    v1 = first.run_once()
    assert v1.published and read_current_version(redis_client, keys) == v1.version

    first.store.append(new)  # more data arrived since v1
    worse = make_trainer(params=BAD)
    rejected = worse.run_once()
    assert not rejected.published
    assert rejected.serving_version == v1.version
    # v1's data ends before this holdout starts: the whole holdout is new to both models
    assert v1.manifest["trained_until_ms"] < rejected.manifest["holdout"]["cutoff_ms"]
    assert rejected.manifest["gate"]["holdout"] == "full"
    assert rejected.decision.candidate < 0.98 * rejected.decision.serving
    assert read_current_version(redis_client, keys) == v1.version  # still serving
    assert read_manifest(settings.model_dir, rejected.version)["status"] == "rejected"
    assert not redis_client.exists(keys.model_manifest(rejected.version))  # disk only
    # its refit and similar lists were computed ahead of the verdict, but nothing of it
    # reached Redis
    assert not list(redis_client.scan_iter(match=f"*{rejected.version}*"))
    assert sample(worse.metrics.registry, "recsys_trainer_rejected_total", reason="gate") == 1
    assert sample(worse.metrics.registry, "recsys_trainer_eval_metric", metric="ndcg@10",
                  model="serving") == pytest.approx(rejected.decision.serving)

    better = make_trainer().run_once()
    assert better.published and read_current_version(redis_client, keys) == better.version
    assert better.manifest["serving_version"] == v1.version


def test_failing_run_is_counted_and_leaves_serving_untouched(make_trainer, small_frame,
                                                            redis_client, settings, monkeypatch):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=FAST)
    trainer.store.append(small_frame)
    good = trainer.run_once()

    def broken_publish(*args, **kwargs) -> None:
        raise ModelIntegrityError("Redis refused the version")

    monkeypatch.setattr("trainer.pipeline.publish", broken_publish)
    failing = make_trainer(params=FAST, trainer_gate_tolerance=0.99)
    with pytest.raises(ModelIntegrityError):
        failing.run_once()
    assert sample(failing.metrics.registry, "recsys_trainer_run_failures_total",
                  stage="publish") == 1
    assert read_current_version(redis_client, keys) == good.version


def test_pinned_parameters_skip_the_validation_fit_and_the_holdout_keeps_the_floor(
        make_trainer, synthetic_frame, redis_client, settings):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=BAD)
    trainer.store.append(synthetic_frame)
    result = trainer.run_once()
    selection = result.manifest["selection"]
    # one candidate at a given point: no validation carve, nothing fitted to choose
    assert selection["validation"] == "none" and selection["validation_users"] == 0
    board = {e["name"]: e for e in selection["leaderboard"]}
    assert board["als"]["trials"] == 0 and not board["als"]["validation"]
    # the holdout still checks it against popularity: this ALS loses, the floor is served
    assert board["als"]["holdout"]["ndcg@10"] <= board["popularity"]["holdout"]["ndcg@10"]
    assert selection["winner"] == "popularity" and "popularity is published" in \
        selection["reason"]
    assert result.published and load_model(redis_client, keys).kind == "popularity"
    assert result.timings["select"] < 0.5 * result.timings["fit"]


def test_a_candidate_whose_fit_is_not_finite_is_never_published(
        make_trainer, small_frame, redis_client, settings, monkeypatch):
    def nan_fit(*args, **kwargs) -> Factors:
        bad = np.full((3, 4), np.nan, dtype=np.float32)
        return check_finite(Factors(bad, bad))

    monkeypatch.setattr("recsys.candidates.als_model.fit_als", nan_fit)
    trainer = make_trainer(params=FAST)
    trainer.store.append(small_frame)
    result = trainer.run_once()
    board = {e["name"]: e for e in result.manifest["selection"]["leaderboard"]}
    assert board["als"]["skipped"].startswith("failed") and "NaN" in board["als"]["skipped"]
    # the version is the floor, stated as such, not a NaN model
    assert result.published and result.manifest["model_kind"] == "popularity"
    model = load_model(redis_client, Keys(settings.redis_namespace))
    assert model.kind == "popularity" and model.factors == 0 and not model.uses_factors


def test_rollback_restores_the_previous_version_and_gc_keeps_only_recent(
        make_trainer, small_frame, redis_client, settings):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=FAST, trainer_gate_tolerance=0.99, trainer_keep_versions=2)
    trainer.store.append(small_frame)
    versions = [trainer.run_once().version for _ in range(3)]
    assert read_current_version(redis_client, keys) == versions[2]
    # keep 2: the current one and one to roll back to; the oldest is gone everywhere
    assert disk_versions(settings.model_dir) == versions[1:]
    assert not redis_client.exists(*keys.model_keys(versions[0]))
    assert redis_client.hlen(keys.user_vectors(versions[0])) == 0
    assert redis_client.hlen(keys.user_vectors(versions[2])) > 0  # the current one is kept

    restored, replaced = rollback(redis_client, keys)
    assert (restored, replaced) == (versions[1], versions[2])
    model = load_model(redis_client, keys)
    assert model.version == versions[1] and model.manifest["version"] == versions[1]
    with pytest.raises(ModelNotFound):  # nothing further back
        rollback(redis_client, keys)
    assert read_current_version(redis_client, keys) == versions[1]


def test_reader_never_sees_a_mix_of_two_versions(make_trainer, small_frame, redis_client,
                                                 redis_url, settings):
    import redis as redis_lib

    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=FAST, trainer_gate_tolerance=0.99, trainer_keep_versions=2)
    trainer.store.append(small_frame)
    first = trainer.run_once()
    user = str(small_frame["user_id"].value_counts().index[0])  # in every version
    problems: list[str] = []
    seen: set[str] = set()
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        client = redis_lib.Redis.from_url(redis_url)
        while not stop.is_set():
            version = read_current_version(client, keys)
            try:
                model = load_model(client, keys, version)  # MGET of that version's keys
                raw = client.hget(keys.user_vectors(model.version), user)
            except (ModelNotFound, ModelIntegrityError) as exc:
                # A version GC'd between the two reads would be benign, but with
                # keep_versions=2 the replaced version stays; so any failure is a bug.
                problems.append(f"{version} unreadable while current: {exc}")
                continue
            reads += 1
            seen.add(model.version)
            if model.manifest["version"] != model.version:
                problems.append(f"manifest of {model.manifest['version']} under {model.version}")
            if model.item_factors.shape != (len(model.item_ids), model.factors):
                problems.append(f"{model.version}: factors do not fit the ids")
            if raw is None:
                problems.append(f"{model.version}: user vector missing")
            else:
                unpack_vector(raw, model.factors)
            time.sleep(0.002)  # leave the GIL to the publisher now and then
        client.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        later = [trainer.run_once().version for _ in range(2)]
    finally:
        stop.set()
        thread.join(10)
    assert not problems, problems[:5]
    assert reads > 20
    assert seen & {first.version, *later} and len(seen) >= 2


def test_manifest_carries_the_contract_fields(make_trainer, ml100k_frame, redis_client,
                                             settings):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer()
    trainer.store.append(ml100k_frame, {"interactions:0": 10})
    result = trainer.run_once()
    manifest = orjson.loads(redis_client.get(keys.model_manifest(result.version)))
    for name in ("version", "created_at", "factors", "regularization", "alpha", "iterations",
                 "event_weights", "n_users", "n_items", "metrics", "baseline_metrics",
                 "snapshot", "similar_items_n", "beats_popularity"):
        assert name in manifest, name
    assert manifest["snapshot"] == {"offsets": {"interactions:0": 10},
                                    "latest_event_ms": int(ml100k_frame["timestamp"].max())}
    assert manifest == read_manifest(settings.model_dir, result.version)
    # every stage timed in wall and CPU seconds (the benchmark prints both)
    assert set(result.cpu_timings) == set(result.timings) >= {"load", "fit", "publish"}
    # similar items and all-time popularity of this version
    item = str(ml100k_frame["item_id"].value_counts().index[0])
    assert manifest["similar_format"] == SIMILAR_FORMAT
    item_ids = redis_client.get(keys.model_item_ids(result.version)).decode().split("\n")
    rows, scores = unpack_similar(redis_client.hget(keys.model_similar(result.version), item),
                                  len(item_ids))
    neighbours = [item_ids[r] for r in rows]
    assert len(neighbours) == settings.trainer_similar_items and item not in neighbours
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    # the stored list is the top of the cosine ranking of the version's own item factors
    factors = np.frombuffer(redis_client.get(keys.model_item_factors(result.version)),
                            dtype="<f4").reshape(len(item_ids), -1)
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = unit @ unit[item_ids.index(item)]
    assert np.allclose(scores, cosine[rows], atol=1e-5)
    cosine[item_ids.index(item)] = -np.inf
    assert set(rows.tolist()) == set(np.argsort(-cosine)[:len(rows)].tolist())
    top = redis_client.zrevrange(keys.popularity_alltime(result.version), 0, 0)
    assert top == [item.encode()]
    assert sample(trainer.metrics.registry, "recsys_trainer_published_total") == 1
    since = sample(trainer.metrics.registry, "recsys_trainer_seconds_since_last_publish")
    assert 0 <= since < 60


def test_publish_moves_the_pointer_only_after_every_key_and_the_callback(redis_client,
                                                                          settings, tmp_path):
    """The pipeline writes the version's directory in another thread while it stages the
    Redis keys and waits for it in `before_activate`: that runs after every key is written
    and before the pointer moves, and its failure leaves the pointer where it was."""
    from trainer.publish import ModelArtifacts, publish

    keys = Keys(settings.redis_namespace)
    rng = np.random.default_rng(1)
    items = np.array([f"i{n}" for n in range(30)])
    users = np.array([f"u{n}" for n in range(20)])

    def artifacts(version: str) -> ModelArtifacts:
        manifest = {"version": version, "factors": 4, "regularization": 1.0, "alpha": 1.0}
        return ModelArtifacts(version, items, rng.standard_normal((30, 4)).astype(np.float32),
                              users, rng.standard_normal((20, 4)).astype(np.float32), manifest)

    similar = {f"i{n}": orjson.dumps([[f"i{(n + 1) % 30}", 0.5]]) for n in range(30)}
    seen: dict[str, object] = {}

    def check() -> None:
        seen["current"] = read_current_version(redis_client, keys)
        seen["manifest"] = redis_client.exists(keys.model_manifest("va"))
        seen["similar"] = redis_client.hlen(keys.model_similar("va"))
        seen["users"] = redis_client.hlen(keys.user_vectors("va"))

    publish(redis_client, keys, artifacts("va"), similar, {"i0": 2.0}, 3, before_activate=check)
    assert seen == {"current": None, "manifest": 1, "similar": 30, "users": 20}
    assert read_current_version(redis_client, keys) == "va"

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        publish(redis_client, keys, artifacts("vb"), similar, None, 3, before_activate=fail)
    assert read_current_version(redis_client, keys) == "va"


def test_a_future_time_in_the_history_does_not_move_the_snapshot_past_the_clock(
        make_trainer, small_frame, settings):
    """A history written before times were clamped at ingest may hold a time a day ahead; the
    run's reference time (decay, snapshot, trained-until) stays at the clock + tolerance."""
    recent = small_frame.copy()  # moved to end an hour ago (retention counts from the newest)
    recent["timestamp"] += int(time.time() * 1000) - 3_600_000 - int(recent["timestamp"].max())
    ahead = small_frame.iloc[:1].copy()
    ahead["event_id"] = "from-a-skewed-clock"
    ahead["timestamp"] = int(time.time() * 1000) + 23 * 3_600_000
    trainer = make_trainer()
    trainer.store.append(recent)
    trainer.store.append(ahead)
    result = trainer.run_once()
    bound = int(time.time() * 1000) + int(settings.event_time_future_tolerance_s * 1000)
    assert result.manifest["snapshot"]["latest_event_ms"] <= bound
    assert result.manifest["trained_until_ms"] <= bound


def test_one_user_or_one_item_gives_a_popularity_version_not_a_crash(
        make_trainer, redis_client, settings):
    start = 1_735_689_600_000
    one_user = pd.DataFrame({"user_id": "u1", "item_id": [f"i{n % 7}" for n in range(60)],
                             "event_type": "transaction", "value": np.nan,
                             "timestamp": [start + n * 60_000 for n in range(60)],
                             "event_id": [f"e{n}" for n in range(60)]})
    trainer = make_trainer()
    trainer.store.append(one_user)
    result = trainer.run_once()
    assert result.published and result.manifest["model_kind"] == "popularity"
    assert "popularity" in result.manifest["selection"]["reason"]
    assert all(np.isfinite(v) for v in result.manifest["baseline_metrics"].values())


def test_an_empty_history_is_a_clear_error(make_trainer):
    with pytest.raises(NotEnoughData, match="need more to train"):
        make_trainer().run_once()
