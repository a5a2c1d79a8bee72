"""Handlers that fail until told otherwise, for the dead-letter and replay tests.

The tests run this module in-process (and flip ``healthy``) and name it to the CLI as
``--module sample_apps.failing``, which judges replays against its subscriptions.
"""

from eventbus import Context, Message, StreamMessage, on, on_pattern, on_stream

healthy = False
seen: list[tuple[str, str, bytes]] = []  # (handler, channel or stream, payload)


def _handle(name: str, msg: Message) -> None:
    if not healthy:
        raise RuntimeError("payment provider down")
    seen.append((name, msg.channel, msg.data))


@on("payments")
async def pay(msg: Message, ctx: Context) -> None:
    _handle("pay", msg)


@on_pattern("audit.*")
async def audit(msg: Message, ctx: Context) -> None:
    _handle("audit", msg)


@on_stream("refunds", group="accounting", block=0.1, max_deliveries=1)
async def refund(msg: StreamMessage, ctx: Context) -> None:
    _handle("refund", msg)
