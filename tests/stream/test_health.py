"""/healthz reports a worker that stopped processing while records wait: consumer lag > 0 and
no batch finished for `stream_stall_s` is a stall (503 with the reason), however the loop beats;
an idle, caught-up or restoring worker is healthy."""

from __future__ import annotations

import time
import uuid

import redis as redis_lib

from recsys.events import Event
from shell.harness import total
from shell.localstack import start_redis
from stream.health import ConsumerProgress, Heartbeat
from tests.stream.conftest import WorkerProcess, http_get, produce, wait_until


def test_lag_without_progress_is_a_stall_and_caught_up_or_unknown_is_not():
    clock = [1000.0]
    heartbeat = Heartbeat(stall_s=30, clock=lambda: clock[0])

    def second(lag: int | None, events: int = 0) -> None:  # one beat of the event loop
        clock[0] += 1
        if events:
            heartbeat.batch_started()
            heartbeat.batch_done(events)
        heartbeat.beat()
        heartbeat.set_lag(lag)

    for _ in range(100):
        second(0)
    assert heartbeat.status() == (True, "ok")  # idle and caught up
    for _ in range(31):
        second(500)  # records arrive and nothing is processed
    assert heartbeat.status() == (True, "ok")
    second(500)
    ok, reason = heartbeat.status()
    assert not ok
    assert reason == "500 records behind the partition ends and 0 processed in the last 30s"
    second(500, events=400)  # it moves again
    assert heartbeat.status() == (True, "ok")
    for _ in range(40):
        second(100_000, events=3000)  # far behind but working through it: overloaded, alive
    assert heartbeat.status() == (True, "ok")
    for _ in range(31):
        second(400_000, events=30)  # a trickle: a hundredth of the lag takes far longer
    ok, reason = heartbeat.status()
    assert not ok and "900 processed in the last 30s" in reason, reason
    second(None)  # restoring a table: no verdict on lag
    assert heartbeat.status() == (True, "ok")


def test_consumer_progress_lag_from_processed_then_committed_offsets():
    progress = ConsumerProgress()
    progress.processed("p0", 9)
    progress.processed("p0", 4)  # an older record acked late moves nothing back
    ends = {"p0": 25, "p1": 7, "p2": 3}

    def end(tp):
        if tp == "p3":
            raise KeyError(tp)  # not fetched yet
        return ends[tp]

    lags = progress.lag(["p0", "p1", "p2", "p3"], end, {"p1": 2}.get)
    assert lags == {"p0": 15, "p1": 5}  # p2: nothing processed, nothing committed; p3: no end


def test_healthz_flips_when_a_worker_stops_processing_and_recovers(settings, workers, tmp_path):
    """A real worker and broker; its own Redis has writes paused (CLIENT PAUSE WRITE) so
    processing cannot advance while records keep arriving."""
    own = start_redis(tmp_path)
    try:
        url = f"redis://127.0.0.1:{own.port}/0"
        client = redis_lib.Redis.from_url(url)
        settings = settings.model_copy(update={"redis_url": url})
        worker = WorkerProcess(settings, tmp_path, "stall", stream_stall_s=3.0,
                               stream_redis_backoff_max_s=0.5)
        workers.append(worker)
        worker.wait_assigned()
        health = f"http://127.0.0.1:{worker.port}/healthz"

        def events(n: int) -> list[Event]:
            now = int(time.time() * 1000)
            return [Event(event_id=uuid.uuid4().hex, user_id=f"u{k}", item_id="i1",
                          event_type="view", timestamp=now) for k in range(n)]

        def consumed() -> float:
            return total(worker.metrics(), "recsys_stream_events_total")

        produce(settings, events(20))
        wait_until(lambda: consumed() >= 20, 30, message="first events not consumed")
        assert http_get(health) == (200, "ok")

        client.execute_command("CLIENT", "PAUSE", "120000", "WRITE")
        try:
            produce(settings, events(20))
            # The batch stuck on Redis is reported first, the lag once records waited for
            # stream_stall_s with (almost) nothing processed.
            status, reason = wait_until(
                lambda: (s := http_get(health))[0] == 503 and "records behind" in s[1] and s, 30,
                message="/healthz did not report the lag without progress")
            assert "processed in the last 3s" in reason, reason
            assert consumed() < 40
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
        wait_until(lambda: consumed() >= 40, 60, message="events after the pause not consumed")
        wait_until(lambda: http_get(health) == (200, "ok"), 10, message="/healthz stayed 503")
        client.close()
    finally:
        own.stop()
