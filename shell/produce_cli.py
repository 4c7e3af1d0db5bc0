"""`recsys produce`: replay a source into Kafka, as fast as possible or at a target rate.

    recsys produce --source synthetic --events 100000
    recsys produce --source movielens:../shared/data/movielens-100k/u.data.gz --rate 500
    recsys produce --source csv:orders.csv --map user_id=customer,item_id=sku,timestamp=ts \\
        --event-type transaction

Every row is validated with the wire rules (`recsys.events`) before it is sent; rows that fail
are counted as failed, with their reasons in the log, and never reach the topic. At the end a
summary line gives sent, failed and events/s; the exit code is 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recsys.argtypes import positive_float, positive_int

if TYPE_CHECKING:  # heavy imports stay out of `recsys --help`
    import pandas as pd

    from recsys.producer import EventProducer

log = logging.getLogger(__name__)

# Delivery reports and the progress bar are served every this many events.
_CHUNK = 1_000


class Pacer:
    """Keeps a sender on the schedule `start + n / rate` (a token bucket of `burst` tokens).

    Call `wait(n)` after sending n events: it sleeps only when the sender is ahead of the
    schedule by more than `min_sleep` seconds, so a high rate costs a few sleeps per second,
    not one per event. Falling behind (a slow broker) earns at most `burst` events of
    catch-up, so the rate never spikes far above the target.
    """

    def __init__(self, rate: float, burst: float | None = None, min_sleep: float = 0.002,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate > 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(1.0, rate * 0.1) if burst is None else burst
        self.min_sleep = min_sleep
        self._clock, self._sleep = clock, sleep
        self._start = clock()
        self._count = 0.0

    def wait(self, n: int = 1) -> None:
        self._count += n
        now = self._clock()
        due = self._start + self._count / self.rate
        ahead = due - now
        if ahead > self.min_sleep:
            self._sleep(ahead)
        elif -ahead * self.rate > self.burst:
            # Too far behind: forget the debt beyond one burst instead of racing to repay it.
            self._start = now - (self._count - self.burst) / self.rate


@dataclass
class ReplaySummary:
    total: int = 0
    sent: int = 0            # delivered, acknowledged by the broker
    failed: int = 0          # invalid rows + delivery failures + undelivered at the end
    invalid: int = 0
    seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (f"sent {self.sent:,} events, failed {self.failed:,} in {self.seconds:.2f} s: "
                f"{self.rate:,.0f} events/s")
        if self.invalid:
            top = ", ".join(f"{r} {n}" for r, n in self.reasons.most_common(3))
            text += f" ({self.invalid:,} invalid rows: {top})"
        if self.last_error:
            text += f"; last delivery error: {self.last_error}"
        return text


def replay(frame: pd.DataFrame, producer: EventProducer, rate: float | None = None,
           progress: bool = True, flush_timeout: float = 60.0) -> ReplaySummary:
    """Send every row of an event frame, in order, keyed by user id; wait for delivery."""
    from tqdm import tqdm

    from recsys.events import InvalidEvent
    from recsys.sources import iter_events

    summary = ReplaySummary(total=len(frame))
    pacer = Pacer(rate) if rate else None
    bar = tqdm(total=len(frame), unit="ev", unit_scale=True, disable=not progress,
               mininterval=0.5, desc="produce")
    start = time.perf_counter()
    pending = 0

    def skip(position: int, exc: InvalidEvent) -> None:
        summary.invalid += 1
        summary.reasons[str(exc.reason)] += 1
        if summary.invalid <= 5:
            log.warning("skipping invalid row %d: %s (%s)", position, exc, exc.reason)

    for event in iter_events(frame, on_invalid=skip):
        producer.send(event)
        pending += 1
        if pacer is not None:
            pacer.wait()
        if pending >= _CHUNK:
            bar.update(pending)
            bar.set_postfix(failed=summary.invalid + producer.stats.failed, refresh=False)
            pending = 0
    bar.update(len(frame) - bar.n)  # the rest, invalid rows included
    undelivered = producer.flush(flush_timeout)
    summary.seconds = time.perf_counter() - start
    bar.close()
    stats = producer.stats
    summary.sent = stats.delivered
    summary.failed = summary.invalid + stats.failed + undelivered
    summary.last_error = stats.last_error
    return summary


def register(sub: argparse._SubParsersAction) -> None:
    from recsys.sources.options import add_source_options
    from recsys.sources.registry import SOURCE_HELP

    parser = sub.add_parser(
        "produce",
        help="replay a dataset or the synthetic generator into Kafka",
        description="Replay a source into the interactions topic (key = user id), as fast\n"
        "as possible or at --rate events/s, with a progress bar and a closing summary\n"
        "(sent, failed, events/s). Rows are validated like any producer's events: invalid\n"
        "rows are counted as failed and not sent. Exit code 0 when nothing failed, else 1.\n"
        "Broker: KAFKA_BOOTSTRAP_SERVERS; topic: RECSYS_INTERACTIONS_TOPIC (created when\n"
        "missing, RECSYS_TOPIC_PARTITIONS partitions).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  recsys produce --source synthetic --events 100000\n"
        "  recsys produce --source movielens:data/u.data.gz --rate 500\n"
        "  recsys produce --source csv:orders.csv "
        "--map user_id=customer,item_id=sku,event_type=action,timestamp=ts\n"
        "  recsys stack run -- recsys produce --source synthetic   # against a local stack",
    )
    parser.add_argument("--source", default="synthetic", metavar="SPEC",
                        help=f"what to replay (default: synthetic): {SOURCE_HELP}")
    parser.add_argument("--events", type=positive_int, default=None, metavar="N",
                        help="synthetic: how many events to generate (default 100000); "
                        "files: send only the first N events in time order")
    parser.add_argument("--rate", type=positive_float, default=None, metavar="EV_PER_S",
                        help="target events per second (default: as fast as possible)")
    parser.add_argument("--seed", type=int, default=None,
                        help="synthetic generator seed (default: RECSYS_RANDOM_SEED)")
    parser.add_argument("--topic", default=None,
                        help="topic to write to (default: RECSYS_INTERACTIONS_TOPIC)")
    parser.add_argument("--shift-to-now", action="store_true",
                        help="move all timestamps so that the last event is now (replaying "
                        "old data as if it were live; keeps the gaps between events)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_source_options(parser)
    parser.set_defaults(handler=_produce)



def _produce(args: argparse.Namespace) -> int:
    from recsys.kafka import ensure_topics
    from recsys.producer import EventProducer, ProducerError
    from recsys.settings import get_settings
    from recsys.sources.options import source_options
    from recsys.sources.registry import load_source

    settings = get_settings()
    seed = settings.random_seed if args.seed is None else args.seed
    load_started = time.perf_counter()
    frame = load_source(args.source, events=args.events, seed=seed, **source_options(args))
    if args.shift_to_now and len(frame):
        frame = frame.assign(timestamp=frame.timestamp + (int(time.time() * 1000)
                                                          - int(frame.timestamp.max())))
    log.info("loaded %d events from %s in %.2f s", len(frame), args.source,
             time.perf_counter() - load_started)
    topic = args.topic or settings.interactions_topic
    try:
        ensure_topics(settings, extra={topic: settings.topic_partitions})
    except Exception as exc:  # noqa: BLE001 - librdkafka raises several kinds; one message
        raise ProducerError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers} "
                            f"to create topic {topic}: {exc}") from None
    client: dict[str, Any] = {"message.timeout.ms": 30_000}
    with EventProducer(settings, topic=topic, **client) as producer:
        summary = replay(frame, producer, rate=args.rate, progress=not args.no_progress)
    # The command's intended output: the closing summary.
    print(f"recsys produce: {args.source} -> {topic}: {summary.line()}", flush=True)
    return 0 if summary.failed == 0 else 1
