"""Real-browser fixtures: Debian's Chromium driven by Playwright, against the real local stack
(broker, Redis, a `python -m stream` worker and the API as a uvicorn process on a free port)
serving a small clustered ALS model and a catalogue whose categories are its clusters.

Playwright's own browser downloads are never used: `executable_path` points at the system
Chromium (installed by infra/scripts/install-system-deps.sh). Every request the pages make
to another host is refused and recorded, so the tests also prove the pages work offline.
Screenshots go to reports/screenshots/ (gitignored test artefacts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis as redis_lib

from recsys.kafka import ensure_topics
from recsys.keys import Keys
from recsys.modelstore import activate_version, stage_model_version
from recsys.settings import Settings, load_settings
from shell.localstack import free_port
from tests.stream.conftest import (
    Clustered,
    WorkerProcess,
    fit_clustered,
    manifest,
    settings_env,
)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "reports" / "screenshots"
CHROMIUM = os.environ.get("RECSYS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
API_KEY = "browser-test-admin-key"
CATEGORIES = ["garden", "kitchen", "books", "toys", "sports", "music"]
SIMILAR_N = 8


@dataclass
class Shop:
    base_url: str
    settings: Settings
    model: Clustered
    category_of: dict[str, str]
    api_log: Path
    foreign_requests: list[str] = field(default_factory=list)


def _similar(model: Clustered) -> dict[str, list[tuple[str, float]]]:
    norms = np.linalg.norm(model.factors, axis=1)
    cosine = (model.factors @ model.factors.T) / np.outer(norms, norms)
    out = {}
    for row, item in enumerate(model.item_ids):
        order = [j for j in np.argsort(-cosine[row]) if j != row][:SIMILAR_N]
        out[item] = [(model.item_ids[j], float(cosine[row, j])) for j in order]
    return out


class ApiProcess:
    """The API as users run it: uvicorn in its own process, configured by environment."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, **settings_env(settings),
               "RECSYS_API_KEY": API_KEY}
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "serving.main:app_from_env",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"API exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"API not ready in {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def clustered() -> Clustered:
    """Users who each stay inside one cluster of items; ALS fitted on them (tests.stream)."""
    return fit_clustered(seed=1)


@pytest.fixture(scope="module")
def shop(kafka_bootstrap_servers: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory,
         clustered: Clustered) -> Iterator[Shop]:
    name = f"t{uuid.uuid4().hex[:10]}"
    logdir = tmp_path_factory.mktemp("web")
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap_servers, redis_url=redis_url,
        redis_namespace=name, interactions_topic=f"{name}.interactions",
        dead_letter_topic=f"{name}.dlq", stream_app_id=f"{name}-stream", topic_partitions=2,
        data_dir=logdir / "data", model_dir=logdir / "models")
    ensure_topics(settings)
    client = redis_lib.Redis.from_url(redis_url)
    keys = Keys(name)
    category_of = {item: CATEGORIES[c] for item, c in clustered.cluster.items()}
    # Popularity: a long tail over every cluster, so an anonymous visitor's fallback list is
    # a mix of categories.
    rng = np.random.default_rng(3)
    popularity = {item: float(rng.pareto(1.5) + 1) for item in clustered.item_ids}
    meta = {**manifest("v1", clustered), "created_at": "2026-01-01T00:00:00Z",
            "n_users": 600, "metrics": {"ndcg@10": 0.42, "recall@10": 0.31},
            "baseline_metrics": {"ndcg@10": 0.12}, "beats_popularity": True}
    stage_model_version(client, keys, "v1", clustered.item_ids, clustered.factors, meta,
                        similar=_similar(clustered), popularity=popularity)
    activate_version(client, keys, "v1")
    worker = WorkerProcess(settings, logdir, "stream")
    api = ApiProcess(settings, logdir / "api.log")
    try:
        worker.wait_assigned()
        api.wait_ready()
        catalog = [{"item_id": item, "name": f"{category_of[item].title()} item "
                    f"{item.split('-i')[1]}", "category": category_of[item],
                    "price": round(float(rng.uniform(3, 120)), 2)}
                   for item in clustered.item_ids]
        r = httpx.put(f"{api.url}/v1/items", json=catalog, headers={"X-API-Key": API_KEY},
                      timeout=30)
        assert r.status_code == 200, r.text
        yield Shop(api.url, settings, clustered, category_of, logdir / "api.log")
    finally:
        api.stop()
        worker.stop()
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: run `make system-deps` (installs Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, shop: Shop) -> Iterator[Any]:
    """A fresh visitor (own cookies and sessionStorage); requests to other hosts are refused
    and recorded in shop.foreign_requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def guard(route: Any) -> None:
        if route.request.url.startswith((shop.base_url, "data:")):
            route.continue_()
        else:
            shop.foreign_requests.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_load_state("networkidle")  # images too
    page.screenshot(path=str(path), full_page=False)
    return path
