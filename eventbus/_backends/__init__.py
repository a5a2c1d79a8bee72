"""The transports, behind one seam (:mod:`eventbus._backends.base`), chosen in one place: here.

``open_backend`` maps a URL's scheme to a backend, with lazy imports so an unused transport's
modules (and their dependencies) are never loaded:

=======================================  ===========================================
``memory://`` (or a ``broker``)          :class:`~eventbus._backends.memory.MemoryBackend`
``redis://``, ``rediss://``, ``unix://`` :class:`~eventbus._backends.redis.RedisBackend`
``redis+cluster://``, ``rediss+cluster`` :class:`~eventbus._backends.cluster.ClusterBackend`
``redis+sentinel://``, ``rediss+sentinel`` :class:`~eventbus._backends.sentinel.SentinelBackend`
=======================================  ===========================================

With nothing configured and nothing answering at the default URL, it starts an embedded Redis
(:mod:`eventbus._backends.embedded`) for the run, unless ``settings.embedded`` is False.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from eventbus._backends.base import Backend, ConnectionSettings
from eventbus._backends.tls import check_tls
from eventbus._errors import ConnectError
from eventbus._urls import SOURCE_CODE, is_cluster_url, is_sentinel_url, redact_url, resolve_url

if TYPE_CHECKING:
    from eventbus._backends.embedded import EmbeddedRedis
    from eventbus._backends.memory import MemoryBroker

__all__ = ["Backend", "ConnectionSettings", "command_client", "open_backend", "wait_until_reachable"]

log = logging.getLogger("eventbus")

MEMORY_URL = "memory://"


async def open_backend(
    url: str | None,
    settings: ConnectionSettings,
    *,
    source: str = SOURCE_CODE,
    broker: MemoryBroker | None = None,
) -> Backend:
    """The backend for ``url`` (None: $EVENTBUS_URL, else the default), reachable when returned.

    ``source``: where ``url`` came from, as the log names it. ``broker``: run in memory on it.
    """
    if broker is not None or url == MEMORY_URL:
        from eventbus._backends.memory import MemoryBackend

        return MemoryBackend(settings, broker)
    resolved = resolve_url(url, source)
    check_tls(resolved.url)  # a certificate file that cannot be read fails now, not as "not answering"
    if resolved.explicit or not settings.embedded:
        log.info("connecting to Redis at %s (from %s)", redact_url(resolved.url), resolved.source)
        if is_sentinel_url(resolved.url):
            from eventbus._backends.sentinel import open_sentinel

            return await open_sentinel(resolved.url, settings, source=resolved.source, explicit=resolved.explicit)
        await wait_until_reachable(resolved.url, settings.connect_timeout)
        return _redis_backend(resolved.url, settings, source=resolved.source, explicit=resolved.explicit)
    log.debug("nothing configured: trying %s (from %s) for 0.3s", redact_url(resolved.url), resolved.source)
    try:
        await wait_until_reachable(resolved.url, 0.3, quiet=True)
        log.info(
            "using Redis at %s (from %s; set --url or EVENTBUS_URL to change)",
            redact_url(resolved.url),
            resolved.source,
        )
        return _redis_backend(resolved.url, settings, source=resolved.source, explicit=False)
    except ConnectError as exc:
        log.debug("no Redis at the default URL: %s", exc)
    embedded = await start_embedded()
    log.warning(
        "no Redis at %s and none configured: started an embedded %s at %s for this run. "
        "Publish to it from another shell with: EVENTBUS_URL=%s python -m eventbus publish CHANNEL DATA",
        resolved.url,
        embedded.kind,
        embedded.url,
        embedded.url,
    )
    return _redis_backend(embedded.url, settings, source=resolved.source, explicit=False, embedded=embedded)


def _redis_backend(
    url: str, settings: ConnectionSettings, *, source: str, explicit: bool, embedded: EmbeddedRedis | None = None
) -> Backend:
    # The one place a Redis URL's scheme picks the code that talks to it.
    if is_cluster_url(url):
        from eventbus._backends.cluster import ClusterBackend

        return ClusterBackend(url, settings, source=source, explicit=explicit, embedded=embedded)
    from eventbus._backends.redis import RedisBackend

    return RedisBackend(url, settings, source=source, explicit=explicit, embedded=embedded)


async def start_embedded() -> EmbeddedRedis:
    """A private Redis server for this run (redis-server if installed, else fakeredis)."""
    from eventbus._backends.embedded import EmbeddedRedis

    embedded = EmbeddedRedis()
    # Launched here, on the loop's thread, which lives as long as the run; a pool thread would
    # take the redis-server child down with it when the pool retires it (eventbus._children).
    embedded.launch()
    try:
        await asyncio.to_thread(embedded.wait_ready)
    except BaseException:  # cancelled by a signal while waiting: the server must not outlive the start
        embedded.stop()
        raise
    return embedded


def command_client(url: str, *, max_connections: int = 64, autopipeline: bool | None = None) -> Any:
    """A command client for ``url`` (a redis.asyncio-compatible one), for producers.

    ``autopipeline``: for a single server (cluster and sentinel clients are redis-py's own, never
    auto-pipelined); None follows $EVENTBUS_AUTOPIPELINE.
    """
    check_tls(url)
    if is_cluster_url(url):
        from eventbus._backends.cluster import cluster_client

        return cluster_client(url, max_connections=max_connections)
    if is_sentinel_url(url):
        from eventbus._backends.sentinel import command_client as sentinel_client

        return sentinel_client(url, max_connections=max_connections)
    from eventbus._backends.subscriber import command_client as server_client

    return server_client(url, max_connections=max_connections, autopipeline=autopipeline)


async def wait_until_reachable(url: str, timeout: float, *, quiet: bool = False) -> None:
    """PING ``url`` (any seed of a cluster) until it answers or ``timeout`` passes (:class:`ConnectError`)."""
    if is_cluster_url(url):
        from eventbus._backends.cluster import wait_until_cluster_reachable

        await wait_until_cluster_reachable(url, timeout)
        return
    if is_sentinel_url(url):
        from eventbus._backends.sentinel import wait_until_sentinel_reachable

        await wait_until_sentinel_reachable(url, timeout, quiet=quiet)
        return
    from eventbus._backends.subscriber import wait_until_reachable as ping_server

    await ping_server(url, timeout, quiet=quiet)


def reachable(url: str, timeout: float = 0.3) -> bool:
    """Blocking: does anything answer at ``url`` within ``timeout``? (for code outside a loop)."""
    try:
        asyncio.run(wait_until_reachable(url, timeout, quiet=True))
    except ConnectError:
        return False
    return True
