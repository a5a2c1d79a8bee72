"""eventbus._glob must agree with Redis itself, checked against a real server's KEYS.

Through PSUBSCRIBE, on every transport (non-ASCII patterns included), it is checked by
tests/backends/test_conformance.py.
"""

from __future__ import annotations

import random

import pytest
import redis

from eventbus._glob import glob_match

ALPHABET = b"ab*?[]^-\\c: x"


def _random_bytes(rng: random.Random, alphabet: bytes, max_len: int) -> bytes:
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


@pytest.mark.parametrize(
    ("pattern", "string", "expected"),
    [
        (b"purchase_orders:* Ceremony", b"purchase_orders:Opening Ceremony", True),
        (b"purchase_orders:* Ceremony", b"purchase_orders:Womens Judo", False),
        (b"h?llo", b"hello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hbllo", True),  # reversed ranges are ranges too
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"*", b"", False),  # Redis's '*' does not match an empty channel
        (b"[abc", b"a", True),  # an unclosed bracket still matches its members
    ],
)
def test_known_cases(pattern: bytes, string: bytes, expected: bool) -> None:
    assert glob_match(pattern, string) is expected


def test_agrees_with_redis_on_generated_pairs(sync_redis: redis.Redis) -> None:
    """KEYS uses the same stringmatchlen() as PSUBSCRIBE: compare over many generated pairs."""
    rng = random.Random(20201)
    strings = {_random_bytes(rng, b"abc*?[]^-\\: x", 6) for _ in range(400)} - {b""}
    pipe = sync_redis.pipeline(transaction=False)
    for s in strings:
        pipe.set(s, 1)
    pipe.execute()
    patterns = [_random_bytes(rng, ALPHABET, 7) for _ in range(500)]
    patterns += [b"*", b"a*", b"*a", b"[a-c]*", b"[^a]?", b"\\", b"a\\", b"[", b"[]", b"[\\]]", b"[a-]"]
    mismatches = []
    for pattern in patterns:
        if not pattern:
            continue
        expected = set(sync_redis.keys(pattern))
        ours = {s for s in strings if glob_match(pattern, s)}
        if ours != expected:
            mismatches.append((pattern, sorted(ours ^ expected)[:5]))
    assert not mismatches, mismatches[:10]
