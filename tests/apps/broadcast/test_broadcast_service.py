"""The broadcast app run by eventbus against a private redis-server, sending to the fake Twilio."""

from __future__ import annotations

import logging
import random
from collections import defaultdict

import orjson
import pytest
from broadcast_fake_twilio import FakeTwilio, Reply
from broadcast_support import ACCOUNT_SID, AUTH_TOKEN, Service, run_service, wait_until

from apps.broadcast import publish_sms
from apps.broadcast.replay import kind_of, replay_not_sent
from eventbus import DeadLetterStore

FROM = "+12028165004"
TO = "+5584981341213"


def sms(to: str = TO, message: str = "hello", from_: str = FROM) -> bytes:
    return orjson.dumps({"message": message, "from": from_, "to": to})


async def test_success_is_sent_once_and_logged_masked(
    service: Service, fake_twilio: FakeTwilio, all_logs: pytest.LogCaptureFixture
) -> None:
    assert await publish_sms(service.bus, to=TO, from_=FROM, message="hello", kind="alert") == 1
    await wait_until(lambda: len(fake_twilio.received) == 1)
    await service.runner.drain(5)
    [received] = fake_twilio.received
    assert (received.to, received.from_, received.body) == (TO, FROM, "hello")
    sent_lines = [r.getMessage() for r in all_logs.records if r.getMessage().startswith("sent SM")]
    assert len(sent_lines) == 1 and "on channel-alert" in sent_lines[0] and "+5584*****1213" in sent_lines[0]
    assert await service.dead_letters() == []


async def test_429_then_success(service: Service, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script(TO, Reply(429, 20429))
    await service.publish("channel-reminder", sms())
    await wait_until(lambda: len(fake_twilio.received) == 2)
    await service.runner.drain(5)
    assert await service.dead_letters() == []
    stats = service.runner.stats.handlers["broadcast"]
    assert (stats.received, stats.handled, stats.retried) == (1, 1, 0)  # retried by the sender, not eventbus


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(400, 21211, message=f"The 'To' number {TO} is not a valid phone number."), "error 21211 (HTTP 400)"),
        (Reply(400, 21610, message="Attempt to send to unsubscribed recipient"), "error 21610 (HTTP 400)"),
        (Reply(500, 20500, message="Internal Server Error"), "unknown outcome, error 20500 (HTTP 500)"),
        (Reply(201, delay=2.0), "unknown outcome: request sent, no response in time"),
    ],
    ids=["21211", "21610", "500", "slow"],
)
async def test_failures_are_dead_lettered_once_with_the_reason(
    service: Service, fake_twilio: FakeTwilio, reply: Reply, expected: str
) -> None:
    fake_twilio.script(TO, reply)
    payload = sms()
    await service.publish("channel-broadcast", payload)
    [dead] = await service.wait_dead_letters(1)
    assert expected in dead.error
    assert TO not in dead.error  # the reason is logged: masked
    assert (dead.handler, dead.channel, dead.pattern, dead.payload) == ("broadcast", "channel-broadcast", None, payload)
    assert len(fake_twilio.received) == 1  # never resent


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"hello", "not valid UTF-8 JSON"),
        (orjson.dumps({"message": "hi", "to": TO}), "missing from"),
        (sms(to="5584981341213"), "'to' is not an E.164"),
        (sms(message="x" * 1601), "the limit is 1600"),
    ],
    ids=["not-json", "missing-field", "not-e164", "too-long"],
)
async def test_invalid_payload_is_dead_lettered_and_the_service_goes_on(
    service: Service, fake_twilio: FakeTwilio, data: bytes, expected: str
) -> None:
    await service.publish("channel-alert", data)
    [dead] = await service.wait_dead_letters(1)
    assert dead.error.startswith("rejected: invalid payload:") and expected in dead.error
    await service.publish("channel-alert", sms())
    await wait_until(lambda: len(fake_twilio.received) == 1)
    assert fake_twilio.received[0].to == TO


