"""Redis Sentinel: the master the sentinels name, followed across failovers.

URL form: ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[?db=N]``
(``rediss+sentinel://`` for TLS to the master). The user and password are the master's; sentinels
that need their own go in ``?sentinel_username=...&sentinel_password=...``.

* The subscription connection (:class:`SentinelSubscriber`) asks the sentinels for the current
  master every time it (re)connects, and a second connection hears the sentinels announce a
  failover (``+switch-master``) and makes it reconnect, so it resubscribes on the new master.
* ``ctx.redis`` and the stream client are redis-py's sentinel-managed clients
  (``Sentinel.master_for``): each new connection asks the sentinels for the master, and a
  connection that meets a demoted master (READONLY) is dropped. They are plain
  ``redis.asyncio.Redis`` clients, not the auto-pipelining one the server backend uses, and their
  pool refuses a command beyond ``max_connections`` instead of queueing it.
* Sharded ``@on(..., sharded=True)`` subscribes on the master found at startup; it does not follow
  a failover.

A transport of the scheme table (:mod:`eventbus._backends`): this module owns the sentinel URL's
grammar (:func:`parse_sentinel_url`, :func:`check_url`), its command client, its reachability
check and :func:`open_backend`. :func:`eventbus._urls.redact_url` masks ``sentinel_password`` as it
masks every query option whose name holds "password".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from eventbus._backends.base import Consume
from eventbus._backends.redis import RedisBackend
from eventbus._backends.redispy_internals import close_sentinel, reresolve_master
from eventbus._backends.subscriber import (
    COMMAND_RETRIES,
    COMMAND_RETRY_BASE,
    COMMAND_RETRY_CAP,
    RedisSubscriber,
)
from eventbus._backends.subscriber import wait_until_reachable as wait_until_server_reachable
from eventbus._backoff import Backoff
from eventbus._errors import ConfigError, ConnectError
from eventbus._settings import DEFAULT_MAX_CONNECTIONS, ConnectionSettings
from eventbus._stats import BusStats
from eventbus._tasks import cancel_and_wait
from eventbus._urls import host_port, redact_url, server_url, split_credentials

log = logging.getLogger("eventbus.sentinel")

# -- the URL grammar --------------------------------------------------------------------------

SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}  # the scheme of the master's own URL
# Query options meant for the sentinels themselves, not for the master.
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str  # the master's name, as in ``sentinel monitor <name> ...``
    scheme: str  # "redis" or "rediss": what the master's own URL uses
    username: str | None  # the master's credentials (the sentinels' go in the query string)
    password: str | None
    db: int
    sentinel_username: str | None
    sentinel_password: str | None

    def master_url(self, host: str, port: int) -> str:
        """A plain URL for the master the sentinels named, with this URL's credentials and db."""
        return server_url(self.scheme, self.username, self.password, host, port, self.db)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split ``redis+sentinel://[user:pass@]h1:p1[,h2:p2]/service[?db=N]``; :class:`ConfigError` if malformed.

    The sentinels' own credentials, if they need any, go in ``?sentinel_username=&sentinel_password=``.
    """
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"not a sentinel URL: {shown} (expected redis+sentinel://host:port,.../service)")
    intro = f"invalid sentinel URL {shown}"
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    username, password, hosts = split_credentials(netloc)
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        node = host_port(item, 26379)  # the sentinels' default port
        if node is None or not 0 < node[1] < 65536:
            raise ConfigError(f"{intro}: invalid sentinel {item!r}; expected host:port")
        sentinels.append(node)
    service, slash, db_text = unquote(path).partition("/")
    if not service:
        raise ConfigError(f"{intro}: no service name; expected {scheme}://host:port/service_name")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        options[unquote(key)] = unquote(value)
    if slash and db_text:
        if "db" in options:
            raise ConfigError(f"{intro}: the database is given twice (/{db_text} and ?db=); keep one")
        options["db"] = db_text
    unknown = sorted(set(options) - {"db", *SENTINEL_OPTIONS})
    if unknown:
        raise ConfigError(f"{intro}: unknown option {unknown[0]!r}; expected db, sentinel_username, sentinel_password")
    db_value = options.get("db", "0")
    if not db_value.isdigit():
        raise ConfigError(f"{intro}: invalid database number {db_value!r}; expected ?db=0, ?db=1, ...")
    return SentinelURL(
        tuple(sentinels),
        service,
        SCHEMES[scheme],
        username,
        password,
        int(db_value),
        options.get("sentinel_username") or None,
        options.get("sentinel_password") or None,
    )


def check_url(url: str, where: str, reveal: bool) -> None:
    """:class:`ConfigError` naming the bad part of a sentinel URL (the sentinels, the service, an option)."""
    parse_sentinel_url(url)


# -- connecting -------------------------------------------------------------------------------

# How long one question to one sentinel may take.
SENTINEL_TIMEOUT = 1.0
# Where sentinels announce a failover: "<name> <old-ip> <old-port> <new-ip> <new-port>".
SWITCH_CHANNEL = "+switch-master"


def sentinel_manager(parsed: SentinelURL) -> Sentinel:
    """redis-py's Sentinel for ``parsed``: the sentinels' own auth, and the master's for its clients."""
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}
    if parsed.sentinel_password is not None:
        sentinel_kwargs["password"] = parsed.sentinel_password
        sentinel_kwargs["username"] = parsed.sentinel_username
    return Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis-py 8.2 on
        list(parsed.sentinels),
        sentinel_kwargs=sentinel_kwargs,
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
        ssl=parsed.scheme == "rediss",
    )


