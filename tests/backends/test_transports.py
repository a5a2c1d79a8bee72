"""The one scheme -> backend table: every scheme served, each backend loaded only when used, secrets masked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eventbus._backends import TRANSPORTS, transport, validate_url
from eventbus._backends.sentinel import SENTINEL_OPTIONS
from eventbus._urls import TLS_OPTIONS, URL_OPTIONS, redact_url

SCHEMES = sorted(TRANSPORTS)


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("redis://h:6379/0", "eventbus._backends.redis"),
        ("rediss://h:6379/0", "eventbus._backends.redis"),
        ("unix:///tmp/r.sock", "eventbus._backends.redis"),
        ("redis+cluster://h:7000,h:7001", "eventbus._backends.cluster"),
        ("rediss+cluster://h:7000", "eventbus._backends.cluster"),
        ("redis+sentinel://h:26379/m", "eventbus._backends.sentinel"),
        ("rediss+sentinel://h:26379/m", "eventbus._backends.sentinel"),
    ],
)
def test_each_scheme_has_its_backend_module(url: str, module: str) -> None:
    assert url.partition("://")[0] in TRANSPORTS
    assert getattr(transport(url), "__name__", None) == module
    assert validate_url(url) == url


def test_a_transport_is_imported_only_when_a_url_of_its_scheme_is_used() -> None:
    code = (
        "import sys, eventbus\n"
        "from eventbus._backends import validate_url\n"
        "loaded = lambda: sorted(m for m in ('cluster', 'sentinel') if f'eventbus._backends.{m}' in sys.modules)\n"
        "validate_url('redis://h:6379/0')\n"
        "print(loaded())\n"
        "validate_url('redis+cluster://h:7000')\n"
        "print(loaded())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == ["[]", "['cluster']"], done.stderr


def test_an_unknown_scheme_is_the_one_line_error_of_validation() -> None:
    from eventbus import ConfigError

    with pytest.raises(ConfigError, match="unsupported scheme 'http'"):
        transport("http://h")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_redaction_masks_every_backends_secret_options(scheme: str) -> None:
    secrets = [o for o in (*URL_OPTIONS, *TLS_OPTIONS, *SENTINEL_OPTIONS) if "password" in o]
    assert "sentinel_password" in secrets and "ssl_password" in secrets
    for option in secrets:
        url = f"{scheme}://u:s3cret@h:1/m?db=0&{option}=s3cret"
        shown = redact_url(url)
        assert "s3cret" not in shown and f"{option}=***" in shown, shown
