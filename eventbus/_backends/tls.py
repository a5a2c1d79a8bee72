"""TLS to Redis (``rediss://``): the context, its files checked up front, and errors that say what to change.

The URL's options are redis-py's: ``?ssl_ca_certs=`` (the CA that signed the server's certificate),
``ssl_certfile=`` / ``ssl_keyfile=`` (a client certificate, when the server asks for one),
``ssl_cert_reqs=`` (required, optional or none) and ``ssl_check_hostname=``.

Mistakes here are configuration, not outages, so none of them is retried until the connect timeout:
a certificate file that is missing or unreadable fails before connecting, naming the option and the
file; a handshake the server's certificate fails says which option fixes it; a plain ``redis://``
URL pointed at a TLS port says to use ``rediss://``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from eventbus._errors import ConfigError
from eventbus._urls import redact_url

log = logging.getLogger("eventbus")

CERTIFICATE_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")

# URLs already warned about for not verifying the server: once per process, however many
# connections (the runner's, a publisher's, every reconnect) use them.
_warned_unverified: set[str] = set()


def uses_tls(url: str) -> bool:
    """``rediss://``, ``rediss+cluster://``, ``rediss+sentinel://``."""
    return urlsplit(url).scheme.split("+")[0] == "rediss"


def url_options(url: str) -> dict[str, str]:
    """The URL's ``?key=value`` options, decoded (any URL grammar: one server, a cluster, sentinels)."""
    return dict(parse_qsl(urlsplit(url).query))


def ssl_context(params: dict[str, Any]) -> ssl.SSLContext:
    """The context for the subscription connection, from the URL's options as redis-py parses them."""
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    if params.get("ssl_certfile"):
        context.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"))
    reqs = str(params.get("ssl_cert_reqs", "required")).lower()
    if reqs == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif reqs == "optional":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    elif str(params.get("ssl_check_hostname", "true")).lower() in ("false", "0", "no"):
        context.check_hostname = False
    return context


def check_tls(url: str) -> None:
    """Before connecting: the certificate files load, and an unverified server is warned about once.

    Raises :class:`ConfigError` (one line, naming the option and the file) for a file that is
    missing, unreadable or not what the option needs.
    """
    if not uses_tls(url):
        return
    options = url_options(url)
    for option in CERTIFICATE_FILES:
        path = options.get(option)
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"?{option}={path}: cannot read the file: {exc.strerror or exc}") from None
    try:
        ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    except ssl.SSLError as exc:
        raise ConfigError(f"?ssl_ca_certs={options['ssl_ca_certs']}: not a PEM CA certificate: {exc}") from None
    if options.get("ssl_certfile"):
        try:
            ssl.create_default_context().load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
        except ssl.SSLError as exc:
            files = f"?ssl_certfile={options['ssl_certfile']}"
            if options.get("ssl_keyfile"):
                files += f"&ssl_keyfile={options['ssl_keyfile']}"
            raise ConfigError(f"{files}: not a PEM certificate and its matching private key: {exc}") from None
    elif options.get("ssl_keyfile"):
        raise ConfigError("?ssl_keyfile= needs ?ssl_certfile= (the client certificate the key belongs to)")
    if options.get("ssl_cert_reqs", "").lower() == "none":
        safe = redact_url(url)
        if safe not in _warned_unverified:
            _warned_unverified.add(safe)
            log.warning(
                "TLS to Redis at %s does not verify the server (ssl_cert_reqs=none): the traffic is encrypted, "
                "but anyone on the path can pose as the server; give ?ssl_ca_certs=/path/to/ca.crt instead",
                safe,
            )


def handshake_hint(exc: BaseException, url: str) -> str:
    """What to change after a failed TLS handshake, for the end of its one-line error."""
    text = str(exc).upper()
    if "CERTIFICATE_REQUIRED" in text or "CERTIFICATE REQUIRED" in text:
        return "the server asks for a client certificate: give ?ssl_certfile=...&ssl_keyfile=..."
    if "VERIFY_FAILED" in text or "VERIFY FAILED" in text:
        if "MISMATCH" in text:
            return "the server's certificate is not for this host name or address: connect by one it names"
        given = url_options(url).get("ssl_ca_certs")
        if given:
            return f"the CA in ?ssl_ca_certs={given} did not sign the server's certificate: give the one that did"
        return "give the CA that signed the server's certificate with ?ssl_ca_certs=/path/to/ca.crt"
    return "check the ?ssl_ options of the URL"


async def speaks_tls(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake (or answers it with a TLS alert).

    Asked only after a plain connection was cut off at once, which is what Redis's TLS port does
    to a client that does not speak TLS. Nothing is verified: this only asks what the port speaks.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLError as exc:
        return "ALERT" in str(exc).upper()  # only a TLS server answers with a TLS alert
    except (OSError, TimeoutError):
        return False
    writer.transport.abort()
    return True


def tls_url(url: str) -> str:
    """``url`` with ``rediss://``, redacted, for the hint."""
    safe = redact_url(url)
    return "rediss://" + safe.partition("://")[2]
