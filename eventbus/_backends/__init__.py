"""The transports, behind one seam (:mod:`eventbus._backends.base`), chosen in one place: here.

:data:`TRANSPORTS` maps a URL's scheme to the backend module that serves it, imported only when a
URL of that scheme is used, so an unused transport's modules (and their dependencies) are never
loaded. Each module owns its URL grammar, its command client, its reachability check and the
opening of its backend (the :class:`~eventbus._backends.base.Transport` protocol):

=======================================  ===========================================
``redis://``, ``rediss://``, ``unix://`` :mod:`eventbus._backends.redis` (``RedisBackend``)
``redis+cluster://``, ``rediss+cluster`` :mod:`eventbus._backends.cluster` (``ClusterBackend``)
``redis+sentinel://``, ``rediss+sentinel`` :mod:`eventbus._backends.sentinel` (``SentinelBackend``)
=======================================  ===========================================

``memory://`` (or a ``broker``) runs on :class:`~eventbus._backends.memory.MemoryBackend`: a
process of its own, no URL grammar, nothing to reach. With nothing configured and nothing
answering at the default URL, :func:`open_backend` starts an embedded Redis
(:mod:`eventbus._backends.embedded`) for the run, unless ``settings.embedded`` is False.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eventbus._backends.base import Backend, Transport
from eventbus._backends.tls import check_tls
from eventbus._errors import ConnectError
from eventbus._settings import DEFAULT_MAX_CONNECTIONS, ConnectionSettings
from eventbus._urls import SOURCE_CODE, SOURCE_OPTION, Grammar, ResolvedURL, redact_url
from eventbus._urls import resolve_url as resolve_with
from eventbus._urls import validate_url as validate_with

if TYPE_CHECKING:
    from eventbus._backends.embedded import EmbeddedRedis
    from eventbus._backends.memory import MemoryBroker

__all__ = [
    "Backend",
    "ConnectionSettings",
    "command_client",
    "open_backend",
    "resolve_url",
    "validate_url",
    "wait_until_reachable",
]

log = logging.getLogger("eventbus")

MEMORY_URL = "memory://"


def _server() -> Transport:
    from eventbus._backends import redis

    return redis


def _cluster() -> Transport:
    from eventbus._backends import cluster

    return cluster


def _sentinel() -> Transport:
    from eventbus._backends import sentinel

    return sentinel


# The one place a URL's scheme picks the code that talks to it: the schemes a URL may have are these.
TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "redis": _server,
    "rediss": _server,
    "unix": _server,
    "redis+cluster": _cluster,
    "rediss+cluster": _cluster,
    "redis+sentinel": _sentinel,
    "rediss+sentinel": _sentinel,
}


def transport(url: str) -> Transport:
    """The backend module for ``url``'s scheme (a malformed or unknown scheme: its one-line ConfigError)."""
    load = TRANSPORTS.get(url.partition("://")[0])
    if load is None:
        validate_url(url)  # raises, naming what is wrong with the scheme
        raise AssertionError(f"no transport for a valid URL: {redact_url(url)}")
    return load()


def check_grammar(url: str, where: str, reveal: bool) -> None:
    """``url``'s own grammar, as the backend of its scheme states it (an ``eventbus._urls.Grammar``)."""
    transport(url).check_url(url, where, reveal)


# What URL validation needs to know of the table (eventbus._urls): the schemes, and their grammars.
GRAMMARS: dict[str, Grammar] = dict.fromkeys(TRANSPORTS, check_grammar)


def resolve_url(url: str | None, source: str = SOURCE_OPTION) -> ResolvedURL:
    """Where Redis is (:func:`eventbus._urls.resolve_url`), checked against its scheme's grammar."""
    return resolve_with(url, source, grammars=GRAMMARS)


def validate_url(url: str, where: str = "", *, reveal: bool = True) -> str:
    """``url`` if it is well formed for its scheme, else a one-line ConfigError naming the bad part."""
    return validate_with(url, where, reveal=reveal, grammars=GRAMMARS)


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
    chosen = transport(resolved.url)
    if resolved.explicit or not settings.embedded:
        log.info("connecting to Redis at %s (from %s)", redact_url(resolved.url), resolved.source)
        return await chosen.open_backend(
            resolved.url, settings, source=resolved.source, explicit=resolved.explicit, timeout=settings.connect_timeout
        )
    log.debug("nothing configured: trying %s (from %s) for 0.3s", redact_url(resolved.url), resolved.source)
    try:
        backend = await chosen.open_backend(
            resolved.url, settings, source=resolved.source, explicit=False, timeout=0.3, quiet=True
        )
    except ConnectError as exc:
        log.debug("no Redis at the default URL: %s", exc)
    else:
        log.info(
            "using Redis at %s (from %s; set --url or EVENTBUS_URL to change)",
            redact_url(resolved.url),
            resolved.source,
        )
        return backend
    embedded = await start_embedded()
    log.warning(
        "no Redis at %s and none configured: started an embedded %s at %s for this run. "
        "Publish to it from another shell with: EVENTBUS_URL=%s python -m eventbus publish CHANNEL DATA",
        resolved.url,
        embedded.kind,
        embedded.url,
        embedded.url,
    )
    from eventbus._backends.redis import RedisBackend  # an embedded Redis is one server, whatever the default URL

    return RedisBackend(embedded.url, settings, source=resolved.source, explicit=False, embedded=embedded)


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


def command_client(
    url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, autopipeline: bool | None = None
) -> Any:
    """A command client for ``url`` (a redis.asyncio-compatible one), for producers.

    ``autopipeline``: for a single server (cluster and sentinel clients are redis-py's own, never
    auto-pipelined); None follows $EVENTBUS_AUTOPIPELINE.
    """
    check_tls(url)
    return transport(url).command_client(url, max_connections=max_connections, autopipeline=autopipeline)


async def wait_until_reachable(url: str, timeout: float, *, quiet: bool = False) -> None:
    """PING ``url`` (any seed of a cluster; a sentinel URL's master) until it answers or ``timeout`` passes
    (:class:`ConnectError`)."""
    await transport(url).wait_until_reachable(url, timeout, quiet=quiet)


def reachable(url: str, timeout: float = 0.3) -> bool:
    """Blocking: does anything answer at ``url`` within ``timeout``? (for code outside a loop)."""
    try:
        asyncio.run(wait_until_reachable(url, timeout, quiet=True))
    except ConnectError:
        return False
    return True