async def test_burst_of_1000_each_sent_exactly_once_within_limits(
    monkeypatch: pytest.MonkeyPatch, twilio_env: dict[str, str], redis_server: object, fake_twilio: FakeTwilio
) -> None:
    rate, concurrency = 200.0, 8
    monkeypatch.setenv("BROADCAST_RATE_PER_SENDER", str(rate))
    monkeypatch.setenv("BROADCAST_CONCURRENCY", str(concurrency))
    fake_twilio.default = Reply(201, delay=0.005)  # so that requests overlap
    # 800 messages from 4 busy senders, whose rate limit is the bottleneck, mixed with 200 from
    # one-off senders, which only the concurrency limit holds back.
    busy = ["+12028165001", "+12028165002", "+12028165003", "+12028165004"]
    senders = [busy[i % 4] if i % 5 else f"+1303555{i:04d}" for i in range(1000)]
    recipients = [f"+55849{i:08d}" for i in range(1000)]
    # The one-off senders' answers are slower, so that their requests pile up to the limit.
    for i in range(0, 1000, 5):
        fake_twilio.script(recipients[i], Reply(201, delay=0.03))
    # A few 429s on the way: they are retried, and still sent only once.
    for to in random.Random(4).sample([to for i, to in enumerate(recipients) if i % 5], 20):
        fake_twilio.script(to, Reply(429, 20429))

    async with run_service(redis_server.url) as svc:  # type: ignore[attr-defined]
        # All 1,000 in one burst, as a producer written the tutorial's way publishes them: plain
        # PUBLISH, no idempotency key.
        kinds = ("broadcast", "alert", "reminder")
        async with svc.bus.redis.pipeline(transaction=False) as pipe:
            for i, to in enumerate(recipients):
                pipe.publish(f"channel-{kinds[i % 3]}", sms(to=to, message=f"n{i}", from_=senders[i]))
            assert await pipe.execute() == [1] * 1000
        await wait_until(lambda: len({r.to for r in fake_twilio.received}) == 1000, timeout=20)
        await svc.runner.drain(5)
        assert await svc.dead_letters() == []

    attempts: dict[str, int] = defaultdict(int)
    for r in fake_twilio.received:
        attempts[r.to] += 1
    assert sorted(attempts.values()) == [1] * 980 + [2] * 20  # the 429s once more, nothing else
    assert sorted(r.body for r in fake_twilio.received if attempts[r.to] == 1) == sorted(
        f"n{i}" for i, to in enumerate(recipients) if attempts[to] == 1
    )

    assert fake_twilio.max_in_flight == concurrency  # reached, never exceeded
    # Per sender, any window of 0.2 s holds at most rate * 0.2 + burst (1) requests, plus one of
    # slack for the jitter between the client starting a request and the server seeing it.
    window = 0.2
    for sender in busy:
        times = sorted(r.at for r in fake_twilio.received if r.from_ == sender)
        most = max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))
        assert most <= rate * window + 2, (sender, most)
        assert times[-1] - times[0] >= (len(times) - 2) / rate  # the limit really paced them


async def test_no_secret_or_full_number_in_the_logs(
    service: Service, fake_twilio: FakeTwilio, all_logs: pytest.LogCaptureFixture
) -> None:
    body = "Your verification code is 918273"
    fake_twilio.script("+5584981340001", Reply(429, 20429))
    fake_twilio.script("+5584981340002", Reply(400, 21211, message="The 'To' number +5584981340002 is not valid"))
    fake_twilio.script("+5584981340003", Reply(500, 20500))
    for to in ("+5584981340001", "+5584981340002", "+5584981340003", "+5584981340004"):
        await service.publish("channel-alert", sms(to=to, message=body))
    await service.publish("channel-alert", orjson.dumps({"message": body, "from": FROM, "to": "+5584981340005x"}))
    await service.wait_dead_letters(3)
    await wait_until(lambda: len(fake_twilio.received) == 5)
    await service.runner.drain(5)

    # Everything a log handler could write: logger name, message and any traceback.
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = "\n".join(formatter.format(r) for r in all_logs.records)
    assert "sent SM" in text and "+5584*****0004" in text  # the logs are there, masked
    for secret in (AUTH_TOKEN, ACCOUNT_SID, body, "918273", FROM, "5584981340001", "5584981340002", "5584981340005"):
        assert secret not in text, secret


async def test_missing_credentials_stop_the_app_at_startup(
    monkeypatch: pytest.MonkeyPatch, redis_server: object
) -> None:
    import eventbus

    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "BROADCAST_DRY_RUN"):
        monkeypatch.delenv(name, raising=False)
    runner = eventbus.Runner("apps.broadcast", url=redis_server.url)  # type: ignore[attr-defined]
    with pytest.raises(eventbus.ConfigError, match="TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN not set"):
        await runner.start()


async def test_dry_run_logs_masked_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, redis_server: object, fake_twilio: FakeTwilio, all_logs: pytest.LogCaptureFixture
) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BROADCAST_DRY_RUN", "1")
    async with run_service(redis_server.url) as svc:  # type: ignore[attr-defined]
        await svc.publish("channel-alert", sms(message="secret body"))
        await wait_until(lambda: any("dry-run: would send" in r.getMessage() for r in all_logs.records))
    [line] = [r.getMessage() for r in all_logs.records if "dry-run: would send" in r.getMessage()]
    assert line == "dry-run: would send 11 chars from +1202***5004 to +5584*****1213"
    assert fake_twilio.received == []
    assert not any("secret body" in r.getMessage() for r in all_logs.records)


