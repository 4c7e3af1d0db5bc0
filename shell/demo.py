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
6. a live terminal view shows events/s, freshness, the model version and the spotlight
   visitor's recommendations changing as their events arrive.

Ctrl-C (or `--duration`) stops everything cleanly. With `--duration` the demo exits 0 only
if the system behaved: events flowed, the spotlight visitor got personalised recommendations
and they changed with the visitor's behaviour.
"""

from __future__ import annotations

import contextlib
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
        return Panel(Group(head, recs), title="recsys demo — storefront at "
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
            console.log("training the first model (recsys train --once) ...")
            first = RoleProcess("train-once", ["train", "--once"], env, logdir,
                                new_session=True)
            code = first.proc.wait()
            first.stop()  # closes its log
            if code != 0:
                console.print(f"[red]first training failed:[/red]\n{first.tail(40)}")
                self.roles[0].stop()
                return 1
            try:
                self.roles += [
                    RoleProcess("api", ["serve", "--port", str(self.options.api_port)], env,
                                logdir, new_session=True),
                    RoleProcess("trainer", ["train", "--every", self.options.retrain_every],
                                env, logdir, new_session=True),
                ]
                api = f"http://127.0.0.1:{self.options.api_port}"
                _wait_http(f"{api}/readyz", 60, self.roles[1])
                _wait_http(f"http://127.0.0.1:{self.stream_port}/metrics", 60, self.roles[0])
                self._load_catalog(api, catalog)
                console.log(f"storefront ready at {shop}/ — log in as {SPOTLIGHT_USER} to "
                            f"watch the spotlight visitor; admin console at {shop}/admin "
                            f"(API key: {self.api_key}); API docs at {shop}/docs")
                self._wait_for_stream(console, len(history))
                self.live_baseline = dict(self.state.stream_metrics)
                for target, args in ((self._replay, (settings, future)),
                                     (self._spotlight, (api,)), (self._watch_stream, ())):
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
                for role in reversed(self.roles):
                    role.stop()
        return self._summary(console)

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
        for error in st.errors[-5:]:
            console.print(f"[red]{error}[/red]")
        healthy = (st.produced > 0 and processed > 0 and len(personalised) > 0 and changes >= 2
                   and not any("exited" in e for e in st.errors))
        console.print("[green]demo OK[/green]" if healthy else "[red]demo FAILED[/red]")
        return 0 if healthy else 1
