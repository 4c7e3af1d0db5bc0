"""The app's long-lived clients and components, created in the lifespan, closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from recsys.keys import Keys
from recsys.producer import EventProducer, ProducerError
from recsys.redis_client import acheck_redis_mode, async_redis_client
from recsys.settings import Settings
from serving.catalog import Catalog
from serving.content_items import NewItems
from serving.experiments import Experiments
from serving.fallback import Fallback
from serving.fresh_items import FreshItemPoller
from serving.impressions import IMPRESSION_FLUSH_S, ImpressionRecorder
from serving.merchandising import Placements
from serving.periodic import cancel_and_wait
from serving.recommender import Recommender
from serving.redis_guard import RedisGuard
from serving.served_model import ServedModel
from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

PRODUCER_POLL_S = 0.2


def make_redis(settings: Settings) -> aioredis.Redis:
    # Short timeouts and a single immediate retry (a pooled connection may have gone stale):
    # a slow Redis must turn into a quick fallback, not a slow answer.
    # Beyond max connections a request fails fast into a fallback (load shedding) rather
    # than queueing behind a saturated loop.
    return async_redis_client(
        settings,
        max_connections=settings.api_redis_max_connections,
        socket_timeout=settings.api_redis_timeout_s,
        socket_connect_timeout=settings.api_redis_timeout_s,
        retry=Retry(NoBackoff(), 1),
    )


def make_control_redis(settings: Settings) -> aioredis.Redis:
    """Background work (model pointer, catalog reloads) gets its own connections, so a flood
    of requests can never starve a model switch."""
    timeout = max(1.0, settings.api_redis_timeout_s)
    return async_redis_client(settings, socket_timeout=timeout,
                              socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1),
                              max_connections=8)


@dataclass
class Services:
    settings: Settings
    metrics: ApiMetrics
    keys: Keys
    redis: aioredis.Redis
    control: aioredis.Redis
    guard: RedisGuard
    holder: ServedModel
    catalog: Catalog
    fallback: Fallback
    recommender: Recommender
    new_items: NewItems
    producer: EventProducer | None = None
    impressions: ImpressionRecorder = field(init=False)
    experiments: Experiments = field(init=False)
    placements: Placements = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _delivery_failed_seen: int = 0

    @classmethod
    async def start(cls, settings: Settings, metrics: ApiMetrics) -> Services:
        keys = Keys.for_settings(settings)
        redis = make_redis(settings)
        control = make_control_redis(settings)
        await acheck_redis_mode(control, settings)  # a ConfigError stops the start-up
        guard = RedisGuard(settings.api_redis_retry_after_s, metrics)
        holder = ServedModel(settings, keys, control, metrics)
        catalog = Catalog(settings, keys, redis, metrics, guard, control=control)
        fallback = Fallback(settings, keys, redis, holder, catalog, guard, metrics)
        recommender = Recommender(fallback)
        new_items = NewItems(settings, keys, control, holder, catalog, metrics)
        services = cls(settings, metrics, keys, redis, control, guard, holder, catalog, fallback,
                       recommender, new_items)
        services.impressions = ImpressionRecorder(settings, metrics)
        services.experiments = Experiments(keys, control, load=holder.load)
        services.placements = Placements(keys, control)
        # First load before serving, so a healthy start answers from the model at once;
        # failures here are not fatal (the background tasks keep trying).
        try:
            await catalog.load()
            await holder.refresh()
            await services.experiments.refresh()
            await services.placements.refresh()
        except (RedisError, OSError) as exc:
            guard.failed("startup", exc)
            log.warning("starting without Redis (%s): serving fallbacks until it answers", exc)
        holder.start()
        catalog.start()
        new_items.start()
        fresh = FreshItemPoller(holder, control, keys, settings.api_fresh_items_poll_s, metrics)
        services._tasks.append(asyncio.create_task(fresh.run(), name="fresh-items"))
        try:
            services.producer = EventProducer(
                settings, logger=logging.getLogger("serving.kafka"),
                **{"queue.buffering.max.messages": settings.api_produce_queue_max,
                   "message.timeout.ms": int(settings.api_produce_delivery_timeout_s * 1000)})
        except (ProducerError, Exception) as exc:  # noqa: BLE001 - bad client config
            log.error("Kafka producer unavailable; POST /v1/events will answer 503: %s", exc)
        services._tasks.append(asyncio.create_task(services._poll_producer(),
                                                   name="producer-poll"))
        services._tasks.append(asyncio.create_task(services._flush_impressions(),
                                                   name="impressions-flush"))
        return services

    async def _poll_producer(self) -> None:
        """Serve delivery reports between requests and count failed deliveries."""
        while True:
            await asyncio.sleep(PRODUCER_POLL_S)
            if self.producer is None:
                continue
            self.producer.poll(0)
            failed = self.producer.stats.failed
            self.metrics.produce_pending.set(self.producer.pending)
            if failed > self._delivery_failed_seen:
                self.metrics.events.labels("delivery_failed", "broker").inc(
                    failed - self._delivery_failed_seen)
                self.metrics.delivery_failed.inc(failed - self._delivery_failed_seen)
                log.error("%d accepted events could not be delivered to Kafka (lost): %s",
                            failed - self._delivery_failed_seen, self.producer.stats.last_error)
                self._delivery_failed_seen = failed

    async def _flush_impressions(self) -> None:
        while True:
            await asyncio.sleep(IMPRESSION_FLUSH_S)
            self.impressions.flush(self.producer)

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        await self.new_items.stop()
        await self.holder.stop()
        await self.experiments.stop()
        await self.placements.stop()
        await self.catalog.stop()
        self.impressions.flush(self.producer)
        if self.producer is not None:
            await asyncio.to_thread(self.producer.flush, 5.0)
        await self.redis.aclose()
        await self.control.aclose()
