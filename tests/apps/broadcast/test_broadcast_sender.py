"""The sender's failure policy, with the real twilio client over HTTP to the fake Twilio."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest
from broadcast_fake_twilio import FakeTwilio, Reply

from apps.broadcast.config import Settings
from apps.broadcast.failures import NotSent, OutcomeUnknown, PermanentFailure
from apps.broadcast.payload import Sms
from apps.broadcast.ratelimit import RateLimiter
from apps.broadcast.sender import Sender
from apps.broadcast.transport import TwilioTransport

SMS = Sms(body="hello", from_="+12028165004", to="+5584981341213")
log = logging.getLogger("test.broadcast")


@pytest.fixture
async def sender(twilio_env: dict[str, str]) -> AsyncIterator[Sender]:
    settings = Settings.from_env()
    sender = Sender(TwilioTransport(settings), settings)
    yield sender
    await sender.close()


async def test_success_returns_the_sid(sender: Sender, fake_twilio: FakeTwilio) -> None:
    sent = await sender.send(SMS, log)
    assert sent.sid.startswith("SM") and sent.attempts == 1
    [received] = fake_twilio.received
    assert (received.to, received.from_, received.body) == (SMS.to, SMS.from_, SMS.body)


async def test_429_is_retried_then_succeeds(sender: Sender, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script(SMS.to, Reply(429, 20429), Reply(429, 20429))
    sent = await sender.send(SMS, log)
    assert sent.attempts == 3
    assert len(fake_twilio.received) == 3


async def test_429_until_the_attempts_run_out_is_not_sent(sender: Sender, fake_twilio: FakeTwilio) -> None:
    fake_twilio.default = Reply(429, 20429, message="Too Many Requests")
    with pytest.raises(NotSent, match=r"error 20429 \(HTTP 429\).*after 4 attempts.*safe to replay"):
        await sender.send(SMS, log)
    assert len(fake_twilio.received) == 4


async def test_a_full_sender_queue_is_retried_later_then_succeeds(sender: Sender, fake_twilio: FakeTwilio) -> None:
    """21611: Twilio queued nothing (the sender's queue is full), so trying again later is safe."""
    fake_twilio.script(SMS.to, Reply(400, 21611, message="queue full"), Reply(400, 21611, message="queue full"))
    sent = await sender.send(SMS, log)
    assert sent.attempts == 3 and len(fake_twilio.received) == 3


async def test_a_queue_that_stays_full_is_not_sent_after_the_documented_limit(
    sender: Sender, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.default = Reply(400, 21611, message=f"The 'From' number {SMS.from_} has too many queued messages")
    with pytest.raises(NotSent, match=r"sender queue full, error 21611 \(HTTP 400\).*after 3 attempts.*safe to replay"):
        await sender.send(SMS, log)
    assert len(fake_twilio.received) == 3  # BROADCAST_QUEUE_FULL_ATTEMPTS


async def test_rate_limits_and_full_queues_have_separate_budgets(sender: Sender, fake_twilio: FakeTwilio) -> None:
    # 3 x 429 (of 4 allowed) and 2 x 21611 (of 3 allowed): neither budget is spent, so it is sent.
    fake_twilio.script(SMS.to, *[Reply(429, 20429), Reply(400, 21611)] * 2, Reply(429, 20429))
    sent = await sender.send(SMS, log)
    assert sent.attempts == 6


def test_no_client_side_pacing_by_default() -> None:
    settings = Settings.from_env({"TWILIO_ACCOUNT_SID": "ACx", "TWILIO_AUTH_TOKEN": "tok"})
    assert settings.rate_per_sender is None
    assert (settings.queue_full_attempts, settings.queue_full_retry_base, settings.queue_full_retry_cap) == (
        6,
        60.0,
        600.0,
    )
    paced = Settings.from_env(
        {"TWILIO_ACCOUNT_SID": "ACx", "TWILIO_AUTH_TOKEN": "tok", "BROADCAST_RATE_PER_SENDER": "1"}
    )
    assert paced.rate_per_sender == 1.0


@pytest.mark.parametrize("code", [21211, 21610, 21408])
async def test_permanent_errors_are_not_retried(sender: Sender, fake_twilio: FakeTwilio, code: int) -> None:
    fake_twilio.script(SMS.to, Reply(400, code, message=f"The 'To' number {SMS.to} is not a valid phone number."))
    with pytest.raises(PermanentFailure) as info:
        await sender.send(SMS, log)
    assert f"error {code} (HTTP 400)" in info.value.reason
    assert "+5584*****1213" in info.value.reason and SMS.to not in info.value.reason
    assert len(fake_twilio.received) == 1


async def test_5xx_is_an_unknown_outcome_and_not_resent(sender: Sender, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script(SMS.to, Reply(500, 20500, message="Internal Server Error"))
    with pytest.raises(OutcomeUnknown, match=r"error 20500 \(HTTP 500\)"):
        await sender.send(SMS, log)
    assert len(fake_twilio.received) == 1


async def test_slow_answer_past_the_timeout_is_an_unknown_outcome(sender: Sender, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script(SMS.to, Reply(201, delay=2.0))
    with pytest.raises(OutcomeUnknown, match="request sent, no response in time"):
        await sender.send(SMS, log)
    assert len(fake_twilio.received) == 1


async def test_connection_refused_is_retried_and_then_not_sent(
    monkeypatch: pytest.MonkeyPatch, twilio_env: dict[str, str]
) -> None:
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TWILIO_BASE_URL", f"http://127.0.0.1:{port}")
    settings = Settings.from_env()
    sender = Sender(TwilioTransport(settings), settings)
    try:
        with pytest.raises(NotSent, match=r"could not connect.*after 4 attempts"):
            await sender.send(SMS, log)
    finally:
        await sender.close()


async def test_wrong_credentials_are_permanent(
    monkeypatch: pytest.MonkeyPatch, twilio_env: dict[str, str], fake_twilio: FakeTwilio
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong")
    settings = Settings.from_env()
    sender = Sender(TwilioTransport(settings), settings)
    try:
        with pytest.raises(PermanentFailure, match=r"error 20003 \(HTTP 401\)"):
            await sender.send(SMS, log)
    finally:
        await sender.close()
    assert fake_twilio.unauthorized == 1


def test_rate_limiter_spaces_calls_per_key() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=10, burst=2, clock=lambda: now[0])
    assert [limiter.reserve("a") for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    assert limiter.reserve("b") == 0.0  # keys are independent
    now[0] += 1.0  # idle for a while: the burst is available again, no more
    assert [limiter.reserve("a") for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])
