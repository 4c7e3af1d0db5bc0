"""A small circuit breaker around Redis on the request path.

After a Redis error, requests skip Redis for `api_redis_retry_after_s` and go straight to the
in-memory fallback instead of each waiting for a timeout; the next request after that tries
Redis again.
"""

from __future__ import annotations

import logging
import time

from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)


class RedisGuard:
    def __init__(self, retry_after_s: float, metrics: ApiMetrics) -> None:
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self._down_until = 0.0
        self._down = False

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.redis_errors.labels(operation).inc()
        self._down_until = time.monotonic() + self.retry_after_s
        if not self._down:
            self._down = True
            log.warning("Redis unavailable (%s: %s); serving fallbacks for %.1fs before retrying",
                        operation, exc, self.retry_after_s)

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            log.info("Redis reachable again")
