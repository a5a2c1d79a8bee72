"""The Redis backend: a command client for handlers and one multiplexed subscription connection.

The subscription connection bypasses redis-py: an ``asyncio.Protocol`` feeds every socket read to
hiredis and routes each parsed message synchronously into the handlers' inboxes. That is what
makes eager reading cheap (no task or future per message), and eager reading is what keeps Redis
from disconnecting a subscriber whose handlers fall behind (``client-output-buffer-limit pubsub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from eventbus._backends.base import Consume
from eventbus._backends.resp import chunks, pack_command
from eventbus._backends.tls import handshake_hint, speaks_tls, ssl_context, tls_url
from eventbus._backoff import Backoff
from eventbus._errors import ConnectError, SubscribeError
from eventbus._flow import ReadGate
from eventbus._settings import DEFAULT_MAX_CONNECTIONS, ConnectionSettings
from eventbus._stats import BusStats
from eventbus._tasks import cancel_and_wait
from eventbus._urls import autopipeline_enabled, redact_url

log = logging.getLogger("eventbus.redis")

SUBSCRIBE_CHUNK = 1000
# ctx.redis retries a command for up to ~10 s of outage (the sum of the capped backoffs).
COMMAND_RETRIES = 12
COMMAND_RETRY_BASE = 0.05
COMMAND_RETRY_CAP = 1.0


def no_client_setinfo() -> dict[str, Any]:
    """redis-py keyword arguments that keep its connections from sending ``CLIENT SETINFO``.

    redis-py names itself on every new connection; Redis 7.2+ checks that against the ACL, so a
    least-privilege user (docs/security.md) is denied it and the ACL LOG gains an entry per
    connection, and a 7.0 server cannot even grant it (``+client|setinfo`` is an unknown command
    there). eventbus names only its subscription connection, with ``CLIENT SETNAME``.
    """
    try:
        import redis.driver_info  # noqa: F401 - redis-py 7.1+: lib_name/lib_version are deprecated there
    except ImportError:
        return {"lib_name": None, "lib_version": None}
    return {"driver_info": None}


def command_client(
    url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, autopipeline: bool | None = None
) -> aioredis.Redis:
    """A shared redis.asyncio client whose pool waits for a free connection instead of failing.

    A plain ConnectionPool raises "Too many connections" when thousands of handlers call at once;
    BlockingConnectionPool with no timeout queues them, bounding the server's connection count.

    redis-py gives ``Redis(host=...)`` a retry policy by default, but a client built on an explicit
    pool (as here, or through ``from_url``) gets none: the first command after a server restart
    would fail. So the pool gets redis-py's own default policy explicitly: exponential backoff with
    jitter on connection errors and timeouts, which rides out a restart of a few seconds.

    Plain commands are auto-pipelined (eventbus.autopipeline): those issued in one loop turn share
    one write and one read on a multiplexed connection, which counts towards ``max_connections``.
    ``autopipeline=False`` (None: :func:`~eventbus._urls.autopipeline_enabled` decides) gives a
    plain ``redis.asyncio.Redis`` instead, which uses no redis-py internals.
    """
    options: dict[str, Any] = {
        "retry": Retry(ExponentialWithJitterBackoff(cap=COMMAND_RETRY_CAP, base=COMMAND_RETRY_BASE), COMMAND_RETRIES),
        "retry_on_error": [OSError],
        **no_client_setinfo(),
    }
    if not autopipeline_enabled(autopipeline):
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=None, **options)
        return aioredis.Redis.from_pool(pool)
    from eventbus._backends.autopipeline import autopipeline_client

    return autopipeline_client(url, max_connections=max_connections, **options)


class StreamTransport(Protocol):
    """What the subscription connection uses of its transport.

    Typed by what it does, not by class: uvloop's transports implement asyncio's transport
    interface without subclassing ``asyncio.Transport``, so an ``isinstance`` check would refuse
    them (it did: every connection failed under uvloop).
    """

    def write(self, data: bytes) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class _Pending:
    """A command sent on the subscription connection, waiting for ``count`` replies."""

    __slots__ = ("count", "future", "replies")

    def __init__(self, count: int, future: asyncio.Future[list[Any]]) -> None:
        self.count = count
        self.future = future
        self.replies: list[Any] = []


class _SubscriptionProtocol(asyncio.Protocol):
    def __init__(self, consume: Consume, gate: ReadGate) -> None:
        self.gate = gate
        # The sink, passed explicitly: every read's replies go to it in one call.
        self.consume = consume
        self.reader = hiredis.Reader()
        self.pending: deque[_Pending] = deque()
        self.transport: StreamTransport | None = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.bytes_received = 0
        # When the server was last heard from: a half-open connection's gap starts there.
        self.last_read = time.monotonic()
        self.lost_at: float | None = None
        self.reading_paused = False
        self.closing = False  # we closed it (stop, ping deadline, a failover): not the server
        self.closed_by_server = False  # the connection ended without our asking (EOF, reset)
        # Evidence that Redis dropped us for its output-buffer limit, in words for the log (None: none).
        self.overflow_evidence: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection/create_unix_connection always hand a protocol a stream transport (the
        # loop's own class; see StreamTransport).
        self.transport = cast(StreamTransport, transport)

    # Pausable, for the read gate of overflow="pause" (attached once subscribed).
    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self.reading_paused = False

    @property
    def paused(self) -> bool:
        return self.gate.paused

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.last_read = time.monotonic()  # once per socket read, not per message
        self.reader.feed(data)
        try:
            for reply in self.consume(self.reader):
                self._reply(reply)
        except hiredis.ProtocolError as exc:
            log.error("protocol error on the subscription connection, reconnecting: %s", exc)
            self.close(exc)
        except Exception as exc:
            log.exception("internal error while routing a message; the connection is reset")
            self.close(exc)

    def _reply(self, reply: Any) -> None:
        if not self.pending:
            log.debug("unexpected reply on the subscription connection: %r", reply)
            return
        head = self.pending[0]
        if isinstance(reply, hiredis.ReplyError):
            self.pending.popleft()
            if not head.future.done():
                head.future.set_exception(reply)
            return
        head.replies.append(reply)
        head.count -= 1
        if head.count <= 0:
            self.pending.popleft()
            if not head.future.done():
                head.future.set_result(head.replies)

    def send(self, *args: bytes | str | int, replies: int = 1) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(ConnectionError("subscription connection is closed"))
            return future
        self.pending.append(_Pending(replies, future))
        self.transport.write(pack_command(*args))
        return future

    def close(self, exc: Exception | None = None) -> None:
        self.closing = True
        self.gate.detach(self)
        if self.transport is not None:
            self.transport.abort()
        self._fail_pending(exc or ConnectionError("subscription connection closed"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.detach(self)
        self.closed_by_server = not self.closing
        if self.closing:
            self.lost_at = time.monotonic()
        elif self.reading_paused:
            # Dropped while we did not read (overflow="pause"), most likely past the server's
            # output-buffer limit: what Redis held for us since our last read is lost too.
            self.lost_at = self.last_read
            self.overflow_evidence = "while reading was paused"
            exc = ConnectionError(f"closed while reading was paused (output-buffer limit?): {exc or 'EOF'}")
        elif self.reader.has_data():
            # Cut off in the middle of a reply: Redis closes a connection without finishing what it
            # was writing when it frees the client for passing its output-buffer limit (with a reset
            # rather than an EOF when a PING of ours was still unread).
            received = self.reader.len()
            self.lost_at = self.last_read
            self.overflow_evidence = f"while a message was arriving ({received} bytes of it received)"
            exc = ConnectionError(f"by the server {self.overflow_evidence}: {exc or 'EOF'}")
        else:
            self.lost_at = time.monotonic()
        self._fail_pending(exc or ConnectionError("connection closed by the server"))
        if not self.lost.done():
            self.lost.set_result(exc)

    def _fail_pending(self, exc: Exception) -> None:
        while self.pending:
            pending = self.pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(exc)
                pending.future.exception()  # mark retrieved: the caller may be gone


class RedisSubscriber:
    """Keeps one subscription connection alive: connect, subscribe, ping, reconnect, resubscribe."""

    def __init__(
        self,
        url: str,
        stats: BusStats,
        settings: ConnectionSettings | None = None,
    ) -> None:
        settings = settings if settings is not None else ConnectionSettings()
        self.url = url
        self.settings = settings
        # Shared with the handlers' workers: overflow="pause" stops reading through it.
        self.gate = settings.gate
        self.safe_url = redact_url(url)
        self.stats = stats
        self.ping_interval = settings.ping_interval
        self.ping_timeout = settings.ping_timeout
        # How long any step of (re)connecting may wait for the server; the ping deadline, but
        # never so short that a slow TLS handshake or a large SUBSCRIBE batch cannot finish.
        self.answer_timeout = max(settings.ping_timeout, 2.0)
        self.reconnect_max_delay = settings.reconnect_max_delay
        self.params: dict[str, Any] = dict(parse_url(url))
        self.channels: list[str] = []
        self.patterns: list[str] = []
        self._consume: Consume | None = None
        self._protocol: _SubscriptionProtocol | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        # Told after each reconnect has resubscribed: recoverable channels read what they missed.
        self.resubscribed: list[Callable[[], None]] = []
        # Told when the connection is found lost (its reason): a requester fails the requests
        # whose replies it would have carried rather than let them wait for their timeout.
        self.lost_listeners: list[Callable[[str], None]] = []

    async def start(self, consume: Consume, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """Connect and subscribe once (errors propagate), then keep the connection alive."""
        self._consume = consume
        self.channels = list(channels)
        self.patterns = list(patterns)
        await self._connect_and_subscribe()
        self._supervisor = asyncio.create_task(self._supervise(), name="eventbus:subscriber")

    async def add_channels(self, channels: Sequence[str]) -> None:
        """Subscribe more channels on the running connection (a requester's reply channel, at its
        first request); they are resubscribed on every reconnect like the others. SubscribeError
        if Redis refuses (an ACL): then they are not kept."""
        new = [name for name in channels if name not in self.channels]
        if not new:
            return
        self.channels.extend(new)  # first: a reconnect from now on subscribes them too
        protocol = self._protocol
        if protocol is None or not self.connected.is_set():
            return  # down: the reconnect under way subscribes them (the caller waits for it)
        try:
            async with asyncio.timeout(self.answer_timeout):
                await protocol.send("SUBSCRIBE", *new, replies=len(new))
        except hiredis.ReplyError as exc:
            self.channels = [name for name in self.channels if name not in new]
            raise SubscribeError(f"Redis refused SUBSCRIBE to {', '.join(map(repr, new[:5]))}: {exc}") from None
        except (ConnectionError, OSError, TimeoutError):
            pass  # the connection is being replaced: its resubscription includes them

    async def stop(self) -> None:
        """Stop reading and close the connection; messages already in inboxes stay there."""
        self._stopping = True
        if self._supervisor is not None:
            # Asked until it ends: on Python 3.11, asyncio.wait_for whose timeout expires as the
            # cancellation arrives swallows the cancellation (the ping wait in _watch), and the
            # supervisor would go on watching a connection nobody closes.
            await cancel_and_wait([self._supervisor])
        if self._protocol is not None:
            self._protocol.close()
        self.connected.clear()

    def is_connected(self) -> bool:
        return self.connected.is_set()

    def problems(self) -> list[str]:
        """Why this connection cannot deliver now (empty: it can), for readiness."""
        return [] if self.connected.is_set() else ["subscription connection down (reconnecting and resubscribing)"]

    # -- connecting ---------------------------------------------------------------------------

    async def _open(self) -> _SubscriptionProtocol:
        assert self._consume is not None
        loop = asyncio.get_running_loop()
        consume = self._consume
        params = self.params
        gate = self.gate

        def factory() -> _SubscriptionProtocol:
            return _SubscriptionProtocol(consume, gate)

        # A server that accepts TCP but never answers (stopped, or a blackholing middlebox) must
        # fail the attempt, not hang it: every step of connecting has the answer deadline.
        async with asyncio.timeout(self.answer_timeout):
            if "path" in params:
                _, protocol = await loop.create_unix_connection(factory, params["path"])
            else:
                use_tls = params.get("connection_class") is aioredis.SSLConnection
                host = params.get("host", "localhost")
                _, protocol = await loop.create_connection(
                    factory,
                    host,
                    params.get("port", 6379),
                    ssl=ssl_context(params) if use_tls else None,
                    server_hostname=host if use_tls else None,
                )
        try:
            async with asyncio.timeout(self.answer_timeout):
                if params.get("password"):
                    username = params.get("username")
                    auth = (username, params["password"]) if username else (params["password"],)
                    try:
                        await protocol.send("AUTH", *auth)
                    except hiredis.ReplyError as exc:
                        raise credentials_refused(self.url, str(exc)) from None
                # A name makes the connection easy to find in CLIENT LIST; an ACL may forbid it.
                with contextlib.suppress(hiredis.ReplyError):
                    await protocol.send("CLIENT", "SETNAME", f"eventbus-sub-{os.getpid()}")
        except BaseException:
            protocol.close()
            raise
        return protocol

    async def _connect_and_subscribe(self) -> None:
        protocol = await self._open()
        try:
            await self._subscribe(protocol)
        except BaseException:
            protocol.close()
            raise
        self._protocol = protocol
        # Only now: a connection paused before its SUBSCRIBE confirmations were read would never
        # finish subscribing. One that (re)connects while a handler is over budget starts paused.
        self.gate.attach(protocol)
        self.connected.set()
        log.debug(
            "subscriptions confirmed on %s: %d channel(s)%s, %d pattern(s)%s",
            self.safe_url,
            len(self.channels),
            _some(self.channels),
            len(self.patterns),
            _some(self.patterns),
        )

    async def _subscribe(self, protocol: _SubscriptionProtocol) -> None:
        for command, names in (("SUBSCRIBE", self.channels), ("PSUBSCRIBE", self.patterns)):
            futures = [
                (batch, protocol.send(command, *batch, replies=len(batch))) for batch in chunks(names, SUBSCRIBE_CHUNK)
            ]
            for batch, future in futures:
                try:
                    async with asyncio.timeout(self.answer_timeout):
                        await future
                except hiredis.ReplyError as exc:
                    refused = await self._find_refused(protocol, command, batch)
                    raise SubscribeError(
                        f"Redis refused {command} to {', '.join(map(repr, refused or batch[:5]))}: {exc}"
                    ) from None

    @staticmethod
    async def _find_refused(protocol: _SubscriptionProtocol, command: str, batch: list[str]) -> list[str]:
        # One SUBSCRIBE with many channels fails as a whole; ask one by one to name the culprits.
        refused = []
        for name in batch:
            try:
                await protocol.send(command, name)
            except hiredis.ReplyError:
                refused.append(name)
        return refused

    # -- staying connected --------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                await self._replace_when_lost()
            except Exception:
                # The supervisor is all that keeps the subscription alive: it must not die quietly.
                log.exception("internal error while supervising the subscription connection; retrying")
                await asyncio.sleep(1.0)

    async def _replace_when_lost(self) -> None:
        protocol = self._protocol
        assert protocol is not None
        reason, lost_at = await self._watch(protocol)
        if self._stopping:
            return
        self.connected.clear()
        protocol.close()
        for listener in self.lost_listeners:
            listener(reason)
        log.warning(
            "subscription connection to %s lost (%s); reconnecting. Pub/sub is at-most-once: "
            "messages published until the reconnect are lost",
            self.safe_url,
            reason,
        )
        attempts = await self._reconnect()
        for told in self.resubscribed:
            told()
        evidence = protocol.overflow_evidence
        if evidence is None and protocol.closed_by_server and attempts == 1:
            # Closed by a server that answered again at once: not a restart nor a network failure.
            # Redis 7.0 says nothing to the client it drops for its output-buffer limit (not a byte
            # of the message that passed it is written) and keeps no statistic of it, so this is
            # the evidence there is; an operator's CLIENT KILL looks the same.
            evidence = "and answered again at once"
        if evidence is not None:
            # What Redis dropped with the connection was queued since our last read: the gap
            # starts there, so the message that passed the limit is inside it.
            lost_at = min(lost_at, protocol.last_read)
            self.stats.output_buffer_closes += 1
        gap = time.monotonic() - lost_at
        self.stats.reconnects += 1
        self.stats.gap_seconds += gap
        log.warning(
            "reconnected to %s after a gap of %.1fs (messages published in it are lost%s, except on "
            "recoverable channels, which read them back); resubscribed %d channel(s) and %d pattern(s)",
            self.safe_url,
            gap,
            ", counted from the last read: it includes what Redis dropped with the connection" if evidence else "",
            len(self.channels),
            len(self.patterns),
        )
        if evidence is not None:
            log.warning(
                "Redis at %s closed the subscription connection %s: most likely its client-output-buffer-limit "
                "pubsub, which by default drops a subscriber with more than 32 MB waiting (one message that "
                "large, or a backlog); keep payloads small (store a large body in a key and publish its id) "
                "or raise the limit on the server; an operator's CLIENT KILL looks the same",
                self.safe_url,
                evidence,
            )

    async def _watch(self, protocol: _SubscriptionProtocol) -> tuple[str, float]:
        """Why the connection must be replaced (closed, or silent past the ping deadline), and since when."""
        while True:
            try:
                exc = await asyncio.wait_for(asyncio.shield(protocol.lost), self.ping_interval)
            except TimeoutError:
                pass
            else:
                return (f"closed: {exc}" if exc else "closed by the server"), protocol.lost_at or time.monotonic()
            if protocol.paused:
                # We stopped reading on purpose (overflow="pause"), so the PONG would queue behind
                # the backlog Redis holds for us: do not wait for it. But a paused connection reads
                # nothing, not even the close when Redis drops us past its output-buffer limit. The
                # PING still goes out: the kernel answers data sent to a closed socket with a reset,
                # the next write fails, and the wait above sees the connection lost.
                protocol.send("PING")
                continue
            before = protocol.bytes_received
            pong = protocol.send("PING")
            try:
                await asyncio.wait_for(pong, self.ping_timeout)
            except TimeoutError:
                # Bytes that arrived meanwhile prove the link is alive even if the PONG is queued
                # behind a backlog of messages.
                if protocol.bytes_received == before and not protocol.paused:
                    reason = f"no answer to PING within {self.ping_timeout:.1f}s (half-open connection?)"
                    return reason, protocol.last_read
            except hiredis.ReplyError:
                pass  # an error reply (e.g. LOADING) is still an answer: the link is alive
            except (ConnectionError, OSError) as exc:
                return f"closed: {exc}", protocol.lost_at or time.monotonic()

    async def _reconnect(self) -> int:
        """Reconnect and resubscribe, retrying with backoff; returns how many attempts it took."""
        backoff = Backoff(0.1, self.reconnect_max_delay)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._connect_and_subscribe()
                return attempt
            except SubscribeError as exc:
                log.error("resubscribe failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the answer is to try again later
                log.info(
                    "reconnect attempt %d to %s failed: %s", attempt, self.safe_url, str(exc) or type(exc).__name__
                )
            # Full jitter keeps a fleet of subscribers from reconnecting in lockstep.
            pause = backoff.next()
            log.debug("reconnect attempt %d to %s in %.2fs", attempt + 1, self.safe_url, pause)
            await asyncio.sleep(pause)


def _some(names: Sequence[str], shown: int = 5) -> str:
    # A process may subscribe 10,000 channels: name a few, not all of them, in one log line.
    if not names:
        return ""
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return " (" + ", ".join(repr(n) for n in names[:shown]) + more + ")"


def _auth_args(url: str) -> tuple[str, ...]:
    params = parse_url(url)
    password, username = params.get("password"), params.get("username")
    if not password:
        return ()
    return (username, password) if username else (password,)


def credentials_refused(url: str, reply: str) -> ConnectError:
    """One line saying which credential Redis refused: the user name, never the password."""
    params = parse_url(url)
    user = params.get("username") or "default"
    where = f"Redis at {redact_url(url)}"
    if "without any password configured" in reply or "no password is set" in reply:
        return ConnectError(
            f"{where} has no password set for user {user!r}, but the URL gives one: "
            "remove it from the URL, or set one on the server"
        )
    if not params.get("password"):
        return ConnectError(f"{where} requires a password: give it in the URL (redis://user:password@host:port/db)")
    return ConnectError(
        f"{where} refused the password of user {user!r} (a wrong password, or the user is unknown or disabled)"
    )


def _is_certificate_error(exc: BaseException) -> bool:
    """True if ``exc`` (or what it wraps) is a TLS certificate failure: verify failed, cert required."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError) or (
            isinstance(seen, ssl.SSLError) and "CERTIFICATE" in str(seen).upper()
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return "[SSL:" in str(exc) and "CERTIFICATE" in str(exc).upper()


