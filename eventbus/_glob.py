"""Redis's own glob matching (``stringmatchlen`` in util.c), for the in-memory transport.

Ported line by line rather than translated to ``fnmatch``/regex because the corner cases differ:
an unclosed ``[`` matches literally up to the end, ``[z-a]`` is the same range as ``[a-z]``,
a trailing backslash is a literal, and bytes compare as C's signed ``char``. The test suite
checks this module against a real redis-server over many generated pairs.
"""

from __future__ import annotations


def _signed(byte: int) -> int:
    # Redis compares `char`, which is signed on the platforms it ships for.
    return byte - 256 if byte > 127 else byte


def glob_match(pattern: bytes, string: bytes) -> bool:
    """True if ``string`` matches the Redis glob ``pattern`` (case-sensitive, as PSUBSCRIBE)."""
    skip_longer = [False]
    return _match(pattern, 0, string, 0, skip_longer)


def _match(pattern: bytes, p: int, string: bytes, s: int, skip_longer: list[bool]) -> bool:
    plen = len(pattern)
    slen = len(string)
    while p < plen and s < slen:
        c = pattern[p]
        if c == 0x2A:  # '*'
            while p + 1 < plen and pattern[p + 1] == 0x2A:
                p += 1
            if p + 1 == plen:
                return True
            while s < slen:
                if _match(pattern, p + 1, string, s, skip_longer):
                    return True
                if skip_longer[0]:
                    return False
                s += 1
            # Nothing after this star matches anywhere in the rest: earlier stars cannot help.
            skip_longer[0] = True
            return False
        elif c == 0x3F:  # '?'
            s += 1
        elif c == 0x5B:  # '['
            p += 1
            negate = p < plen and pattern[p] == 0x5E  # '^'
            if negate:
                p += 1
            matched = False
            target = string[s]
            while True:
                if p < plen and pattern[p] == 0x5C and plen - p >= 2:  # '\' escapes inside []
                    p += 1
                    if pattern[p] == target:
                        matched = True
                elif p < plen and pattern[p] == 0x5D:  # ']'
                    break
                elif p >= plen:
                    # Unclosed bracket: Redis steps back so the outer p++ lands on the end.
                    p -= 1
                    break
                elif plen - p >= 3 and pattern[p + 1] == 0x2D:  # 'a-z'
                    start, end = _signed(pattern[p]), _signed(pattern[p + 2])
                    if start > end:
                        start, end = end, start
                    p += 2
                    if start <= _signed(target) <= end:
                        matched = True
                elif pattern[p] == target:
                    matched = True
                p += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            s += 1
        else:
            if c == 0x5C and plen - p >= 2:  # '\' escapes the next character
                p += 1
                c = pattern[p]
            if c != string[s]:
                return False
            s += 1
        p += 1
        if s == slen:
            while p < plen and pattern[p] == 0x2A:
                p += 1
            break
    return p == plen and s == slen
