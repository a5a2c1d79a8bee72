from __future__ import annotations

import pytest

from eventbus import Message, PayloadError
from eventbus._payloads import encode_payload


def test_text_and_json() -> None:
    msg = Message("ch", b'{"a": [1, 2]}')
    assert msg.text == '{"a": [1, 2]}'
    assert msg.json() == {"a": [1, 2]}
    assert msg.pattern is None


def test_non_utf8_text_is_a_clear_error() -> None:
    with pytest.raises(PayloadError, match="not valid UTF-8"):
        _ = Message("ch", b"\xff\xfe").text


def test_invalid_json_is_a_clear_error() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        Message("ch", b"{nope").json()


def test_repr_hides_the_payload() -> None:
    assert "secret" not in repr(Message("ch", b"secret", "c*"))


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (b"\x00\xff", b"\x00\xff"),
        ("héllo", "héllo".encode()),
        (42, b"42"),
        (1.5, b"1.5"),
        (True, b"true"),
        ({"to": "+1"}, b'{"to":"+1"}'),
        ([1, "a"], b'[1,"a"]'),
    ],
)
def test_encode_payload(value: object, wire: bytes) -> None:
    assert encode_payload(value) == wire


def test_unserializable_payload() -> None:
    with pytest.raises(PayloadError, match="cannot publish a object"):
        encode_payload(object())
