"""The trainer under failure: a publish killed between staging and activation leaves no orphan
after the next run, two trainers started together (real processes) never both write, dedupe
is per (user, event id), a corrupt history file is quarantined, Redis has a socket timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.errors import ModelIntegrityError, ModelNotFound
from recsys.keys import Keys
from recsys.modelstore import Fenced, activate_version, load_model, read_current_version
from recsys.sources import make_frame
from trainer.history import HistoryStore
from trainer.lease import LeaseHeld, LeaseLost, TrainerLease
from trainer.pipeline import Trainer, history_store, trainer_redis
from trainer.publish import disk_versions, redis_versions
from trainer.schedule import run_every
from trainer.telemetry import TrainerMetrics

from .conftest import FAST

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000


def sample(registry, name: str, **labels) -> float | None:
    return registry.get_sample_value(name, labels or None)


class Boom(RuntimeError):
    pass


def test_a_publish_killed_before_activation_leaves_no_orphan_after_the_next_run(
        make_trainer, small_frame, redis_client, redis_url, settings, monkeypatch):
    import redis as redis_lib

    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=FAST, trainer_gate_tolerance=0.99, trainer_orphan_grace_s=0)
    trainer.store.append(small_frame)
    first = trainer.run_once().version
    problems: list[str] = []
    versions_seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:  # what a stream worker or the API resolves meanwhile
        client = redis_lib.Redis.from_url(redis_url)
        while not stop.is_set():
            version = read_current_version(client, keys)
            try:
                model = load_model(client, keys, version)
            except (ModelNotFound, ModelIntegrityError) as exc:
                problems.append(f"{version}: {exc}")
                continue
            versions_seen.add(model.version)
            if model.manifest["version"] != version:
                problems.append(f"manifest of {model.manifest['version']} under {version}")
            time.sleep(0.002)
        client.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        # The directory write fails after every key of the version was staged in Redis:
        # the same state as a trainer killed between staging and activation.
        def failing_save(*_args, **_kwargs):
            raise Boom("disk full")

        monkeypatch.setattr("trainer.pipeline.save_to_disk", failing_save)
        with pytest.raises(Boom):
            trainer.run_once()
        orphans = redis_versions(redis_client, keys) - {first}
        assert len(orphans) == 1, "the failed publish staged its keys"
        (orphan,) = orphans
        assert redis_client.hlen(keys.user_vectors(orphan)) > 0
        assert orphan not in disk_versions(settings.model_dir)
        assert read_current_version(redis_client, keys) == first

        monkeypatch.undo()
        second = trainer.run_once().version
    finally:
        stop.set()
        thread.join(10)
    assert not problems, problems[:5]
    assert orphan not in versions_seen, "a reader saw the never-activated version"
    assert not redis_client.exists(*keys.model_keys(orphan))
    assert redis_versions(redis_client, keys) == {first, second}
    assert sample(trainer.metrics.registry, "recsys_trainer_orphans_deleted_total") == 1


def test_orphans_younger_than_the_grace_period_are_kept(make_trainer, small_frame,
                                                        redis_client, settings, monkeypatch):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=FAST, trainer_gate_tolerance=0.99,
                           trainer_orphan_grace_s=3600)
    trainer.store.append(small_frame)
    monkeypatch.setattr("trainer.pipeline.save_to_disk",
                        lambda *a, **k: (_ for _ in ()).throw(Boom("killed")))
    with pytest.raises(Boom):
        trainer.run_once()
    monkeypatch.undo()
    (staging,) = redis_versions(redis_client, keys)
    done = trainer.run_once().version
    # another process could still be staging it: within the grace it stays
    assert redis_versions(redis_client, keys) == {staging, done}


def _trainer_env(settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(REPO),
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "RECSYS_REDIS_NAMESPACE": settings.redis_namespace,
        "RECSYS_DATA_DIR": str(settings.data_dir), "RECSYS_MODEL_DIR": str(settings.model_dir),
        "RECSYS_ALS_FACTORS": "16", "RECSYS_ALS_ITERATIONS": "5",
        "RECSYS_TRAINER_FIT_THREADS": "1", "RECSYS_TRAINER_METRICS_PORT": "0",
        "RECSYS_TRAINER_GATE_TOLERANCE": "0.99",
    })
    env.update(extra)
    return env


def _start_trainer(env: dict[str, str], *mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "train", *(mode or ("--once",)), "--no-consume"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_trainers_started_together_one_trains_the_other_exits_with_code_3(
        settings, small_frame, redis_client):
    """Both scheduled (`--every`): each would hold the lease until stopped, so whatever the
    start-up order, exactly one can run."""
    keys = Keys(settings.redis_namespace)
    HistoryStore(settings.data_dir / "history").append(small_frame)
    files_before = sorted(p.name for p in (settings.data_dir / "history").iterdir())
    env = _trainer_env(settings)
    procs = [_start_trainer(env, "--every", "1h"), _start_trainer(env, "--every", "1h")]
    try:
        deadline = time.monotonic() + 180
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        (loser,) = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p is not loser]
        loser_err = loser.communicate()[1]
        assert loser.returncode == 3, loser_err[-2000:]
        assert "another trainer holds the lease" in loser_err
        while not disk_versions(settings.model_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert winner.poll() is None, "the scheduled trainer keeps running"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
    winner_err = winner.communicate(timeout=60)[1]
    assert winner.returncode == 0, winner_err[-2000:]
    published = disk_versions(settings.model_dir)
    assert len(published) == 1
    assert read_current_version(redis_client, keys) == published[0]
    assert redis_versions(redis_client, keys) == set(published)
    assert not redis_client.exists(keys.trainer_lease), "the winner released its lease"
    assert sorted(p.name for p in (settings.data_dir / "history").iterdir()) == files_before


def test_a_second_trainer_that_waits_runs_after_the_first(settings, small_frame, redis_client):
    keys = Keys(settings.redis_namespace)
    HistoryStore(settings.data_dir / "history").append(small_frame)
    env = _trainer_env(settings, RECSYS_TRAINER_LEASE_WAIT_S="180")
    procs = [_start_trainer(env), _start_trainer(env)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, *_ in results] == [0, 0], [err[-2000:] for *_, err in results]
    published = disk_versions(settings.model_dir)
    assert len(published) == 2
    assert read_current_version(redis_client, keys) == published[-1]


def test_a_trainer_that_lost_its_lease_cannot_activate(settings, redis_client):
    keys = Keys(settings.redis_namespace)
    first = TrainerLease(redis_client, keys, ttl_s=30).acquire()
    with pytest.raises(LeaseHeld):
        TrainerLease(redis_client, keys, ttl_s=30, wait_s=0.2, poll_s=0.05).acquire()
    redis_client.set(keys.model_manifest("vA"), b"{}")
    activate_version(redis_client, keys, "vA", fence=first.fence)
    # its lease expires (a long pause) and another trainer takes over
    redis_client.delete(keys.trainer_lease)
    second = TrainerLease(redis_client, keys, ttl_s=30).acquire()
    redis_client.set(keys.model_manifest("vB"), b"{}")
    with pytest.raises(Fenced):
        activate_version(redis_client, keys, "vB", fence=first.fence)
    assert read_current_version(redis_client, keys) == "vA"
    activate_version(redis_client, keys, "vB", fence=second.fence)
    assert read_current_version(redis_client, keys) == "vB"
    first.release()  # not its lease any more: must not delete the second's
    assert redis_client.get(keys.trainer_lease).decode() == second.token
    second.release()
    assert not redis_client.exists(keys.trainer_lease)


def test_lease_is_renewed_while_the_trainer_runs(settings, redis_client):
    keys = Keys(settings.redis_namespace)
    with TrainerLease(redis_client, keys, ttl_s=1.0) as lease:
        time.sleep(2.5)  # over twice its lifetime
        assert redis_client.get(keys.trainer_lease).decode() == lease.token
        assert not lease.lost.is_set()


def test_two_history_writers_never_overwrite_each_others_files(tmp_path):
    a, b = HistoryStore(tmp_path), HistoryStore(tmp_path)
    rows = make_frame(user_id=["u1", "u2"], item_id=["i1", "i2"], event_type="view",
                      timestamp=[T0, T0 + 1], event_id=["a1", "a2"])
    other = make_frame(user_id=["u3"], item_id=["i3"], event_type="view",
                       timestamp=[T0 + 2], event_id=["b1"])
    assert a.append(rows) == 2
    assert b.append(other) == 1  # b's counter also says "file 1"
    assert sorted(HistoryStore(tmp_path).load()["event_id"]) == ["a1", "a2", "b1"]


def test_dedupe_is_per_user_and_event_id(tmp_path):
    """Two producers numbering their events 1, 2, ...: same ids, different users."""
    store = HistoryStore(tmp_path)
    ids = [str(i) for i in range(1, 6)]
    shop_a = make_frame(user_id=["alice"] * 5, item_id=[f"i{i}" for i in range(5)],
                        event_type="view", timestamp=[T0 + i for i in range(5)], event_id=ids)
    shop_b = make_frame(user_id=["bob"] * 5, item_id=[f"j{i}" for i in range(5)],
                        event_type="view", timestamp=[T0 + i for i in range(5)], event_id=ids)
    assert store.append(shop_a) == 5
    assert store.append(shop_b) == 5
    assert store.append(shop_a.iloc[:2]) == 0  # a true replay is still dropped
    both = pd.concat([shop_a, shop_b], ignore_index=True)
    assert HistoryStore(tmp_path).append(both) == 0  # and after a restart
    store.append(make_frame(user_id=["carol"], item_id=["k"], event_type="view",
                            timestamp=[T0], event_id=["1"]))
    store.compact()
    loaded = HistoryStore(tmp_path).load()
    assert len(loaded) == 11
    assert sorted(loaded.loc[loaded["event_id"] == "1", "user_id"].astype(str)) == \
        ["alice", "bob", "carol"]


def test_a_corrupt_history_file_is_quarantined_and_training_goes_on(make_trainer, small_frame,
                                                                     settings, redis_client):
    trainer = make_trainer(params=FAST)
    half = len(small_frame) // 2
    trainer.store.append(small_frame.iloc[:half])
    trainer.store.append(small_frame.iloc[half:])
    victim = trainer.store.files()[0]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 3] + b"garbage")
    metrics = TrainerMetrics()
    # a restarted trainer: used to crash-loop here
    reopened = Trainer(settings, redis=redis_client, metrics=metrics,
                       store=history_store(settings, metrics), params=FAST)
    result = reopened.run_once()
    assert result.published
    quarantined = list((settings.data_dir / "history" / "quarantine").iterdir())
    assert [p.name.split(".parquet")[0] for p in quarantined] == [victim.name[:-8]]
    assert not victim.exists()
    assert result.manifest["n_events"] == len(small_frame) - half
    assert sample(reopened.metrics.registry, "recsys_trainer_history_quarantined_total") == 1


def test_trainer_redis_client_has_a_socket_timeout(settings):
    client = trainer_redis(settings.model_copy(update={"trainer_redis_timeout_s": 1.5}))
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 1.5 and kwargs["socket_connect_timeout"] == 1.5
    assert np.isfinite(kwargs["socket_timeout"])


def test_a_scheduled_trainer_that_lost_its_lease_stops(make_trainer, settings, redis_client):
    trainer = make_trainer(params=FAST)
    keys = Keys(settings.redis_namespace)
    trainer.lease = TrainerLease(redis_client, keys, ttl_s=1.0).acquire()
    redis_client.set(keys.trainer_lease, "someone-else")  # expired and taken over
    stop = threading.Event()
    try:
        with pytest.raises(LeaseLost):
            run_every(trainer, 0.2, 1, stop, max_runs=100)  # renewals notice within ~0.4 s
    finally:
        trainer.lease.release()
    assert redis_client.get(keys.trainer_lease) == b"someone-else"
