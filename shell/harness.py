"""Start a role, scrape its metrics, read a quantile: the one harness of the demo, the
benchmarks and the integration tests.

* `RoleProcess`: `recsys <args>` as a child process (`python -m shell.cli`), its output in a
  log file, stopped by its own handle (never by name).
* `scrape` / `parse_metrics`: a Prometheus text page as {(name, sorted labels): value}
  (duplicate series, as several processes may expose, are summed).
* `total`, `delta`, `histogram_quantile`: sums over label sets, differences between two
  scrapes, and PromQL's `histogram_quantile` over cumulative `_bucket` samples.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse_metrics(text: str) -> Samples:
    """A Prometheus text exposition as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """GET a /metrics page and parse it (OSError when nothing answers)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse_metrics(resp.read().decode())


def total(samples: Mapping[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= set(sample_labels))


def delta(after: Mapping[tuple[str, Labels], float],
          before: Mapping[tuple[str, Labels], float]) -> Samples:
    """Counters (and histogram buckets) accumulated between two scrapes."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def histogram_quantile(samples: Mapping[tuple[str, Labels], float], name: str, q: float,
                       **labels: str) -> float | None:
    """The q-quantile of histogram `name` (buckets summed over label sets that include
    `labels`), interpolated inside its bucket as PromQL does; None without observations."""
    wanted = set(labels.items())
    buckets: dict[float, float] = {}
    for (sample, sample_labels), value in samples.items():
        if sample == f"{name}_bucket" and wanted <= set(sample_labels):
            bound = float(dict(sample_labels)["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    if not buckets:
        return None
    bounds = sorted(buckets)
    count_all = buckets[bounds[-1]]
    if count_all <= 0:
        return None
    rank, prev_bound, prev_count = q * count_all, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width else 0)
        prev_bound, prev_count = bound, count
    return prev_bound


class RoleProcess:
    """`recsys <args>` as a child process with its output in `logdir/<name>.log`.

    `port`, when given, is where its /metrics answer (`metrics`, `metric`). `new_session`
    puts it in its own process group (the demo: Ctrl-C reaches the demo, which stops each
    role in order).
    """

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], logdir: Path, *,
                 port: int | None = None, cwd: Path | None = None,
                 new_session: bool = False) -> None:
        self.name = name
        self.port = port
        self.log_path = Path(logdir) / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shell.cli", *args], env=dict(env), cwd=cwd,
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=new_session)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def metrics_url(self) -> str:
        if self.port is None:
            raise ValueError(f"{self.name} was started without a metrics port")
        return f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self, timeout: float = 5.0) -> Samples:
        return scrape(self.metrics_url, timeout)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`, scraped now."""
        return total(self.metrics(), name, **labels)

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str,
                 interval: float = 0.25) -> Any:
        """Poll `check` until it returns something true; OSError (not up yet) is a no. Fails
        at once, with the log's tail, when the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.tail(60)}")
            with contextlib.suppress(OSError):
                result = check()
                if result:
                    return result
            time.sleep(interval)
        raise RuntimeError(f"{self.name}: {what} not reached in {timeout:.0f}s:\n{self.tail(60)}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0, wait: bool = True) -> None:
        """SIGTERM (after SIGCONT, in case it was paused), then SIGKILL after `timeout`."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        if not wait:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
