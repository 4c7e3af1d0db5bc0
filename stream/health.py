"""Is the worker making progress? A heartbeat the health endpoint checks.

The Prometheus HTTP server runs in its own thread: answering there says nothing about the
event loop, and a worker stuck retrying one batch keeps answering while its lag gauge
freezes. So the worker serves `/healthz` beside `/metrics` on `stream_web_port`, and it
answers 503 (with the reason) when either

* the event loop has not run its heartbeat task for `stream_stall_s` (blocked or dead loop), or
* one batch has been in progress for longer than `stream_stall_s` (Redis unreachable and the
  batch kept for another attempt, a hung dependency).

An idle worker (no events) is healthy: its loop beats and no batch is in progress. The same
two signals are exported as gauges (`recsys_stream_heartbeat_timestamp_seconds`,
`recsys_stream_batch_in_progress_seconds`) for the `RecsysStreamWorkerStalled` alert.
"""

from __future__ import annotations

import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

from stream import telemetry


class Heartbeat:
    def __init__(self, stall_s: float = 60.0, clock=time.monotonic) -> None:  # noqa: ANN001
        self.stall_s = stall_s
        self._clock = clock
        self._beat = clock()
        self._batch_since: float | None = None
        telemetry.BATCH_IN_PROGRESS.set_function(self.batch_seconds)

    def beat(self) -> None:
        """Called from the event loop (a timer task): the loop is alive."""
        self._beat = self._clock()
        telemetry.HEARTBEAT.set(time.time())

    def batch_started(self) -> None:
        self._batch_since = self._clock()

    def batch_done(self) -> None:
        self._batch_since = None
        self.beat()

    def batch_seconds(self) -> float:
        since = self._batch_since
        return 0.0 if since is None else self._clock() - since

    def status(self) -> tuple[bool, str]:
        now = self._clock()
        if now - self._beat > self.stall_s:
            return False, f"event loop silent for {now - self._beat:.0f}s"
        batch = self.batch_seconds()
        if batch > self.stall_s:
            return False, f"one batch in progress for {batch:.0f}s (see logs: Redis?)"
        return True, "ok"


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
