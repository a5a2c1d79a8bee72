"""Two handlers with the same name: a load-time error."""

from eventbus import Context, Message, on


def _make() -> object:
    @on("a")
    async def same(msg: Message, ctx: Context) -> None: ...

    return same


first = _make()
second = _make()
