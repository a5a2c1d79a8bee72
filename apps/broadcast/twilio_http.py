"""The HTTP client under the twilio library: base-URL seam, timeouts, failure classification.

twilio-python lets an application supply its own HTTP client (the documented "custom HTTP
client" seam); this one is its ``AsyncTwilioHttpClient`` with ``request`` replaced, because:

- requests must be able to go to ``TWILIO_BASE_URL`` (a proxy, or a test server) instead of the
  hard-coded ``https://api.twilio.com``; the path and query are kept as twilio builds them;
- ``AsyncTwilioHttpClient`` ignores its ``timeout`` argument and has only a total timeout, which
  cannot tell "never connected" (safe to retry) from "sent, no answer" (must not be resent).
  Separate connect and read timeouts, and two exception types, make that distinction explicit;
- its ``max_retries`` wraps the session in aiohttp-retry, which would resend a POST after a 5xx
  and could text someone twice: it is never enabled here;
- its request logging prints the account SID in every URL at INFO: this client logs nothing.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response

from apps.broadcast.failures import ConnectFailed, NoAnswer

_quiet = logging.getLogger("apps.broadcast.twilio_http")


class BroadcastHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """One pooled aiohttp session for the process; create it inside the running event loop."""

    def __init__(self, *, base_url: str, connect_timeout: float, read_timeout: float, pool_size: int) -> None:
        # pool_connections=False: the parent would build a default session; ours is made below.
        # max_retries stays None: see the module docstring.
        super().__init__(pool_connections=False, logger=_quiet, max_retries=None)
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size),
            timeout=self._timeout,
            # Proxies are chosen with TWILIO_BASE_URL, not picked up implicitly from HTTP(S)_PROXY.
            trust_env=False,
        )

    def rebase(self, url: str) -> str:
        """``https://api.twilio.com/2010-04-01/...`` -> ``<base_url>/2010-04-01/...``."""
        base = urlsplit(self.base_url)
        parts = urlsplit(url)
        return urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, ""))

    async def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        all_headers = dict(headers or {})
        if auth is not None:
            # Built by hand: aiohttp deprecates BasicAuth, and encode_basic_auth is only in recent versions.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            all_headers["Authorization"] = f"Basic {token}"
        request_timeout = self._timeout
        if timeout is not None:
            request_timeout = aiohttp.ClientTimeout(connect=self._timeout.connect, sock_read=timeout)
        kwargs: dict[str, Any] = {
            "params": params,
            "data": data,
            "headers": all_headers,
            "timeout": request_timeout,
            "allow_redirects": allow_redirects,
        }
        try:
            async with self.session.request(method.upper(), self.rebase(url), **kwargs) as response:
                text = await response.text()
                return Response(response.status, text, response.headers)
        # ConnectionTimeoutError is also a TimeoutError: it must be matched before the clause below.
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ConnectFailed(f"could not connect to the Twilio API ({type(exc).__name__})") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            what = "no response in time" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise NoAnswer(f"request sent, {what}") from None

    async def close(self) -> None:
        await self.session.close()
