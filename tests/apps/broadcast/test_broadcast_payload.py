"""Validation of the wire format, masking, and settings: pure functions, no I/O."""

from __future__ import annotations

import orjson
import pytest

from apps.broadcast.config import ConfigurationError, Settings
from apps.broadcast.masking import mask_number, redact_numbers
from apps.broadcast.payload import MAX_BODY_CHARS, MAX_PAYLOAD_BYTES, InvalidPayload, Sms, encode_sms, parse_sms
from apps.broadcast.publisher import channel_for

GOOD = {"message": "hello", "from": "+12028165004", "to": "+5584981341213"}


def payload(**changes: object) -> bytes:
    return orjson.dumps({**GOOD, **changes})


def test_valid_payload_round_trips() -> None:
    sms = parse_sms(payload())
    assert sms == Sms(body="hello", from_="+12028165004", to="+5584981341213")
    assert parse_sms(encode_sms(sms)) == sms


def test_body_at_the_limit_is_accepted_and_astral_characters_count_once() -> None:
    assert parse_sms(payload(message="x" * MAX_BODY_CHARS)).body == "x" * MAX_BODY_CHARS
    # The largest valid payload (escaped astral characters) still fits under the byte cap.
    escaped = b'{"message":"' + b"\\ud83d\\ude00" * MAX_BODY_CHARS + b'","from":"+12028165004","to":"+5584981341213"}'
    assert len(escaped) < MAX_PAYLOAD_BYTES
    assert len(parse_sms(escaped).body) == MAX_BODY_CHARS


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"hello"', "must be a JSON object, got str"),
        (orjson.dumps({"message": "hi", "to": "+5584981341213"}), "missing from"),
        (payload(extra="+5584981341213"), "1 unexpected field(s)"),
        (payload(message=42), "'message' must be a string, got int"),
        (payload(to=None), "'to' must be a string, got NoneType"),
        (payload(message="   "), "'message' is empty"),
        (payload(message="x" * (MAX_BODY_CHARS + 1)), "the limit is 1600"),
        (payload(to="5584981341213"), "'to' is not an E.164"),
        (payload(to="+0584981341213"), "'to' is not an E.164"),
        (payload(to="+55 84 98134-1213"), "'to' is not an E.164"),
        (payload(**{"from": "+1202816500412345"}), "'from' is not an E.164"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), f"the limit is {MAX_PAYLOAD_BYTES}"),
    ],
)
def test_invalid_payloads_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_sms(data)
    assert reason in str(info.value)


def test_reasons_never_echo_the_data() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_sms(payload(to="+55849813412139999", secret_key="+5584981341213"))
    assert "5584981341213" not in str(info.value)
    assert "secret_key" not in str(info.value)


def test_sms_repr_is_masked() -> None:
    text = repr(Sms(body="your code is 1234", from_="+12028165004", to="+5584981341213"))
    assert "+5584*****1213" in text and "+1202***5004" in text
    assert "code is" not in text and "5584981341213" not in text


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+5584981341213", "+5584*****1213"),
        ("+12028165004", "+1202***5004"),
        ("+4420123", "+44***23"),
        ("+123", "+***"),
    ],
)
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked


def test_redact_numbers_in_free_text() -> None:
    text = "The 'To' number +5584981341213 is not a valid phone number (from 12028165004), code 21211."
    redacted = redact_numbers(text)
    assert "+5584*****1213" in redacted and "1202***5004" in redacted
    assert "21211" in redacted  # error codes are too short to be numbers


def test_channel_for() -> None:
    assert channel_for("alert").name == "channel-alert"
    assert channel_for("channel-reminder").name == "channel-reminder"
    assert channel_for("alert").recoverable
    for bad in ("", "a*", "with space", "x?"):
        with pytest.raises(ValueError, match="kind must be a word"):
            channel_for(bad)


def test_settings_from_env() -> None:
    env = {"TWILIO_ACCOUNT_SID": "ACx", "TWILIO_AUTH_TOKEN": "tok", "BROADCAST_CONCURRENCY": "4"}
    settings = Settings.from_env(env)
    assert settings.concurrency == 4 and settings.base_url == "https://api.twilio.com"
    assert "tok" not in repr(settings)


def test_missing_credentials_are_a_clear_error_unless_dry_run() -> None:
    with pytest.raises(ConfigurationError, match=r"TWILIO_AUTH_TOKEN not set.*BROADCAST_DRY_RUN=1"):
        Settings.from_env({"TWILIO_ACCOUNT_SID": "ACx"})
    assert Settings.from_env({"BROADCAST_DRY_RUN": "1"}).dry_run


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROADCAST_CONCURRENCY", "0"),
        ("BROADCAST_RATE_PER_SENDER", "fast"),
        ("BROADCAST_DRY_RUN", "maybe"),
        ("TWILIO_BASE_URL", "ftp://example.com"),
        ("TWILIO_BASE_URL", "https://AC1:secret@proxy.example.com"),
        ("TWILIO_BASE_URL", "ftp://AC1:secret@proxy.example.com"),
    ],
)
def test_malformed_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name) as info:
        Settings.from_env({"TWILIO_ACCOUNT_SID": "ACx", "TWILIO_AUTH_TOKEN": "tok", name: value})
    assert "secret" not in str(info.value)


def test_the_dashboard_shows_numbers_masked_and_no_body() -> None:
    import apps.broadcast
    from eventbus._masking import find_mask

    mask = find_mask(apps.broadcast)
    assert mask is apps.broadcast.masked_payload
    shown = mask(b'{"message": "your code is 1234", "from": "+12028165004", "to": "+5584981341213"}')
    assert shown == '{"message": "<17 chars>", "from": "+1202***5004", "to": "+5584*****1213"}'
    assert mask(b'{"message": "cut sho') == "<20 bytes, not JSON>"
    assert mask(b'["+5584981341213"]') == "<18 bytes of JSON, not an object>"
