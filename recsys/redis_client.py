"""The one way every role gets a Redis client: one node, or Redis Cluster.

`settings.redis_cluster` picks the client: `redis.Redis` / `redis.asyncio.Redis` for one node,
`redis.cluster.RedisCluster` / `redis.asyncio.cluster.RedisCluster` for a cluster (the URL
names any one node; the client discovers the others and routes each command by its key's
slot). The key layout follows the same setting (`Keys.for_settings`, recsys.keys).

The two must agree with the server, and a mismatch is refused at start-up with a ConfigError
naming the setting, rather than showing up later as MOVED or CROSSSLOT errors on some keys:
a one-node client on a cluster node reaches only that node's slots; a cluster client needs
a server started with `cluster-enabled yes`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from recsys.errors import ConfigError

log = logging.getLogger(__name__)

_TO_CLUSTER = ("the Redis server at {url} runs in cluster mode (cluster_enabled:1) but "
               "RECSYS_REDIS_CLUSTER is false: set RECSYS_REDIS_CLUSTER=true (the cluster "
               "key layout and client), or point REDIS_URL at a one-node Redis")
_TO_SINGLE = ("RECSYS_REDIS_CLUSTER is true but the Redis server at {url} is not in cluster "
              "mode: set RECSYS_REDIS_CLUSTER=false, or point REDIS_URL at a node of a Redis "
              "Cluster (cluster-enabled yes)")


def _is_cluster(settings: Any) -> bool:
    return bool(getattr(settings, "redis_cluster", False))


def redis_client(settings: Any, **options: Any) -> Any:
    """Synchronous client for `settings` (one node or cluster). `options` are connection
    options (socket_timeout, socket_connect_timeout, retry, ...) valid for both."""
    if not _is_cluster(settings):
        import redis

        return redis.Redis.from_url(settings.redis_url, **options)
    from redis.cluster import RedisCluster

    try:  # the sync cluster client reads the slot map now, so a one-node server fails here
        return RedisCluster.from_url(settings.redis_url, **options)
    except RedisClusterException as exc:
        if "not enabled" in str(exc):
            raise ConfigError(_TO_SINGLE.format(url=_safe_url(settings))) from None
        # No node answered: a connection error, which callers already retry or report.
        raise RedisConnectionError(str(exc)) from exc


def _async_cluster_class() -> Any:
    from redis.asyncio.cluster import ClusterPipeline, RedisCluster

    class SettledPipeline(ClusterPipeline):  # type: ignore[misc]
        __slots__ = ()

        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            await self.cluster_client.settle_first_use()
            return await super().execute(*args, **kwargs)

    class AsyncCluster(RedisCluster):  # type: ignore[misc]
        """redis-py's asyncio cluster client with two repairs:

        - "no node answers" is a connection error (a RedisError), as it is for one node: the
          roles' degrade-and-retry paths catch RedisError, and redis-py raises a
          RedisClusterException, which is not one;
        - the first use initializes alone: with redis-py 8.1, commands sent concurrently
          with the first initialization failed ("'NoneType' object has no attribute
          'writelines'"; reproduced here about one time in two with 50 concurrent first
          commands, never with this), so the first command or pipeline initializes under a
          lock and yields once before the others go.
        """

        _first_use: asyncio.Lock | None = None

        async def settle_first_use(self) -> None:
            if not self._initialize:
                return
            if self._first_use is None:
                self._first_use = asyncio.Lock()
            async with self._first_use:
                if self._initialize:
                    await self.initialize()
                    await asyncio.sleep(0)

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            await self.settle_first_use()
            return await super().execute_command(*args, **kwargs)

        def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
            if shard_hint:
                raise RedisClusterException("shard_hint is deprecated in cluster mode")
            return SettledPipeline(self, transaction)

        async def initialize(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().initialize(*args, **kwargs)
            except RedisClusterException as exc:
                if "not enabled" in str(exc):
                    raise
                raise RedisConnectionError(str(exc)) from exc

    return AsyncCluster


def async_redis_client(settings: Any, **options: Any) -> Any:
    """redis.asyncio client for `settings` (one node or cluster); connects lazily."""
    if not _is_cluster(settings):
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(settings.redis_url, **options)
    return _async_cluster_class().from_url(settings.redis_url, **options)


def subscriber_client(settings: Any, **options: Any) -> Any:
    """redis.asyncio client for pub/sub (the model-switch channel). Always one connection to
    the URL's node: in a cluster, PUBLISH reaches the subscribers of every node."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(settings.redis_url, **options)


async def amget(client: Any, names: list[str]) -> list[Any]:
    """MGET of keys that may sit in different slots (redis.asyncio client): one command on
    one node; in a cluster, one MGET per slot (not atomic, so only for immutable keys)."""
    if hasattr(client, "mget_nonatomic"):
        return list(await client.mget_nonatomic(names))
    return list(await client.mget(names))


def _safe_url(settings: Any) -> str:
    """The URL without its password, for error messages."""
    url = str(settings.redis_url)
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _cluster_enabled(info: Any) -> bool | None:
    if isinstance(info, dict) and "cluster_enabled" in info:
        return bool(int(info["cluster_enabled"]))
    return None


def check_redis_mode(client: Any, settings: Any) -> None:
    """Start-up check (synchronous client): refuse a server whose mode is not the setting's.
    An unreachable server is not judged here (roles start degraded and retry)."""
    if _is_cluster(settings):
        return  # redis_client already refused a one-node server
    try:
        enabled = _cluster_enabled(client.info("cluster"))
    except RedisError as exc:
        log.warning("could not check the Redis mode at start-up: %r", exc)
        return
    if enabled:
        raise ConfigError(_TO_CLUSTER.format(url=_safe_url(settings)))


async def acheck_redis_mode(client: Any, settings: Any) -> None:
    """Start-up check (redis.asyncio client), as check_redis_mode."""
    try:
        if _is_cluster(settings):
            await client.initialize()  # reads the slot map: fails on a one-node server
            return
        enabled = _cluster_enabled(await client.info("cluster"))
    except RedisClusterException as exc:
        if "not enabled" in str(exc):
            raise ConfigError(_TO_SINGLE.format(url=_safe_url(settings))) from None
        log.warning("could not check the Redis mode at start-up: %r", exc)
        return
    except (RedisError, OSError) as exc:
        log.warning("could not check the Redis mode at start-up: %r", exc)
        return
    if enabled:
        raise ConfigError(_TO_CLUSTER.format(url=_safe_url(settings)))
