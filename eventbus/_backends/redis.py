"""The backend for one Redis server: ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs.

A transport of the scheme table (:mod:`eventbus._backends`): :func:`check_url` is the grammar of a
server URL, :func:`open_backend` the backend once the server answers; the command client and the
reachability check are the subscriber module's (:mod:`eventbus._backends.subscriber`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import parse_url

from eventbus._backends.base import client_publish
from eventbus._backends.sharded import ShardedSubscriber
from eventbus._backends.subscriber import RedisSubscriber, command_client, wait_until_reachable
from eventbus._errors import ConfigError
from eventbus._history import History, RedisHistory
from eventbus._settings import ConnectionSettings
from eventbus._stats import BusStats
from eventbus._urls import autopipeline_enabled, check_options, intro, split_url

if TYPE_CHECKING:
    from eventbus._backends.embedded import EmbeddedRedis

log = logging.getLogger("eventbus")

__all__ = ["RedisBackend", "check_url", "command_client", "open_backend", "wait_until_reachable"]


def check_url(url: str, where: str, reveal: bool) -> None:
    """The grammar of ``redis://``, ``rediss://`` and ``unix://`` URLs: :class:`ConfigError` naming the bad part.

    redis-py fills in defaults for what it cannot read (``redis:///0`` means localhost, ``/abc``
    means db 0, ``unix://tmp/x.sock`` means ``/x.sock``): refused here instead.
    """
    scheme = url.partition("://")[0]
    start = intro(url, where, reveal)
    parts = split_url(url, start)
    if scheme == "unix":
        if parts.hostname:
            raise ConfigError(
                f"{start}: {parts.hostname!r} is read as a host, not as part of the socket path; "
                f"write unix:///{parts.hostname}{parts.path} (three slashes for an absolute path)"
            )
        if not parts.path:
            raise ConfigError(f"{start}: no socket path; expected unix:///path/to/redis.sock")
    else:
        port_text = parts.netloc.rpartition("@")[2]
        port_text = port_text.rpartition("]")[2] if port_text.startswith("[") else port_text
        if not parts.hostname:
            raise ConfigError(f"{start}: no host; expected {scheme}://host:port/db")
        try:
            port = parts.port
        except ValueError:
            port = None
            bad = port_text.partition(":")[2]
            raise ConfigError(f"{start}: invalid port {bad!r}; expected a number from 1 to 65535") from None
        if port == 0 or (port is None and port_text.endswith(":")):
            raise ConfigError(f"{start}: invalid port {port_text.partition(':')[2]!r}; expected 1 to 65535")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(f"{start}: invalid database number {db!r} in the path; expected /0, /1, ...")
    check_options(url, where, reveal, scheme)
    try:
        parse_url(url)  # the query string's options (db=, socket_timeout=, ...) as redis-py reads them
    except ValueError as exc:
        raise ConfigError(f"{start}: {exc}") from None


class RedisBackend:
    """A command client, the pub/sub subscriber and the sharded one, all on ``url``.

    ``embedded``: the private server started for this run (the backend stops it on closing).
    """

    def __init__(
        self,
        url: str,
        settings: ConnectionSettings,
        *,
        source: str,
        explicit: bool,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.embedded = embedded
        self.source = "embedded" if embedded is not None else source
        self.explicit = explicit and embedded is None
        self.owned = embedded is not None
        self.autopipeline = autopipeline_enabled(settings.autopipeline)
        if not self.autopipeline:
            log.info("auto-pipelining is off: ctx.redis is redis-py's own client")
        self.redis: Any = self.command_client(settings.max_connections)
        self.publish = client_publish(self.redis)
        self.history: History = RedisHistory(self.redis)

    def command_client(self, max_connections: int) -> Any:
        return command_client(self.url, max_connections=max_connections, autopipeline=self.autopipeline)

    def subscriber(self, stats: BusStats) -> RedisSubscriber:
        return RedisSubscriber(self.url, stats, self.settings)

    def sharded_subscriber(self, stats: BusStats) -> ShardedSubscriber:
        return ShardedSubscriber([self.url], stats, self.settings)

    def stream_client(self) -> Any:
        # Its own small pool: a blocking XREADGROUP must not hold a connection handlers wait for.
        return self.command_client(2)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            self.embedded = None

    def kill(self) -> None:
        """Stop what this run started at once (a second signal): the embedded server."""
        if self.embedded is not None:
            self.embedded.stop()


async def open_backend(
    url: str, settings: ConnectionSettings, *, source: str, explicit: bool, timeout: float, quiet: bool = False
) -> RedisBackend:
    """The backend for the server at ``url``, once it answers (within ``timeout``, else ConnectError)."""
    await wait_until_reachable(url, timeout, quiet=quiet)
    return RedisBackend(url, settings, source=source, explicit=explicit)
