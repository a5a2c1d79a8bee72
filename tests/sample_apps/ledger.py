"""A stream consumer for the `streams` and `check` command tests: two groups on one stream."""

from __future__ import annotations

from eventbus import Context, StreamMessage, on_stream


@on_stream("ledger", max_deliveries=3)
async def bookkeeper(msg: StreamMessage, ctx: Context) -> None:
    pass


@on_stream("ledger", group="auditors")
async def auditor(msg: StreamMessage, ctx: Context) -> None:
    pass
