"""`recsys train --once` / `recsys model` as processes against the real local stack, and the
--every loop with its metrics endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from recsys.keys import Keys
from recsys.modelstore import load_model, unpack_vector
from recsys.producer import EventProducer
from recsys.sources import iter_events
from trainer.ingest import HistoryConsumer
from trainer.schedule import parse_duration, run_every

from .conftest import FAST

pytestmark = pytest.mark.integration


def _env(settings) -> dict[str, str]:
    return {**os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "REDIS_URL": settings.redis_url,
            "RECSYS_REDIS_NAMESPACE": settings.redis_namespace,
            "RECSYS_INTERACTIONS_TOPIC": settings.interactions_topic,
            "RECSYS_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
            "RECSYS_TRAINER_GROUP_ID": settings.trainer_group_id,
            "RECSYS_DATA_DIR": str(settings.data_dir), "RECSYS_MODEL_DIR": str(settings.model_dir),
            "RECSYS_ALS_FACTORS": "16", "RECSYS_ALS_ITERATIONS": "5",
            # ALS against the floor at the settings' point: no time for a search
            "RECSYS_TRAINER_CANDIDATES": "popularity,als", "RECSYS_TRAINER_TUNE_BUDGET_S": "0.01"}


def _recsys(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shell.cli", *args], env=_env(settings),
                          capture_output=True, text=True, timeout=180)


def test_train_once_consumes_the_topic_and_publishes_a_readable_version(
        settings, small_frame, redis_client):
    with EventProducer(settings) as producer:
        for event in iter_events(small_frame):
            producer.send(event)
    done = _recsys(settings, "train", "--once")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("published v"), done.stdout
    version = done.stdout.split()[1].rstrip(":")
    keys = Keys(settings.redis_namespace)
    model = load_model(redis_client, keys)  # what the stream worker and the API read
    assert model.version == version and model.factors == 16
    user = str(small_frame["user_id"].iloc[-1])
    unpack_vector(redis_client.hget(keys.user_vectors(version), user), 16)
    offsets = model.manifest["snapshot"]["offsets"]
    assert sum(offsets.values()) == len(small_frame)  # trained on everything in the topic

    listing = _recsys(settings, "model", "list")
    assert listing.returncode == 0 and version in listing.stdout and "current" in listing.stdout
    refused = _recsys(settings, "model", "rollback")  # only one version: nothing to go back to
    assert refused.returncode == 1 and "no previous model version" in refused.stderr


def test_parse_duration():
    assert parse_duration("15m") == 900 and parse_duration("30s") == 30
    assert parse_duration("1h") == 3600 and parse_duration("250ms") == 0.25
    assert parse_duration("42") == 42
    for bad in ("", "fast", "0s", "-1m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_every_trains_when_due_skips_without_new_events_and_serves_metrics(
        make_trainer, small_frame):
    trainer = make_trainer(params=FAST)
    trainer.store.append(small_frame)
    port = trainer.metrics.serve(0, "127.0.0.1")
    stop = threading.Event()
    timer = threading.Timer(4.0, stop.set)
    timer.start()
    try:
        # first tick: nothing in service -> train; later ticks: no new events -> skip
        state = run_every(trainer, interval_s=0.5, min_new_events=1, stop=stop)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        timer.cancel()
        trainer.metrics.stop_serving()
    assert (state.runs, state.published, state.failures) == (1, 1, 0)
    text = body.decode()
    for name in ("recsys_trainer_published_total 1.0", "recsys_trainer_fit_seconds_count",
                 'recsys_trainer_eval_metric{metric="ndcg@10",model="candidate"}',
                 'recsys_trainer_eval_metric{metric="ndcg@10",model="popularity"}',
                 "recsys_trainer_seconds_since_last_publish", "recsys_trainer_training_users",
                 'recsys_trainer_served_model{kind="als"} 1.0',
                 'recsys_trainer_served_model{kind="popularity"} 0.0',
                 'recsys_trainer_served_quality{model="served"}',
                 'recsys_trainer_served_quality{model="popularity"}'):
        assert name in text, name


def test_a_restarted_trainer_exports_the_served_kind_and_quality_before_its_first_run(
        make_trainer, small_frame) -> None:
    first = make_trainer(params=FAST)
    first.store.append(small_frame)
    result = first.run_once()
    assert result.published
    restarted = make_trainer(params=FAST)  # a new process's metrics: nothing run yet
    samples = {(m.name, tuple(sorted(s_.labels.items()))): s_.value
               for m in restarted.metrics.registry.collect() for s_ in m.samples}
    kind = result.manifest["model_kind"]
    assert samples[("recsys_trainer_served_model", (("kind", kind),))] == 1.0
    assert samples[("recsys_trainer_served_quality", (("model", "served"),))] == \
        pytest.approx(result.decision.candidate)
    assert samples[("recsys_trainer_served_quality", (("model", "popularity"),))] == \
        pytest.approx(result.decision.popularity)


def test_model_list_shows_kind_and_quality_and_show_the_leaderboard(make_trainer, settings,
                                                                     small_frame):
    trainer = make_trainer(trainer_candidates=("als", "knn_cosine"),
                           trainer_tune_budget_s=3.0)
    trainer.store.append(small_frame)
    result = trainer.run_once()
    listed = _recsys(settings, "model", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    line = next(row for row in listed.stdout.splitlines() if row.startswith(result.version))
    assert result.manifest["model_kind"] in line and result.manifest["candidate"] in line
    assert f"{result.decision.candidate:.4f}" in line
    assert f"{result.decision.popularity:.4f}" in line
    shown = _recsys(settings, "model", "show", result.version)
    assert shown.returncode == 0, shown.stderr[-2000:]
    rows = {row.lstrip("*").split()[0]: row for row in shown.stdout.splitlines()[4:]}
    assert set(rows) == {"popularity", "als", "knn_cosine"}
    winner = result.manifest["selection"]["winner"]
    assert rows[winner].startswith("*")
    board = {e["name"]: e for e in result.manifest["selection"]["leaderboard"]}
    for name, row in rows.items():  # validation and holdout values as in the manifest
        assert f"{board[name]['validation']['ndcg@10']:.4f}" in row
        assert f"{board[name]['holdout']['ndcg@10']:.4f}" in row


def test_every_with_the_consumer_retrains_when_new_events_arrive(make_trainer, settings,
                                                                  small_frame):
    """The scheduled loop reads the topic between runs and trains again once
    `min_new_events` new events are in the history."""
    first, later = small_frame.iloc[:12_000], small_frame.iloc[12_000:12_400]
    with EventProducer(settings) as producer:
        for event in iter_events(first):
            producer.send(event)
    trainer = make_trainer(params=FAST, trainer_gate_tolerance=0.99)
    stop = threading.Event()
    guard = threading.Timer(90.0, stop.set)
    guard.start()
    result: dict[str, object] = {}

    def loop() -> None:
        with HistoryConsumer(settings, trainer.store, trainer.metrics) as consumer:
            result["state"] = run_every(trainer, interval_s=0.5, min_new_events=300,
                                        stop=stop, consumer=consumer, max_runs=2)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while (trainer.metrics.registry.get_sample_value("recsys_trainer_runs_total") or 0) < 1:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.2)
        time.sleep(1.5)  # a few ticks without enough new events: no second run
        assert trainer.metrics.registry.get_sample_value("recsys_trainer_runs_total") == 1
        with EventProducer(settings) as producer:
            for event in iter_events(later):
                producer.send(event)
        thread.join(60)
    finally:
        guard.cancel()
        stop.set()
    state = result["state"]
    assert (state.runs, state.failures) == (2, 0)
    assert trainer.store.n_events == 12_400


def test_train_from_a_day_first_csv_with_a_mapping(settings, small_frame, tmp_path):
    """`recsys train --from-file csv:PATH` takes the same mapping options as every other
    command that reads a source (recsys.sources.options)."""
    import pandas as pd

    path = tmp_path / "shop.csv"
    dates = pd.to_datetime(small_frame["timestamp"], unit="ms", utc=True)
    pd.DataFrame({"member": small_frame["user_id"], "product": small_frame["item_id"],
                  "action": small_frame["event_type"],
                  "day": dates.dt.strftime("%d-%m-%Y")}).to_csv(path, index=False)
    mapping = ["--map", "user_id=member,item_id=product,event_type=action,timestamp=day",
               "--timestamp-format", "%d-%m-%Y"]
    done = _recsys(settings, "train", "--once", "--no-consume", "--from-file", f"csv:{path}",
                   *mapping)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(("published v", "rejected v")), done.stdout
    assert f"seeded the history from csv:{path}: {len(small_frame)} events" in done.stderr

    month_first = tmp_path / "bad.csv"
    month_first.write_text("member,product,action,day\nu1,i1,view,12-31-2024\n")
    refused = _recsys(settings, "train", "--once", "--no-consume", "--from-file",
                      f"csv:{month_first}", *mapping)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "does not match the format '%d-%m-%Y'" in refused.stderr
    assert "first at data row 1 (line 2): '12-31-2024'" in refused.stderr
