"""Starting ``python -m eventbus dashboard`` and runners for the dashboard's tests."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from eventbus._dashboard import missing_extra
from tests.cli_process import EventbusProcess
from tests.redis_server import free_port

needs_extra = pytest.mark.skipif(missing_extra() is not None, reason=str(missing_extra()))


@contextmanager
def dashboard(url: str, env: dict[str, str], *args: str) -> Iterator[str]:
    """A dashboard on a free loopback port; yields its address."""
    port = free_port()
    proc = EventbusProcess(["dashboard", "--url", url, "--port", str(port), *args], env)
    try:
        address = proc.wait_for(r"eventbus dashboard at (http://\S+/)").group(1)
        yield address
    finally:
        proc.signal()
        try:
            proc.wait(10)
        finally:
            proc.kill()


@contextmanager
def runner(url: str, env: dict[str, str], module: str) -> Iterator[EventbusProcess]:
    proc = EventbusProcess(["run", module, "--url", url], env)
    try:
        proc.wait_for("subscribed|consuming")
        yield proc
    finally:
        proc.signal()
        try:
            proc.wait(20)
        finally:
            proc.kill()


def request(
    address: str, path: str = "", *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one request, redirects not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(address + path, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with opener.open(req, timeout=30) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()
