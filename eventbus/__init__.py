"""eventbus: event processing on Redis Pub/Sub with plain async handlers.

    from eventbus import on, on_pattern

    @on("purchase_orders")
    async def count(msg, ctx):
        await ctx.redis.incr("orders_seen")

Run a module of handlers with ``python -m eventbus run mymod``.
"""

# First of all: whether the compiled or the pure-Python hot path is imported (eventbus._hotpath).
import eventbus._hotpath  # noqa: F401  # isort: split
from eventbus._batch_options import Batch
from eventbus._channels import Channel
from eventbus._context import Context, ServerInfo
from eventbus._deadletter import DeadLetter, DeadLetterStore
from eventbus._errors import (
    BatchFailed,
    ConfigError,
    ConnectError,
    EventbusError,
    LoadError,
    NoResponderError,
    PayloadError,
    Reject,
    RemoteError,
    RemoteRejected,
    RequestError,
    RequestInterruptedError,
    RequestTimeoutError,
    SubscribeError,
)
from eventbus._masking import payload_mask
from eventbus._message import Message
from eventbus._publisher import Publisher
from eventbus._replay import ReplayReport, replay_dead_letters, replay_verdict
from eventbus._router import Router
from eventbus._runner import Runner, connect, run
from eventbus._stats import BusStats, HandlerStats
from eventbus._streams import StreamMessage
from eventbus._subscription import on, on_pattern, on_shutdown, on_startup, on_stream

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchFailed",
    "BusStats",
    "Channel",
    "ConfigError",
    "ConnectError",
    "Context",
    "DeadLetter",
    "DeadLetterStore",
    "EventbusError",
    "HandlerStats",
    "LoadError",
    "Message",
    "NoResponderError",
    "PayloadError",
    "Publisher",
    "Reject",
    "RemoteError",
    "RemoteRejected",
    "ReplayReport",
    "RequestError",
    "RequestInterruptedError",
    "RequestTimeoutError",
    "Router",
    "Runner",
    "ServerInfo",
    "StreamMessage",
    "SubscribeError",
    "__version__",
    "connect",
    "on",
    "on_pattern",
    "on_shutdown",
    "on_startup",
    "on_stream",
    "payload_mask",
    "replay_dead_letters",
    "replay_verdict",
    "run",
]
