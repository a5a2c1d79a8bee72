"""Retry delays: capped exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the exponential bound) spreads the retries of many
messages that failed together - typically a burst of 429s - instead of having them come back in
lockstep and be refused again.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    bound = min(cap, base * 2 ** (attempt - 1))
    return (rng or random).uniform(0.0, bound)
