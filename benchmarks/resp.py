"""A minimal blocking RESP client on a raw socket, for the orchestrator and the publishers.

Publishing the backlog must be fast and must not depend on the library under test, so the bulk
paths encode commands once and send them in large pipelined writes; hiredis parses the replies.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import hiredis

_Arg = bytes | str | int | float


def encode(*args: _Arg) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


class RawClient:
    """Blocking request/response and pipelined bulk sends over one TCP connection."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def _read_one(self) -> Any:
        while True:
            reply = self.reader.gets()
            if reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise reply
                return reply
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.reader.feed(data)

    def call(self, *args: _Arg) -> Any:
        self.sock.sendall(encode(*args))
        return self._read_one()

    def pipeline(self, commands: Iterable[bytes], chunk: int = 5000) -> int:
        """Send pre-encoded commands ``chunk`` at a time; return how many replies were read.

        Reading each chunk's replies before sending the next keeps both socket buffers bounded.
        """
        batch: list[bytes] = []
        total = 0
        for cmd in commands:
            batch.append(cmd)
            if len(batch) == chunk:
                total += self._flush(batch)
                batch = []
        if batch:
            total += self._flush(batch)
        return total

    def _flush(self, batch: list[bytes]) -> int:
        self.sock.sendall(b"".join(batch))
        for _ in batch:
            self._read_one()
        return len(batch)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
