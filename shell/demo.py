"""`recsys demo`: the whole system on its embedded local defaults, in one command.

What happens, in order:
1. the local stack starts (Tansu broker, redis-server) on free ports;
2. the synthetic generator makes a catalog and a few weeks of shop traffic; the older 80% is
   produced to Kafka as history;
3. `recsys train --once` consumes that history and publishes the first model;
4. the stream worker, the API and a periodic trainer start as separate processes, exactly as
   they run in production; the API serves the storefront (http://localhost:8000/), the admin
   console (/admin, with the run's API key printed: a random one unless RECSYS_API_KEY is
   set) and the API docs (/docs);
5. the rest of the traffic is replayed in real time (re-stamped to "now"), while a spotlight
   visitor browses one category after another through the API's ingest endpoint;
6. an A/B experiment runs (model vs popularity, 50/50, unless --no-experiment): simulated
   visitors ask for recommendations and click according to their hidden tastes (the
   synthetic generator knows them), naming the list they clicked in; the attribution
   consumer counts impressions and clicks per variant;
7. a live terminal view shows events/s, freshness, the model version, CTR per variant and the
   spotlight visitor's recommendations changing as their events arrive; the closing summary
   prints the experiment's table and writes reports/demo_summary.json.

Ctrl-C (or `--duration`) stops everything cleanly. With `--duration` the demo exits 0 only
if the system behaved: events flowed, the spotlight visitor got personalised recommendations
and they changed with the visitor's behaviour.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from recsys.settings import Settings, load_settings
from shell.harness import RoleProcess, Samples, delta, histogram_quantile, scrape, total
from shell.localstack import LocalStack, free_port

log = logging.getLogger(__name__)

SPOTLIGHT_USER = "demo-visitor"
EXPERIMENT = "demo"
SUMMARY_PATH = Path("reports/demo_summary.json")
# Simulated clicks: the chance to click the item at position p (0-based) of a list is
# EXAMINE ** p * (CLICK_BASE + CLICK_TASTE * affinity), affinity being the share of the
# visitor's hidden taste the item falls in (recsys.sources.synthetic.Tastes); one click per
# list at most, and a click turns into an add-to-cart with CART_AFTER_CLICK.
EXAMINE = 0.85
CLICK_BASE = 0.01
CLICK_TASTE = 0.35
CART_AFTER_CLICK = 0.2
VISITOR_K = 10


@dataclass
class DemoOptions:
    duration: float | None = None  # None: until Ctrl-C
    rate: float = 200.0  # replayed events per second
    history_events: int = 60_000
    seed: int = 42
    api_port: int = 8000
    retrain_every: str = "45s"
    spotlight_every: float = 1.5  # seconds between the spotlight visitor's events
    spotlight_switch: float = 15.0  # seconds before the visitor moves to another category
    experiment: bool = True  # model vs popularity, with simulated visitors
    visitors: float = 10.0  # simulated visitors (recommendation lists) per second


@dataclass
class DemoState:
    produced: int = 0
    rate_window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=50))
    model_version: str | None = None
    versions_seen: list[str] = field(default_factory=list)
    spotlight_category: str | None = None
    spotlight_recs: list[dict[str, Any]] = field(default_factory=list)
    spotlight_source: str | None = None
    spotlight_history: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    stream_metrics: Samples = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    experiment: dict[str, Any] | None = None  # the latest report (recsys.experiments.report)
    visits: int = 0

    def events_per_s(self) -> float:
        if len(self.rate_window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.rate_window[0], self.rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _wait_http(url: str, timeout: float, proc: RoleProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not become ready within {timeout:.0f}s:\n{proc.tail()}")


class Demo:
    def __init__(self, options: DemoOptions, base: Settings) -> None:
        self.options = options
        self.base = base
        self.state = DemoState()
        self.stop = threading.Event()
        self.roles: list[RoleProcess] = []
        # The admin console needs a key: the configured one, else a random one for this run.
        self.api_key = (base.api_key.get_secret_value() if base.api_key
                        else secrets.token_urlsafe(12))

    # --- set-up ----------------------------------------------------------------------------
    def _role_env(self, stack: LocalStack, workdir: Path) -> dict[str, str]:
        self.stream_port = free_port()
        self.trainer_port = free_port()
        return {
            **os.environ,
            **stack.env(),
            "RECSYS_DATA_DIR": str(workdir / "data"),
            "RECSYS_MODEL_DIR": str(workdir / "models"),
            "RECSYS_API_PORT": str(self.options.api_port),
            "RECSYS_STREAM_WEB_PORT": str(self.stream_port),
            "RECSYS_ATTRIBUTION_WEB_PORT": str(free_port()),
            "RECSYS_TRAINER_METRICS_PORT": str(self.trainer_port),
            "RECSYS_LOG_LEVEL": "INFO",
            "RECSYS_API_KEY": self.api_key,
        }

    def _generate(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        from recsys.sources import synthetic

        n_events = self.options.history_events * 5 // 4
        frame = synthetic.generate(n_events, seed=self.options.seed)
        # Same seed and size: the catalog describes exactly the shop the events came from.
        catalog = synthetic.catalog(self.options.seed, n_events=n_events)
        cut = frame["timestamp"].quantile(0.8)
        return frame[frame["timestamp"] <= cut], frame[frame["timestamp"] > cut], catalog

    def _produce_history(self, settings: Settings, history: pd.DataFrame) -> None:
        from recsys.producer import EventProducer
        from recsys.sources import iter_events

        with EventProducer(settings) as producer:
            for event in iter_events(history):
                producer.send(event)
        log.info("produced %d history events", len(history))

    def _load_catalog(self, api: str, catalog: pd.DataFrame) -> None:
        """Send the catalog through the API's bulk write, as a shop's catalog sync would:
        batches of up to MAX_CATALOG_BATCH items, each one Redis transaction and one catalog
        reload on the other replicas (one PUT per item was far slower). A 503 (Redis busy)
        is retried."""
        from serving.schemas import MAX_CATALOG_BATCH

        bodies = [{"item_id": str(row.item_id), "name": row.name,
                   "category": str(row.category_id), "price": float(row.price),
                   "available": True} for row in catalog.itertuples(index=False)]
        started = time.perf_counter()
        with httpx.Client(base_url=api, timeout=30.0, headers=self._write_headers()) as client:
            for start in range(0, len(bodies), MAX_CATALOG_BATCH):
                batch = bodies[start:start + MAX_CATALOG_BATCH]
                for attempt in range(5):
                    resp = client.put("/v1/items", json=batch)
                    if resp.status_code != 503:
                        break
                    time.sleep(0.2 * (attempt + 1))
                resp.raise_for_status()
        log.info("catalog: %d items PUT in %.2fs", len(catalog), time.perf_counter() - started)
        self.category_of = dict(zip(catalog["item_id"].astype(str),
                                    catalog["category_id"].astype(str), strict=True))
        self.items_by_category = catalog.groupby(catalog["category_id"].astype(str))["item_id"] \
            .apply(lambda s: s.astype(str).tolist()).to_dict()

    def _write_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    # --- running ---------------------------------------------------------------------------
    def _replay(self, settings: Settings, future: pd.DataFrame) -> None:
        """Re-stamp the future traffic to now and send it at the configured rate."""
        from recsys.events import Event
        from recsys.producer import EventProducer

        rows = future.itertuples(index=False)
        interval = 1.0 / self.options.rate
        next_at = time.monotonic()
        with EventProducer(settings) as producer:
            while not self.stop.is_set():
                row = next(rows, None)
                if row is None:
                    rows = future.itertuples(index=False)  # loop the traffic
                    continue
                producer.send(Event.create(
                    row.user_id, row.item_id, row.event_type,
                    value=None if row.value != row.value else float(row.value)))
                self.state.produced += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                self.state.rate_window.append((time.monotonic(), self.state.produced))

    def _spotlight(self, api: str) -> None:
        """A visitor who browses one category, then another: their recommendations follow."""
        rng = np.random.default_rng(self.options.seed + 1)
        # Items the model knows (seen in the history), so the visitor's events can be folded in.
        by_category = {c: [i for i in items if i in self.known_items]
                       for c, items in self.items_by_category.items()}
        by_category = {c: items for c, items in by_category.items() if len(items) >= 10}
        categories = sorted(by_category, key=lambda c: -len(by_category[c]))[:12]
        rng.shuffle(categories)
        started = time.monotonic()
        with httpx.Client(base_url=api, timeout=2.0, headers=self._write_headers()) as client:
            while not self.stop.is_set():
                phase = int((time.monotonic() - started) // self.options.spotlight_switch)
                category = categories[phase % len(categories)]
                self.state.spotlight_category = category
                item = str(rng.choice(by_category[category][:20]))
                event_type = str(rng.choice(["view", "view", "view", "addtocart"]))
                try:
                    resp = client.post("/v1/events", json={
                        "event_id": uuid.uuid4().hex, "user_id": SPOTLIGHT_USER,
                        "item_id": item, "event_type": event_type,
                        "timestamp": int(time.time() * 1000)})
                    if resp.status_code != 202:
                        self.state.errors.append(f"POST /v1/events: {resp.status_code} "
                                                 f"{resp.text[:200]}")
                    time.sleep(0.3)  # let the stream fold it in before looking
                    resp = client.get(f"/v1/users/{SPOTLIGHT_USER}/recommendations",
                                      params={"k": 5}).json()
                    self.state.spotlight_recs = resp.get("items", [])
                    self.state.spotlight_source = resp.get("source")
                    self.state.model_version = resp.get("model_version")
                    ids = tuple(str(r.get("item_id")) for r in self.state.spotlight_recs)
                    history = self.state.spotlight_history
                    if not history or history[-1][1] != ids:
                        history.append((str(resp.get("source")), ids))
                    if self.state.model_version and (
                            not self.state.versions_seen
                            or self.state.versions_seen[-1] != self.state.model_version):
                        self.state.versions_seen.append(self.state.model_version)
                except httpx.HTTPError as exc:
                    self.state.errors.append(f"api: {exc}")
                self.stop.wait(self.options.spotlight_every)

    def _start_experiment(self, api: str) -> None:
        resp = httpx.put(f"{api}/v1/admin/experiments/{EXPERIMENT}", headers=self._write_headers(),
                         timeout=10.0, json={"variants": [
                             {"name": "model", "kind": "model", "share": 0.5},
                             {"name": "popularity", "kind": "popularity", "share": 0.5}]})
        resp.raise_for_status()

    def _visitors(self, api: str, settings: Settings, history: pd.DataFrame) -> None:
        """Returning visitors ask for their recommendations and click what matches their
        hidden tastes, naming the list (context.recommendation_id)."""
        from recsys.keys import Keys
        from recsys.redis_client import redis_client
        from recsys.sources import synthetic
        from shell.experiment_cli import experiment_report

        hidden = synthetic.tastes(self.options.history_events * 5 // 4, seed=self.options.seed)
        counts = history["user_id"].astype(str).value_counts()
        pool = counts[counts >= 3].index.to_numpy()  # users the model has something on
        rng = np.random.default_rng(self.options.seed + 2)
        client = redis_client(settings, socket_timeout=5.0)
        keys = Keys.for_settings(settings)
        interval, next_at, next_report = 1.0 / self.options.visitors, time.monotonic(), 0.0
        with httpx.Client(base_url=api, timeout=5.0, headers=self._write_headers()) as http:
            while not self.stop.is_set():
                user = str(rng.choice(pool))
                try:
                    body = http.get(f"/v1/users/{user}/recommendations",
                                    params={"k": VISITOR_K}).json()
                    events = self._clicks(rng, hidden, user, body)
                    if events:
                        resp = http.post("/v1/events", json=events)
                        if resp.status_code != 202:
                            self.state.errors.append(f"POST /v1/events: {resp.status_code}")
                    self.state.visits += 1
                except httpx.HTTPError as exc:
                    self.state.errors.append(f"visitor: {exc}")
                if time.monotonic() > next_report:
                    with contextlib.suppress(Exception):
                        self.state.experiment = experiment_report(client, keys, EXPERIMENT)
                    next_report = time.monotonic() + 1.0
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
        client.close()

    @staticmethod
    def _clicks(rng: np.random.Generator, hidden: Any, user: str, body: dict[str, Any]
                ) -> list[dict[str, Any]]:
        rid = body.get("recommendation_id")
        for position, entry in enumerate(body.get("items", [])):
            item = str(entry.get("item_id"))
            p = EXAMINE ** position * (CLICK_BASE + CLICK_TASTE * hidden.affinity(user, item))
            if rng.random() < p:
                now = int(time.time() * 1000)
                context = {"recommendation_id": rid}
                out = [{"event_id": uuid.uuid4().hex, "user_id": user, "item_id": item,
                        "event_type": "click", "timestamp": now, "context": context}]
                if rng.random() < CART_AFTER_CLICK:
                    out.append({**out[0], "event_id": uuid.uuid4().hex,
                                "event_type": "addtocart", "timestamp": now + 1})
                return out
        return []

    def _watch_stream(self) -> None:
        url = f"http://127.0.0.1:{self.stream_port}/metrics"
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.state.stream_metrics = scrape(url, timeout=1.0)
            self.stop.wait(1.0)

    def _consumed(self, metrics: Samples) -> float:
        return total(metrics, "recsys_stream_events_total")

    def _wait_for_stream(self, console: Any, history_events: int, timeout: float = 300) -> None:
        """Start the live phase only once the worker has caught up with the history, so the
        spotlight visitor's events are not queued behind it."""
        url = f"http://127.0.0.1:{self.stream_port}/metrics"
        deadline = time.monotonic() + timeout
        last_log = 0.0
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                self.state.stream_metrics = scrape(url, timeout=1.0)
            consumed = self._consumed(self.state.stream_metrics)
            if consumed >= history_events:
                console.log(f"stream worker caught up: {consumed:,.0f} events consumed")
                return
            if not self.roles[0].alive():
                raise RuntimeError(f"stream worker exited:\n{self.roles[0].tail()}")
            if time.monotonic() - last_log > 5:
                console.log(f"stream worker catching up on the history: "
                            f"{consumed:,.0f}/{history_events:,}")
                last_log = time.monotonic()
            time.sleep(0.5)
        raise RuntimeError(f"the stream worker did not catch up within {timeout:.0f}s")

    def _live(self, metrics: Samples) -> Samples:
        """Counters since the live phase began (history replay excluded)."""
        return delta(metrics, getattr(self, "live_baseline", {}))

    def _render(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        st = self.state
        metrics = self._live(st.stream_metrics)
        processed = total(metrics, "recsys_stream_events_total", outcome="ok")
        p50 = histogram_quantile(metrics, "recsys_stream_freshness_seconds", 0.5)
        p99 = histogram_quantile(metrics, "recsys_stream_freshness_seconds", 0.99)
        head = Table.grid(padding=(0, 3))
        head.add_row(f"[b]produced[/b] {st.produced:,}",
                     f"[b]events/s[/b] {st.events_per_s():,.0f}",
                     f"[b]stream processed[/b] {processed:,.0f}",
                     f"[b]freshness p50/p99[/b] "
                     f"{'-' if p50 is None else f'{p50 * 1000:.0f}'}/"
                     f"{'-' if p99 is None else f'{p99 * 1000:.0f}'} ms",
                     f"[b]model[/b] {st.model_version or '-'}")
        recs = Table(title=f"{SPOTLIGHT_USER} browses category {st.spotlight_category} -> "
                     f"recommendations (source: {st.spotlight_source})", expand=True)
        for col in ("#", "item", "name", "category", "score"):
            recs.add_column(col)
        for rank, rec in enumerate(st.spotlight_recs, 1):
            item = str(rec.get("item_id"))
            recs.add_row(str(rank), item, str(rec.get("name") or ""),
                         str(rec.get("category") or self.category_of.get(item, "")),
                         f"{rec.get('score', 0):.3f}" if rec.get("score") is not None else "")
        parts: list[Any] = [head]
        if st.experiment is not None:
            line = Table.grid(padding=(0, 3))
            line.add_row(f"[b]experiment {st.experiment['name']}[/b]", *[
                f"{v['name']}: {v['clicks']:,}/{v['impressions']:,} = CTR {v['ctr']:.1%}"
                for v in st.experiment["variants"]],
                "" if st.experiment["p_value"] is None
                else f"p = {st.experiment['p_value']:.2g}")
            parts.append(line)
        return Panel(Group(*parts, recs), title="recsys demo — storefront at "
                     f"http://localhost:{self.options.api_port}/ — Ctrl-C to stop")

    # --- the whole run ---------------------------------------------------------------------
    def run(self) -> int:
        from rich.console import Console
        from rich.live import Live

        console = Console()
        workdir = Path(tempfile.mkdtemp(prefix="recsys-demo-"))
        logdir = workdir / "logs"
        logdir.mkdir()
        threads: list[threading.Thread] = []
        shop = f"http://localhost:{self.options.api_port}"
        console.log(f"storefront: {shop}/ (ready in a minute or two; admin at {shop}/admin, "
                    f"API docs at {shop}/docs)")
        with LocalStack() as stack:
            env = self._role_env(stack, workdir)
            settings = load_settings(kafka_bootstrap_servers=stack.bootstrap_servers,
                                     redis_url=stack.redis_url)
            from recsys.kafka import ensure_topics

            ensure_topics(settings)
            console.log(f"local stack up: {stack.env()}; logs in {logdir}")
            history, future, catalog = self._generate()
            self.known_items = set(history["item_id"].astype(str))
            console.log(f"synthetic shop: {len(catalog):,} items, {len(history):,} history "
                        f"events, {len(future):,} to replay")
            self._produce_history(settings, history)
            # The stream worker starts at once: it builds users' histories while the first
            # model trains (counting "no model"), then folds them in when the model arrives.
            self.roles = [RoleProcess("stream", ["stream"], env, logdir,
                                      port=self.stream_port, new_session=True)]
            if self.options.experiment:
                self.roles.append(RoleProcess("attribution", ["attribution"], env, logdir,
                                              new_session=True))
            console.log("training the first model (recsys train --once) ...")
            first = RoleProcess("train-once", ["train", "--once"], env, logdir,
                                new_session=True)
            code = first.proc.wait()
            first.stop()  # closes its log
            if code != 0:
                console.print(f"[red]first training failed:[/red]\n{first.tail(40)}")
                for role in self.roles:
                    role.stop()
                return 1
            try:
                api_role = RoleProcess("api", ["serve", "--port", str(self.options.api_port)],
                                       env, logdir, new_session=True)
                self.roles += [
                    api_role,
                    RoleProcess("trainer", ["train", "--every", self.options.retrain_every],
                                env, logdir, new_session=True),
                ]
                api = f"http://127.0.0.1:{self.options.api_port}"
                _wait_http(f"{api}/readyz", 60, api_role)
                _wait_http(f"http://127.0.0.1:{self.stream_port}/metrics", 60, self.roles[0])
                self._load_catalog(api, catalog)
                console.log(f"storefront ready at {shop}/ — log in as {SPOTLIGHT_USER} to "
                            f"watch the spotlight visitor; admin console at {shop}/admin "
                            f"(API key: {self.api_key}); API docs at {shop}/docs")
                self._wait_for_stream(console, len(history))
                self.live_baseline = dict(self.state.stream_metrics)
                jobs: list[tuple[Any, tuple[Any, ...]]] = [
                    (self._replay, (settings, future)), (self._spotlight, (api,)),
                    (self._watch_stream, ())]
                if self.options.experiment:
                    self._start_experiment(api)
                    console.log(f"experiment {EXPERIMENT!r} running: model vs popularity, "
                                f"{self.options.visitors:g} simulated visitors/s")
                    jobs.append((self._visitors, (api, settings, history)))
                for target, args in jobs:
                    thread = threading.Thread(target=target, args=args, daemon=True)
                    thread.start()
                    threads.append(thread)
                deadline = (time.monotonic() + self.options.duration
                            if self.options.duration else None)
                with Live(self._render(), console=console, refresh_per_second=2,
                          transient=False) as live:
                    while deadline is None or time.monotonic() < deadline:
                        dead = [r for r in self.roles if not r.alive()]
                        if dead:
                            self.state.errors.append(f"{dead[0].name} exited:\n{dead[0].tail()}")
                            break
                        live.update(self._render())
                        time.sleep(0.5)
            except KeyboardInterrupt:
                console.log("stopping ...")
            finally:
                self.stop.set()
                for thread in threads:
                    thread.join(10)
                if self.options.experiment:
                    self._final_report(settings)
                for role in reversed(self.roles):
                    role.stop()
        return self._summary(console)

    def _final_report(self, settings: Settings, settle_s: float = 3.0) -> None:
        """The experiment's counts once the attribution consumer has read the last clicks."""
        from recsys.keys import Keys
        from recsys.redis_client import redis_client
        from shell.experiment_cli import experiment_report

        time.sleep(settle_s)
        client = redis_client(settings, socket_timeout=5.0)
        try:
            self.state.experiment = experiment_report(client, Keys.for_settings(settings),
                                                      EXPERIMENT)
        except Exception as exc:  # noqa: BLE001 - the summary says what is missing
            self.state.errors.append(f"experiment report: {exc}")
        finally:
            client.close()

    def _write_summary(self, extra: dict[str, Any]) -> None:
        rep = self.state.experiment
        summary: dict[str, Any] = {**extra, "experiment": None}
        if rep is not None:
            summary["experiment"] = {
                "name": rep["name"], "p_value": rep["p_value"], "z": rep["z"],
                "enough_data": rep["enough_data"],
                "variants": [{"name": v["name"], "impressions": v["impressions"],
                              "clicks": v["clicks"], "ctr": v["ctr"],
                              "ctr_ci95": list(v["ctr_ci95"]), "addtocarts": v["addtocarts"]}
                             for v in rep["variants"]]}
        SUMMARY_PATH.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY_PATH.write_text(json.dumps(summary, indent=2) + "\n")

    def _summary(self, console: Any) -> int:
        st = self.state
        changes = len(st.spotlight_history)
        personalised = [s for s, _ in st.spotlight_history if s == "personalized"]
        live = self._live(st.stream_metrics)
        processed = total(live, "recsys_stream_events_total", outcome="ok")
        p50 = histogram_quantile(live, "recsys_stream_freshness_seconds", 0.5)
        p99 = histogram_quantile(live, "recsys_stream_freshness_seconds", 0.99)
        console.rule("demo summary")
        console.print(f"events produced: {st.produced:,}; "
                      f"processed by the stream: {processed:,.0f}")
        if p50 is not None and p99 is not None:
            console.print(f"freshness (event -> Redis) p50 {p50 * 1000:.0f} ms, "
                          f"p99 {p99 * 1000:.0f} ms")
        console.print(f"model versions served: {', '.join(st.versions_seen) or '-'}")
        console.print(f"spotlight recommendations changed {max(changes - 1, 0)} times; "
                      f"personalised answers: {len(personalised)}")
        if st.experiment is not None:
            from shell.experiment_cli import print_report

            console.print(f"simulated visitors: {st.visits:,} lists served and looked at")
            print_report(st.experiment, console)
        self._write_summary({"events_produced": st.produced, "stream_processed": processed,
                             "model_versions": st.versions_seen, "visits": st.visits})
        console.print(f"summary written to {SUMMARY_PATH}")
        for error in st.errors[-5:]:
            console.print(f"[red]{error}[/red]")
        healthy = (st.produced > 0 and processed > 0 and len(personalised) > 0 and changes >= 2
                   and not any("exited" in e for e in st.errors))
        console.print("[green]demo OK[/green]" if healthy else "[red]demo FAILED[/red]")
        return 0 if healthy else 1
