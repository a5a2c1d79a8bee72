"""Masking of phone numbers before anything reaches a log (or the dashboard: :func:`masked_payload`).

A log line may be shipped to places with weaker access control than the message store, so a
full number never goes there: ``+5584981341213`` is logged as ``+5584*****1213``.
"""

from __future__ import annotations

import json
import re

from eventbus import payload_mask

# Anything that looks like a phone number inside free text (Twilio's error messages quote the
# number they refused): an optional '+' and 7 to 15 digits, not part of a longer digit run.
_NUMBER_IN_TEXT = re.compile(r"(?<![\w+])\+?\d{7,15}(?!\d)")


def mask_number(number: str) -> str:
    """``+5584981341213`` -> ``+5584*****1213``: country/area prefix and last 4 digits only.

    Short values keep less, so that at least half of the digits are always hidden.
    """
    plus = "+" if number.startswith("+") else ""
    digits = number[len(plus) :]
    if len(digits) >= 10:
        head, tail = 4, 4
    elif len(digits) >= 6:
        head, tail = 2, 2
    else:
        head, tail = 0, 0
    hidden = len(digits) - head - tail
    return f"{plus}{digits[:head]}{'*' * hidden}{digits[len(digits) - tail :] if tail else ''}"


def redact_numbers(text: str) -> str:
    """Mask every phone-number-like run of digits inside ``text`` (e.g. an upstream error)."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_number(m.group(0)), text)


@payload_mask
def masked_payload(payload: bytes) -> str:
    """How the dashboard shows a broadcast message: as the logs do, numbers masked and no body.

    ``{"message": "<42 chars>", "from": "+1202*****5004", "to": "+5584*****1213"}``; anything that
    is not an SMS object shows as its size alone (a part of a body must not slip through).
    """
    try:
        data = json.loads(payload)
    except ValueError:
        return f"<{len(payload)} bytes, not JSON>"
    if not isinstance(data, dict):
        return f"<{len(payload)} bytes of JSON, not an object>"
    shown = {}
    for key, value in data.items():
        if key in ("from", "to") and isinstance(value, str):
            shown[key] = mask_number(value)
        elif isinstance(value, str):
            shown[key] = f"<{len(value)} chars>"
        else:
            shown[key] = f"<{type(value).__name__}>"
    return json.dumps(shown, ensure_ascii=False)
