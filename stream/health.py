"""Is the worker making progress? A heartbeat the health endpoint checks.

The Prometheus HTTP server runs in its own thread: answering there says nothing about the
event loop, and a worker stuck retrying one batch keeps answering while its lag gauge
freezes. So the worker serves `/healthz` beside `/metrics` on `stream_web_port`, and it
answers 503 (with the reason) when either

* the event loop has not run its heartbeat task for `stream_stall_s` (blocked or dead loop), or
* one batch has been in progress for longer than `stream_stall_s` (Redis unreachable and the
  batch kept for another attempt, a hung dependency), or
* its partitions hold records beyond what it processed (consumer lag > 0) for
  `stream_stall_s` and it processed less than a hundredth of that lag over the last
  `stream_stall_s`: a worker that stopped consuming, or trickles a few events now and then,
  while its loop beats and nothing is in progress (the chaos scenario
  million_random_users_live).

An idle worker (no events) is healthy: its loop beats, no batch is in progress and it has no
lag; a table being restored is no stall either. The loop reports the lag at each beat
(`Heartbeat.set_lag`), computed from the partitions' end offsets and the offsets processed
(`ConsumerProgress`), so the lag gauge moves while nothing is processed too. The signals are
exported as gauges (`recsys_stream_heartbeat_timestamp_seconds`,
`recsys_stream_batch_in_progress_seconds`, `recsys_stream_consumer_lag`) for the
`RecsysStreamWorkerStalled` alert.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

from stream import telemetry

# Behind for stall_s and processing less than 1/STALL_PACE of the lag per stall_s: stalled (at
# that pace the backlog takes a hundred windows to clear; a worker merely overloaded processes
# far more, one that stopped or trickles far less).
STALL_PACE = 100


class Heartbeat:
    def __init__(self, stall_s: float = 60.0, clock=time.monotonic) -> None:  # noqa: ANN001
        self.stall_s = stall_s
        self._clock = clock
        self._beat = clock()
        self._batch_since: float | None = None
        self._lag: int | None = None  # records behind the partition ends; None: unknown
        self._behind_since = self._beat  # lag > 0 continuously since then
        self._processed = 0  # events in batches done
        # (time, events processed by then), one per lag report, back to stall_s ago
        self._window: deque[tuple[float, int]] = deque([(self._beat, 0)])
        telemetry.BATCH_IN_PROGRESS.set_function(self.batch_seconds)

    def beat(self) -> None:
        """Called from the event loop (a timer task): the loop is alive."""
        self._beat = self._clock()
        telemetry.HEARTBEAT.set(time.time())

    def batch_started(self) -> None:
        self._batch_since = self._clock()

    def batch_done(self, events: int = 0) -> None:
        """The batch ended: `events` processed (0 when it failed)."""
        self._batch_since = None
        self._processed += events
        self.beat()

    def set_lag(self, lag: int | None) -> None:
        """From the event loop, every beat: records behind the partition ends (None while
        unknown, e.g. a table being restored). Nothing to do (0) or unknown is no stall."""
        now = self._clock()
        if not lag or not self._lag:
            self._behind_since = now
        self._lag = lag
        window = self._window
        window.append((now, self._processed))
        while len(window) > 1 and window[1][0] <= now - self.stall_s:
            window.popleft()

    def processed_recently(self) -> int:
        """Events processed over about the last stall_s (the window kept by set_lag)."""
        return self._processed - self._window[0][1]

    def batch_seconds(self) -> float:
        since = self._batch_since
        return 0.0 if since is None else self._clock() - since

    def status(self) -> tuple[bool, str]:
        """(healthy, reason): every stall signal that holds, joined."""
        now = self._clock()
        problems = []
        if now - self._beat > self.stall_s:
            problems.append(f"event loop silent for {now - self._beat:.0f}s")
        batch = self.batch_seconds()
        if batch > self.stall_s:
            problems.append(f"one batch in progress for {batch:.0f}s (see logs: Redis?)")
        lag = self._lag
        if lag and now - self._behind_since > self.stall_s:
            recent = self.processed_recently()
            if recent * STALL_PACE < lag:
                problems.append(f"{lag} records behind the partition ends and {recent} "
                                f"processed in the last {self.stall_s:.0f}s")
        return (False, "; ".join(problems)) if problems else (True, "ok")


class ConsumerProgress:
    """Next offset to process per source partition (after the last processed record), and the
    lag against the partitions' end offsets. Updated and read on the event loop."""

    def __init__(self) -> None:
        self.next_offset: dict[object, int] = {}

    def processed(self, tp: object, offset: int) -> None:
        if offset + 1 > self.next_offset.get(tp, -1):
            self.next_offset[tp] = offset + 1

    def lag(self, partitions: Iterable[object], end_offset: Callable[[object], int | None],
            committed: Callable[[object], int | None]) -> dict[object, int]:
        """Records behind the end per partition, from the last processed offset or, for a
        partition this worker processed nothing of yet, the committed one; partitions whose
        end or position is unknown are left out."""
        lags = {}
        for tp in partitions:
            try:
                end = end_offset(tp)
            except Exception:  # noqa: BLE001 - not fetched yet: unknown, not an error
                continue
            position = self.next_offset.get(tp)
            if position is None:
                position = committed(tp)
            if end is not None and position is not None:
                lags[tp] = max(0, end - position)
        return lags


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


def start_server(port: int, heartbeat: Heartbeat, addr: str = "0.0.0.0") -> int:  # noqa: S104
    """Serve /metrics and /healthz in a background thread; returns the bound port."""
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ, start_response):  # noqa: ANN001, ANN202 - WSGI
        if environ.get("PATH_INFO") == "/healthz":
            ok, reason = heartbeat.status()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [reason.encode()]
        return metrics_app(environ, start_response)

    server = make_server(addr, port, app, _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="stream-http", daemon=True).start()
    return int(server.server_port)