def _cut_off(exc: BaseException) -> bool:
    """The server closed or reset the connection (rather than refusing it, or timing out)."""
    seen: BaseException | None = exc
    for _ in range(5):  # what it wraps, a few levels down (a chain may loop)
        if seen is None:
            break
        if isinstance(seen, ConnectionResetError) or "closed by server" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def wait_until_reachable(url: str, timeout: float, *, quiet: bool = False) -> None:
    """PING ``url`` until it answers or ``timeout`` passes (then :class:`ConnectError`)."""
    # No client-level retries: this loop is the retry policy, and it logs each attempt.
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 0), **no_client_setinfo()
    )
    auth = _auth_args(url)
    deadline = time.monotonic() + timeout
    delay = 0.1
    attempt = 0
    asked_tls = False
    try:
        while True:
            attempt += 1
            try:
                await client.ping()
                if auth:
                    # redis-py shrugs off a password the server does not have; the subscription
                    # connection would not, so check the credentials here, where it is one line.
                    await client.auth(auth[-1], auth[0] if len(auth) == 2 else None)
                return
            except (aioredis.AuthenticationError, aioredis.AuthenticationWrongNumberOfArgsError) as exc:
                raise credentials_refused(url, str(exc)) from None
            except aioredis.ResponseError as exc:
                if auth and "AUTH" in str(exc).upper():
                    raise credentials_refused(url, str(exc)) from None
                raise ConnectError(f"Redis at {redact_url(url)} answered with an error: {exc}") from None
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                if _is_certificate_error(exc):
                    # A certificate problem is configuration, not an outage: retrying cannot help.
                    raise ConnectError(
                        f"TLS handshake with Redis at {redact_url(url)} failed: {str(exc).rstrip('.')}; "
                        f"{handshake_hint(exc, url)}"
                    ) from None
                if not asked_tls and _cut_off(exc) and url.startswith("redis://"):
                    # A TLS port resets a client that speaks plain RESP to it: ask the port once.
                    asked_tls = True
                    params = parse_url(url)
                    if await speaks_tls(params.get("host", "localhost"), params.get("port", 6379)):
                        raise ConnectError(
                            f"Redis at {redact_url(url)} speaks TLS on that port: use {tls_url(url)} "
                            "(with ?ssl_ca_certs=/path/to/ca.crt unless a public CA signed its certificate)"
                        ) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectError(
                        f"Redis at {redact_url(url)} did not answer within {timeout:.0f}s: {exc}"
                    ) from None
                if not quiet:
                    log.warning(
                        "Redis at %s is not answering (attempt %d: %s); retrying for %.0fs more",
                        redact_url(url),
                        attempt,
                        exc,
                        remaining,
                    )
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 2.0)
    finally:
        await client.aclose()
