"""Event-loop helpers for the tests (the ``both_loops`` marker itself is handled in conftest.py)."""

from __future__ import annotations

import pytest

try:
    import uvloop  # noqa: F401 - only whether it imports matters
except ImportError:
    HAS_UVLOOP = False
else:
    HAS_UVLOOP = True

# For tests that start processes with --loop uvloop (in-process async tests use ``both_loops``).
needs_uvloop = pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (pip install -e '.[dev]' brings it)")