async def discover_master_url(parsed: SentinelURL, sentinel: Sentinel) -> str:
    """The current master's plain URL (with the URL's credentials), or :class:`MasterNotFoundError`."""
    host, port = await sentinel.discover_master(parsed.service)
    return parsed.master_url(str(host), int(port))


async def wait_until_reachable(url: str, timeout: float, *, quiet: bool = False) -> str:
    """Until the sentinels name a master that answers PING; its URL, else one-line :class:`ConnectError`.

    A service name that every reachable sentinel says it does not know fails at once: waiting
    cannot fix a typo. Sentinels that do not answer, or a master that is down, are waited for.
    """
    parsed = parse_sentinel_url(url)
    sentinel = sentinel_manager(parsed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.1
    attempt = 0
    try:
        while True:
            attempt += 1
            try:
                master = await discover_master_url(parsed, sentinel)
            except MasterNotFoundError as exc:
                if await _nobody_knows(parsed, sentinel):
                    raise ConnectError(
                        f"no sentinel at {redact_url(url)} monitors a master named {parsed.service!r} "
                        "(check the service name: the one in `sentinel monitor <name> ...`)"
                    ) from None
                if loop.time() >= deadline:
                    raise ConnectError(
                        f"the sentinels at {redact_url(url)} named no master {parsed.service!r} within "
                        f"{timeout:.0f}s ({'unreachable' if 'Error' in str(exc) else 'master down'})"
                    ) from None
                if not quiet:
                    log.warning(
                        "the sentinels at %s name no master %r yet (attempt %d); retrying for %.0fs more",
                        redact_url(url),
                        parsed.service,
                        attempt,
                        deadline - loop.time(),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            remaining = max(deadline - loop.time(), 1.0)
            await wait_until_server_reachable(master, remaining, quiet=quiet)
            log.info("sentinels at %s name %s as master %r", redact_url(url), redact_url(master), parsed.service)
            return master
    finally:
        await close_sentinel(sentinel)


async def _nobody_knows(parsed: SentinelURL, sentinel: Sentinel) -> bool:
    # True when at least one sentinel answered and none of those that did monitors the service.
    answered = False
    for node in sentinel.sentinels:
        try:
            masters = await node.sentinel_masters()
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            continue
        if parsed.service in masters:
            return False
        answered = True
    return answered


class SentinelSubscriber(RedisSubscriber):
    """The subscription connection; each (re)connect first asks the sentinels for the master.

    A failover does not necessarily close the connection to the old master (it may stay up as a
    replica, hearing nothing the new master's publishers send), so a second connection listens
    to the sentinels' ``+switch-master`` announcements and drops the subscription connection
    when its master is replaced: the ordinary reconnect then resolves and resubscribes.
    """

    def __init__(
        self,
        url: str,
        master_url: str,
        stats: BusStats,
        settings: ConnectionSettings | None = None,
        *,
        on_switch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(master_url, stats, settings)
        self.parsed = parse_sentinel_url(url)
        self.sentinel = sentinel_manager(self.parsed)
        # Called on a failover, so the command clients drop their connections to the old master too.
        self.on_switch = on_switch
        self._switches: asyncio.Task[None] | None = None

    async def start(self, consume: Consume, channels: Sequence[str], patterns: Sequence[str]) -> None:
        await super().start(consume, channels, patterns)
        self._switches = asyncio.create_task(self._follow_switches(), name="eventbus:sentinel-switches")

    async def stop(self) -> None:
        # Its PubSub.get_message can swallow a cancellation (a stop right after the start hung).
        if self._switches is not None and await cancel_and_wait([self._switches]):
            log.warning("the listener for sentinel failovers did not stop; abandoning it")
        await super().stop()
        await close_sentinel(self.sentinel)

    async def _connect_and_subscribe(self) -> None:
        # A MasterNotFoundError (sentinels unreachable, or mid-failover) fails this attempt; the
        # reconnect loop logs it and tries again with backoff, as for a server that is down.
        master = await discover_master_url(self.parsed, self.sentinel)
        if master != self.url:
            log.info("master %r is now at %s", self.parsed.service, redact_url(master))
            self._use(master)
        await super()._connect_and_subscribe()

    def _use(self, url: str) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.params = dict(parse_url(url))

    async def _follow_switches(self) -> None:
        backoff = Backoff(0.1, self.reconnect_max_delay)
        turn = 0
        while not self._stopping:
            host, port = self.parsed.sentinels[turn % len(self.parsed.sentinels)]
            turn += 1
            try:
                await self._listen_for_switches(host, port)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: listen on the next sentinel later
                log.info("lost the sentinel at %s:%d (%s); trying the next", host, port, str(exc) or type(exc))
                await asyncio.sleep(backoff.next())

    async def _listen_for_switches(self, host: str, port: int) -> None:
        # No socket timeout: the channel is silent between failovers; the health check pings.
        client = aioredis.Redis(
            host=host,
            port=port,
            username=self.parsed.sentinel_username,
            password=self.parsed.sentinel_password,
            socket_connect_timeout=SENTINEL_TIMEOUT,
            health_check_interval=max(int(self.ping_interval), 1),
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(SWITCH_CHANNEL)
            while True:
                message = await pubsub.get_message(timeout=self.ping_interval)
                if message is None:
                    await pubsub.ping()  # a dead sentinel fails here, not silently
                    continue
                if message.get("type") != "message":
                    continue  # the PONG to our ping
                # "<name> <old-ip> <old-port> <new-ip> <new-port>"
                name, *_, new_host, new_port = bytes(message["data"]).decode().split()
                protocol = self._protocol
                if name == self.parsed.service and protocol is not None:
                    log.warning("sentinel: master %r switched to %s:%s; resubscribing there", name, new_host, new_port)
                    protocol.close()
                if name == self.parsed.service and self.on_switch is not None:
                    await self.on_switch()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis-py 8.2 on
            await client.aclose()


class SentinelBackend(RedisBackend):
    """``redis+sentinel://``: ``url`` stays the sentinel URL; ``master_url`` is the master found at start."""

    def __init__(self, url: str, master_url: str, settings: ConnectionSettings, *, source: str, explicit: bool):
        self.parsed = parse_sentinel_url(url)
        self.sentinel = sentinel_manager(self.parsed)
        self.master_url = master_url
        self._clients: list[aioredis.Redis] = []
        super().__init__(url, settings, source=source, explicit=explicit)

    def command_client(self, max_connections: int) -> Any:
        client = sentinel_client(self.sentinel, self.parsed.service, max_connections=max_connections)
        self._clients.append(client)
        return client

    def subscriber(self, stats: BusStats) -> SentinelSubscriber:
        return SentinelSubscriber(self.url, self.master_url, stats, self.settings, on_switch=self._follow_switch)

    async def _follow_switch(self) -> None:
        # An idle pooled connection to the old master would keep writing there until the sentinels
        # demote it (seconds later): re-resolving drops the idle ones (redis-py's pool does that
        # when the address changes); a command in flight finishes, or fails READONLY and retries.
        for client in self._clients:
            try:
                await reresolve_master(client)
            except Exception as exc:  # noqa: BLE001 - the next connect re-resolves anyway
                log.info("could not re-resolve the master for a command client: %s", exc)

    def sharded_subscriber(self, stats: BusStats) -> Any:
        from eventbus._backends.sharded import ShardedSubscriber

        return ShardedSubscriber([self.master_url], stats, self.settings)

    async def aclose(self) -> None:
        await super().aclose()
        await close_sentinel(self.sentinel)


def sentinel_client(
    sentinel: Sentinel, service: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> aioredis.Redis:
    """redis-py's client for the service's master, re-resolved on reconnect, with ctx.redis's retries."""
    client: aioredis.Redis = sentinel.master_for(
        service,
        redis_class=aioredis.Redis,
        max_connections=max_connections,
        # As the server backend's client: ride out a failover of a few seconds.
        retry=Retry(ExponentialWithJitterBackoff(cap=COMMAND_RETRY_CAP, base=COMMAND_RETRY_BASE), COMMAND_RETRIES),
        retry_on_error=[OSError],
    )
    return client


def command_client(
    url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, autopipeline: bool | None = None
) -> aioredis.Redis:
    """A command client for producers (``eventbus publish``): follows the master across failovers.

    ``autopipeline`` does not apply: the client is redis-py's sentinel-managed one (module docstring).
    """
    parsed = parse_sentinel_url(url)
    return sentinel_client(sentinel_manager(parsed), parsed.service, max_connections=max_connections)


async def open_backend(
    url: str, settings: ConnectionSettings, *, source: str, explicit: bool, timeout: float, quiet: bool = False
) -> SentinelBackend:
    """The backend for the master the sentinels at ``url`` name, reachable when returned."""
    master = await wait_until_reachable(url, timeout, quiet=quiet)
    return SentinelBackend(url, master, settings, source=source, explicit=explicit)
