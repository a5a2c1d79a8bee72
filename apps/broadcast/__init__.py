"""apps.broadcast - the SMS broadcast service of the tutorial, on eventbus.

Run the service:    python -m eventbus run apps.broadcast      (or: python -m apps.broadcast serve)
Publish a message:  python -m apps.broadcast send --to +5584981341213 --from +12028165004 --message hi

Importing this package exposes the handler and lifecycle hooks (so eventbus can load it as a
target), the payload mask of ``python -m eventbus dashboard --module apps.broadcast``, and the
publisher API for producer services.
"""

from apps.broadcast.masking import masked_payload
from apps.broadcast.payload import InvalidPayload, Sms, encode_sms, parse_sms, validate_sms
from apps.broadcast.publisher import channel_for, publish_sms
from apps.broadcast.service import broadcast, close_sender, open_sender

__all__ = [
    "InvalidPayload",
    "Sms",
    "broadcast",
    "channel_for",
    "close_sender",
    "encode_sms",
    "masked_payload",
    "open_sender",
    "parse_sms",
    "publish_sms",
    "validate_sms",
]
