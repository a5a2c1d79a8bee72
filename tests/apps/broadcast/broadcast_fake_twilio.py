"""A local stand-in for Twilio's Messages API, spoken to over real HTTP by the real twilio client.

It answers ``POST /2010-04-01/Accounts/<sid>/Messages.json`` like Twilio does (201 with a message
resource, or an error document with a Twilio error code), checks Basic auth, records every
request, and measures how many requests were in flight at once. Tests script the answers per
recipient number: ``fake.script("+5584...", Reply(429, 20429), Reply(201))``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import BasicAuth, web


@dataclass(frozen=True)
class Reply:
    status: int = 201
    code: int | None = None
    delay: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class Received:
    to: str
    from_: str
    body: str
    at: float  # time.monotonic() when the request arrived


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    unauthorized: int = 0
    _scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    _runner: web.AppRunner | None = None
    url: str = ""

    def script(self, to: str, *replies: Reply) -> None:
        """Answer the next requests for ``to`` with ``replies``, then with ``default``."""
        self._scripts[to].extend(replies)

    def sent_to(self, to: str) -> list[Received]:
        return [r for r in self.received if r.to == to]

    async def start(self) -> FakeTwilio:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        # handler_cancellation: a slow answer whose client gave up does not keep the server busy.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self.unauthorized += 1
            return self._error(Reply(401, 20003, message="Authenticate"))
        form = await request.post()
        received = Received(
            str(form.get("To", "")), str(form.get("From", "")), str(form.get("Body", "")), time.monotonic()
        )
        self.received.append(received)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            queue = self._scripts.get(received.to)
            reply = queue.popleft() if queue else self.default
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.status != 201:
                return self._error(reply)
            return web.json_response(self._resource(received), status=201)
        finally:
            self.in_flight -= 1

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        try:
            auth = BasicAuth.decode(header)
        except ValueError:
            return False
        sid = request.match_info["sid"]
        return bool(auth.login == self.account_sid == sid and auth.password == self.auth_token)

    def _resource(self, received: Received) -> dict[str, object]:
        now = formatdate(usegmt=True)
        return {
            "sid": "SM" + secrets.token_hex(16),
            "account_sid": self.account_sid,
            "to": received.to,
            "from": received.from_,
            "body": received.body,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages.json",
        }

    def _error(self, reply: Reply) -> web.Response:
        body = {
            "code": reply.code,
            "message": reply.message or f"error {reply.code}",
            "more_info": f"https://www.twilio.com/docs/errors/{reply.code}",
            "status": reply.status,
        }
        return web.json_response(body, status=reply.status)