async def test_replay_resends_only_what_twilio_certainly_did_not_accept(
    service: Service, fake_twilio: FakeTwilio
) -> None:
    not_sent, unknown, refused = "+5584981340001", "+5584981340002", "+5584981340003"
    fake_twilio.script(not_sent, *[Reply(429, 20429)] * 4)  # every attempt (BROADCAST_MAX_ATTEMPTS=4)
    fake_twilio.script(unknown, Reply(503, 20503))
    fake_twilio.script(refused, Reply(400, 21610))
    for to in (not_sent, unknown, refused):
        await service.publish("channel-alert", sms(to=to))
    assert sorted(kind_of(d) for d in await service.wait_dead_letters(3)) == [
        "not-sent",
        "permanent",
        "unknown-outcome",
    ]

    # A forged entry, with the reason of a safe replay, for a channel the service does not read.
    forged = {"handler": "broadcast", "channel": "admin.commands", "pattern": "", "payload": b'{"cmd": "drop"}'}
    await service.bus.redis.xadd(
        "eventbus:dead-letter", forged | {"error": "rejected: twilio not sent: 429", "attempts": 1, "ts": 1}
    )
    admin = service.bus.redis.pubsub()
    await admin.subscribe("admin.commands")
    report = await replay_not_sent(service.bus, DeadLetterStore(service.bus.redis))
    assert (report.replayed, dict(report.left), report.undelivered) == (
        1,
        {"permanent": 1, "unknown-outcome": 1, "refused": 1},
        False,
    )
    assert await admin.get_message(timeout=0.2) is not None  # the subscribe confirmation
    assert await admin.get_message(timeout=0.2) is None  # and nothing else
    await admin.aclose()
    await wait_until(lambda: len(fake_twilio.sent_to(not_sent)) == 5)
    await service.runner.drain(5)
    assert sorted(kind_of(d) for d in await service.dead_letters()) == ["not-sent", "permanent", "unknown-outcome"]
    assert [len(fake_twilio.sent_to(to)) for to in (unknown, refused)] == [1, 1]


async def test_defaults_send_300_from_one_sender_at_once_each_exactly_once(
    twilio_env: dict[str, str],
    redis_server: object,
    fake_twilio: FakeTwilio,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    """No client-side pacing by default: one sender's 300 messages go to Twilio as fast as the
    request concurrency allows (Twilio queues them per sender), 429s and full sender queues
    (21611) are retried, and nothing is sent twice. At 1 message/s this took five minutes."""
    fake_twilio.default = Reply(201, delay=0.002)  # so that requests overlap
    recipients = [f"+55849{i:08d}" for i in range(300)]
    picks = random.Random(7).sample(recipients, 30)
    for to in picks[:15]:
        fake_twilio.script(to, Reply(429, 20429))
    for to in picks[15:]:
        fake_twilio.script(to, Reply(400, 21611, message=f"The 'From' number {FROM} has too many queued messages"))

    async with run_service(redis_server.url) as svc:  # type: ignore[attr-defined]
        async with svc.bus.redis.pipeline(transaction=False) as pipe:
            for i, to in enumerate(recipients):
                pipe.publish("channel-broadcast", sms(to=to, message=f"body-{i}"))
            assert await pipe.execute() == [1] * 300
        # The timeout only guards the test: paced at 1/s per sender, this would take 300 s.
        await wait_until(lambda: len(fake_twilio.received) == 330, timeout=30)
        await svc.runner.drain(5)
        assert await svc.dead_letters() == []
        assert svc.runner.stats.handlers["broadcast"].handled == 300

    attempts: dict[str, int] = defaultdict(int)
    for r in fake_twilio.received:
        attempts[r.to] += 1
    assert {to: n for to, n in attempts.items() if n != 1} == dict.fromkeys(picks, 2)
    assert sorted(r.body for r in fake_twilio.received) == sorted(
        [f"body-{i}" for i in range(300)] + [f"body-{recipients.index(to)}" for to in picks]
    )
    assert {r.from_ for r in fake_twilio.received} == {FROM}
    assert 1 < fake_twilio.max_in_flight <= 10  # BROADCAST_CONCURRENCY bounds the requests

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = "\n".join(formatter.format(r) for r in all_logs.records)
    assert "sender queue full, error 21611" in text and "rate limited, error 20429" in text
    assert "not paced" in text
    for secret in (FROM, *recipients[:50], *picks, "body-1", AUTH_TOKEN):
        assert secret not in text, secret
