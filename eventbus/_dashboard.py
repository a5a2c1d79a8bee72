"""``python -m eventbus dashboard``: every runner, handler, stream group and dead letter on one page.

Needs ``eventbus[dashboard]`` (Starlette, served by uvicorn). What it shows comes from Redis
(:mod:`eventbus._dashboard_state`), so it shows every process on every host and nothing is lost
when it restarts.

Safe by default:

- It binds to 127.0.0.1, and then checks that the Host header names a loopback address (a page of
  another site that resolves its own name to 127.0.0.1 cannot read it). Binding anywhere else needs
  a token (``--token`` or $EVENTBUS_DASHBOARD_TOKEN): every request must carry it as
  ``Authorization: Bearer TOKEN``, or in the cookie a browser gets by opening ``/?token=TOKEN``
  once; without it, 401 (the live updates included).
- Replay and delete are POSTs that must come from the page itself: a ``Sec-Fetch-Site`` other than
  ``same-origin`` or an ``Origin`` other than the dashboard's is refused (403), and each form
  carries a CSRF token derived from a secret of the process (the token, when there is one).
- The page loads nothing but its own script and style (Content-Security-Policy), cannot be framed,
  and sends no Referer to other sites. The Redis URL is shown without its credentials.
- Replay goes through the trust boundary of :mod:`eventbus._replay`, with the handler modules the
  operator named (``--module``), which may also mask payloads (:func:`eventbus.payload_mask`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qs, urlencode

from eventbus._dashboard_html import (
    SCRIPT,
    STYLE,
    channels_html,
    groups_html,
    handlers_html,
    letters_html,
    page,
    processes_html,
)
from eventbus._dashboard_state import App, Filter, State, recoverable_channels, summarize
from eventbus._errors import ConfigError
from eventbus._masking import find_mask
from eventbus._router import ensure_cwd_on_path, load_target

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route
except ImportError:  # pragma: no cover - checked by missing_extra() before this module is used
    Starlette = None  # type: ignore[assignment,misc]

ENV_TOKEN = "EVENTBUS_DASHBOARD_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
COOKIE = "eventbus_dashboard"
MIN_TOKEN = 16  # characters: a token short enough to guess is no token
MAX_FORM = 1 << 20  # bytes of a POSTed form (a selection of ids)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
log = logging.getLogger("eventbus.dashboard")
Endpoint = Callable[["Request"], Awaitable["Response"]]


def missing_extra() -> str | None:
    """Why the dashboard cannot run here (its extra is not installed), or None."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"the dashboard needs eventbus[dashboard] (pip install 'eventbus[dashboard]'): {exc}"
    return None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token every request must carry (None: none needed); a ConfigError when one is missing or weak."""
    token = token if token is not None else os.environ.get(ENV_TOKEN) or None
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(f"the dashboard token must have at least {MIN_TOKEN} characters")
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"the dashboard binds to {host}, beyond this machine: it needs a token (${ENV_TOKEN} or --token), "
            "which every request must then carry"
        )
    return token


def load_apps(modules: Sequence[str]) -> list[App]:
    """The handler modules named with ``--module``, each with its payload mask if it marks one."""
    if modules:
        ensure_cwd_on_path()
    apps = []
    for target in modules:
        router = load_target(target)
        module = __import__(router.name, fromlist=["_"]) if router.name else None
        apps.append(App(router, find_mask(module) if module is not None else None))
    return apps


class Guard:
    """Who may ask what (see the module docstring)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        secret = token.encode() if token is not None else secrets.token_bytes(32)
        self.csrf = hmac.new(secret, b"eventbus dashboard csrf", sha256).hexdigest()
        self._secret = hmac.new(secret, b"eventbus dashboard notices", sha256).digest()

    def refuse(self, request: Request) -> Response | None:
        """A 401/403 for a request that may not pass; None for one that may."""
        if self.token is None:
            if not is_loopback(request.url.hostname or ""):
                return PlainTextResponse("this dashboard answers only to a loopback Host", status_code=403)
        elif not self._carries_token(request):
            return PlainTextResponse(
                "a token is needed: Authorization: Bearer TOKEN, or open /?token=TOKEN once", status_code=401
            )
        return None

    def _carries_token(self, request: Request) -> bool:
        assert self.token is not None
        given = [request.cookies.get(COOKIE, "")]
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            given.append(authorization[7:].strip())
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given if g)

    def sign(self, notice: str) -> str:
        return hmac.new(self._secret, notice.encode(), sha256).hexdigest()

    def notice(self, text: str, signature: str) -> str:
        """What an action said, shown only if this dashboard wrote it (a link cannot put words on the page)."""
        return text if text and hmac.compare_digest(self.sign(text).encode(), signature.encode()) else ""

    def cross_site(self, request: Request, form: dict[str, list[str]]) -> str | None:
        """Why a POST is refused as coming from another site, or None."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"Sec-Fetch-Site: {site}"
        origin = request.headers.get("origin")
        if origin is not None:
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != own:
                return "the Origin is not this dashboard"
        given = (form.get("csrf") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.csrf.encode()):
            return "no valid CSRF token (reload the page)"
        return None


def build_app(state: State, *, token: str | None, server: str) -> Starlette:
    """The ASGI application: the page, its live sections, its script and style, and the two actions."""
    guard = Guard(token)

    def guarded(endpoint: Endpoint) -> Endpoint:
        async def checked(request: Request) -> Response:
            if token is not None and "token" in request.query_params and request.method == "GET":
                refusal: Response | None = _take_token(request, token)
            else:
                refusal = guard.refuse(request)
            response = refusal if refusal is not None else await endpoint(request)
            response.headers.update(_SECURITY_HEADERS)
            return response

        return checked

    async def sections(wanted: Filter) -> dict[str, str]:
        processes = await state.processes()
        groups, (letters, total) = await asyncio.gather(state.groups(processes), state.dead_letters(wanted))
        return {
            "processes": processes_html(processes),
            "handlers": handlers_html(processes),
            "channels": channels_html(recoverable_channels(processes)),
            "groups": groups_html(groups),
            "letters": letters_html(letters, total, state.store.stream),
        }

    async def index(request: Request) -> Response:
        wanted = _filter(request.query_params)
        html = page(
            server=server,
            sections=await sections(wanted),
            wanted=wanted,
            csrf=guard.csrf,
            notice=guard.notice(request.query_params.get("done", ""), request.query_params.get("sig", "")),
            can_replay=bool(state.apps),
        )
        return HTMLResponse(html)

    async def live(request: Request) -> Response:
        return JSONResponse(await sections(_filter(request.query_params)))

    async def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript")

    async def style(request: Request) -> Response:
        return Response(STYLE, media_type="text/css")

    def action(kind: str) -> Endpoint:
        async def act(request: Request) -> Response:
            body = await request.body()
            if len(body) > MAX_FORM:
                return PlainTextResponse("form too large", status_code=413)
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            refusal = guard.cross_site(request, form)
            if refusal is not None:
                log.warning("dashboard: %s refused as cross-site: %s", kind, refusal)
                return PlainTextResponse(f"refused: {refusal}", status_code=403)
            wanted = Filter(*((form.get(name) or [""])[0] for name in ("handler", "channel", "error")))
            if form.get("id"):
                ids = form["id"][:1]
            elif (form.get("scope") or [""])[0] == "matching":
                ids = await state.matching(wanted)
            else:
                ids = form.get("selected", [])
            done = summarize(await state.replay(ids)) if kind == "replay" else f"{await state.delete(ids)} deleted"
            log.info("dashboard: %s of %d dead letter(s): %s", kind, len(ids), done)
            query = {
                **{"handler": wanted.handler, "channel": wanted.channel, "error": wanted.error},
                **{"done": done, "sig": guard.sign(done)},
            }
            return RedirectResponse("../?" + urlencode({k: v for k, v in query.items() if v}), status_code=303)

        return act

    routes = [
        Route("/", guarded(index)),
        Route("/live", guarded(live)),
        Route("/dashboard.js", guarded(script)),
        Route("/dashboard.css", guarded(style)),
        Route("/dead-letters/replay", guarded(action("replay")), methods=["POST"]),
        Route("/dead-letters/delete", guarded(action("delete")), methods=["POST"]),
    ]
    return Starlette(routes=routes)


_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make a browser send `Origin: null` with our own forms
    "cache-control": "no-store",
}


def _take_token(request: Request, token: str) -> Response:
    """``?token=`` (already checked): keep it in a cookie and send the browser to the URL without it."""
    if not hmac.compare_digest(request.query_params["token"].encode(), token.encode()):
        return PlainTextResponse("wrong token", status_code=401)
    rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
    return response


def _filter(query: Any) -> Filter:
    return Filter(query.get("handler", ""), query.get("channel", ""), query.get("error", ""))


async def serve(
    url: str | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    modules: Sequence[str] = (),
    dead_letter_stream: str,
    connect_timeout: float,
) -> None:
    """Serve the dashboard until cancelled (SIGINT/SIGTERM through uvicorn)."""
    import uvicorn

    from eventbus._backends import resolve_url, wait_until_reachable
    from eventbus._runner import connect
    from eventbus._urls import redact_url

    token = resolve_token(host, token)
    apps = load_apps(modules)
    resolved = resolve_url(url).url
    await wait_until_reachable(resolved, connect_timeout)
    async with connect(url) as bus:
        state = State(bus.redis, dead_letter_stream, apps)
        app = build_app(state, token=token, server=redact_url(resolved))
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        server = _quiet_exit(uvicorn.Server)(config)
        serving = asyncio.create_task(server.serve(), name="eventbus:dashboard")
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn sets a flag, no event
            await asyncio.sleep(0.05)
        if server.started:
            shown_host = f"[{host}]" if ":" in host else host
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port  # --port 0
            address = f"http://{shown_host}:{bound}/"
            how = " (open it once with ?token=..., or send Authorization: Bearer)" if token else ""
            print(f"eventbus dashboard at {address}{how}, Redis {redact_url(resolved)}", flush=True)
        await serving


def _quiet_exit(base: type[Any]) -> type[Any]:
    """uvicorn's server, stopping on SIGINT/SIGTERM as every eventbus command does: exit 0.

    uvicorn raises the signal again once it has shut down, so a dashboard stopped by SIGTERM
    would exit -15 to its supervisor; the loop's handlers here stop it the same way, and no more.
    """

    class Server(base):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return Server
