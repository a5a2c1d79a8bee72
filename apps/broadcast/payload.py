"""What a broadcast message is, and the validation every one passes before it is sent.

The wire format is the tutorial's, a JSON object ``{"message": ..., "from": ..., "to": ...}``,
plus ``"key"``: the message's idempotency key, which the publisher sets (see apps.broadcast.once).
The service still takes a message without one, from producers written the tutorial's way.
Publishers use :func:`encode_sms` and the service uses :func:`parse_sms`, so both sides agree on
one definition. Error texts name the field and the rule, never the value: they end up in logs
and in the dead-letter reason.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from apps.broadcast.masking import mask_number

# Twilio accepts at most 1,600 characters in a body.
MAX_BODY_CHARS = 1_600

# Checked before parsing, so a huge payload costs nothing to refuse. The largest valid payload is
# 1,600 astral characters written as JSON surrogate-pair escapes (12 bytes each) plus two numbers
# and the keys: about 19.3 kB. 24 KiB leaves room for whitespace and still bounds the parser.
MAX_PAYLOAD_BYTES = 24 * 1024

# E.164: '+', a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")

# An idempotency key: printable ASCII without spaces, so that it reads well in a Redis key name.
MAX_KEY_CHARS = 128
_KEY = re.compile(rf"[!-~]{{1,{MAX_KEY_CHARS}}}")

_FIELDS = frozenset({"message", "from", "to"})
_OPTIONAL = frozenset({"key"})


class InvalidPayload(ValueError):
    """The payload is not a valid broadcast message; the text says why (without the data)."""


@dataclass(frozen=True, slots=True, repr=False)
class Sms:
    """One validated text message: body, sender and recipient (both E.164), and its idempotency
    key (None only for a message from a producer that sends none)."""

    body: str
    from_: str
    to: str
    key: str | None = None

    def __repr__(self) -> str:
        # Dataclass repr would print the body and full numbers into any log or traceback.
        return f"Sms(from_={mask_number(self.from_)}, to={mask_number(self.to)}, body=<{len(self.body)} chars>)"


def new_key() -> str:
    """A fresh idempotency key: 128 random bits."""
    return secrets.token_hex(16)


def is_e164(number: str) -> bool:
    return _E164.fullmatch(number) is not None


def validate_sms(body: Any, from_: Any, to: Any, key: Any = None) -> Sms:
    """Check the fields and build an :class:`Sms`; raises :class:`InvalidPayload`."""
    for name, value in (("message", body), ("from", from_), ("to", to)):
        if not isinstance(value, str):
            raise InvalidPayload(f"field {name!r} must be a string, got {type(value).__name__}")
    if not body.strip():
        raise InvalidPayload("field 'message' is empty")
    if len(body) > MAX_BODY_CHARS:
        raise InvalidPayload(f"field 'message' has {len(body)} characters, the limit is {MAX_BODY_CHARS}")
    for name, value in (("from", from_), ("to", to)):
        if not is_e164(value):
            raise InvalidPayload(f"field {name!r} is not an E.164 phone number (+ and up to 15 digits)")
    if key is not None and not (isinstance(key, str) and _KEY.fullmatch(key)):
        raise InvalidPayload(f"field 'key' must be 1 to {MAX_KEY_CHARS} printable ASCII characters without spaces")
    return Sms(body=body, from_=from_, to=to, key=key)


def parse_sms(data: bytes) -> Sms:
    """Validate a raw payload from the wire: size cap, JSON object, exactly the three fields."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload(f"payload is {len(data)} bytes, the limit is {MAX_PAYLOAD_BYTES}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidPayload(f"payload is not valid UTF-8 JSON ({len(data)} bytes)") from None
    if not isinstance(obj, dict):
        raise InvalidPayload(f"payload must be a JSON object, got {type(obj).__name__}")
    keys = set(obj)
    if keys - _OPTIONAL != _FIELDS:
        problems = []
        if missing := sorted(_FIELDS - keys):
            problems.append(f"missing {', '.join(missing)}")
        if extra := sorted(keys - _FIELDS - _OPTIONAL):
            # Unknown keys are reported by count only: a key itself could carry personal data.
            problems.append(f"{len(extra)} unexpected field(s)")
        raise InvalidPayload("payload must have the fields message, from, to (and key): " + "; ".join(problems))
    return validate_sms(obj["message"], obj["from"], obj["to"], obj.get("key"))


def encode_sms(sms: Sms) -> bytes:
    """The wire form of a message, as the service expects it."""
    fields = {"message": sms.body, "from": sms.from_, "to": sms.to}
    if sms.key is not None:
        fields["key"] = sms.key
    return orjson.dumps(fields)
