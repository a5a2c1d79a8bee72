"""Each message sent once, through restarts, gaps and republishes: the SMS channels keep a history,
the service resumes after a restart, and every message carries an idempotency key (real
redis-server, the real twilio client against the fake Twilio)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from broadcast_fake_twilio import FakeTwilio, Reply
from broadcast_support import Service, run_service, wait_until

import eventbus
from apps.broadcast import channel_for, publish_sms
from apps.broadcast.cli import main
from apps.broadcast.replay import kind_of, replay_not_sent
from eventbus import DeadLetterStore

FROM = "+12028165004"


def number(i: int) -> str:
    return f"+55849{i:08d}"


async def publish(bus: Any, numbers: range, kind: str = "alert") -> list[int]:
    return [await publish_sms(bus, to=number(i), from_=FROM, message=f"m{i}", kind=kind) for i in numbers]


def sent_once(fake: FakeTwilio, numbers: range) -> bool:
    counts = Counter(r.to for r in fake.received)
    return all(counts[number(i)] == 1 for i in numbers)


async def test_a_message_published_twice_with_its_key_is_sent_once(
    service: Service, fake_twilio: FakeTwilio, all_logs: pytest.LogCaptureFixture
) -> None:
    await publish_sms(service.bus, to=number(1), from_=FROM, message="hi", kind="alert", key="appt-42")
    await wait_until(lambda: len(fake_twilio.received) == 1)
    # The producer publishes it again (a retry after an error, say), and another message.
    await publish_sms(service.bus, to=number(1), from_=FROM, message="hi", kind="alert", key="appt-42")
    await publish_sms(service.bus, to=number(2), from_=FROM, message="hi", kind="alert")  # a key of its own
    await wait_until(lambda: len(fake_twilio.received) == 2)
    await service.runner.drain(5)
    assert sorted(r.to for r in fake_twilio.received) == [number(1), number(2)]
    assert service.runner.stats.handlers["broadcast"].handled == 3
    [skipped] = [r.getMessage() for r in all_logs.records if r.getMessage().startswith("skipped")]
    assert "to +5584*****0001" in skipped and "key appt-42 was used already (sent as SM" in skipped


async def test_a_restarted_service_sends_what_was_published_while_it_was_down_exactly_once(
    twilio_env: dict[str, str], redis_server: object, fake_twilio: FakeTwilio
) -> None:
    url = redis_server.url  # type: ignore[attr-defined]
    async with run_service(url) as svc:
        assert await publish(svc.bus, range(0, 50)) == [1] * 50
        await wait_until(lambda: sent_once(fake_twilio, range(0, 50)))
    async with eventbus.connect(url) as bus:  # the service is stopped: these wait in the history
        assert await publish(bus, range(50, 100)) == [0] * 50
        assert await publish(bus, range(100, 110), kind="reminder") == [0] * 10
    async with run_service(url) as svc:
        assert await publish(svc.bus, range(110, 150)) == [1] * 40
        await wait_until(lambda: len(fake_twilio.received) >= 150, timeout=20)
        await svc.runner.drain(5)
        assert svc.runner.stats.channels["channel-alert"].resumed == 50
        assert svc.runner.stats.channels["channel-reminder"].resumed == 10
    assert sent_once(fake_twilio, range(0, 150)) and len(fake_twilio.received) == 150


async def test_a_killed_subscription_recovers_without_sending_twice(service: Service, fake_twilio: FakeTwilio) -> None:
    fake_twilio.default = Reply(201, delay=0.002)
    assert await publish(service.bus, range(0, 100)) == [1] * 100
    killed = await service.bus.redis.client_kill_filter(_type="pubsub")
    assert killed >= 1
    await publish(service.bus, range(100, 300))  # some while the service reconnects
    await wait_until(lambda: len({r.to for r in fake_twilio.received}) == 300, timeout=20)
    await service.runner.drain(5)
    assert sent_once(fake_twilio, range(0, 300)) and len(fake_twilio.received) == 300
    assert service.runner.stats.channels["channel-alert"].unrecovered == 0


async def test_replays_send_what_was_not_sent_and_resend_an_unknown_outcome_only_by_hand(
    service: Service, fake_twilio: FakeTwilio, redis_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    not_sent, unknown = number(1), number(2)
    fake_twilio.script(not_sent, *[Reply(429, 20429)] * 4)  # every attempt (BROADCAST_MAX_ATTEMPTS=4)
    fake_twilio.script(unknown, Reply(503, 20503))
    for to in (not_sent, unknown):
        await publish_sms(service.bus, to=to, from_=FROM, message="hi", kind="alert")
    letters = await service.wait_dead_letters(2)
    report = await replay_not_sent(service.bus, DeadLetterStore(service.bus.redis))
    assert (report.replayed, dict(report.left)) == (1, {"unknown-outcome": 1})
    await wait_until(lambda: len(fake_twilio.sent_to(not_sent)) == 5)  # its key was released: sent

    # The unknown outcome keeps its key: delivered again, it is skipped...
    [entry] = [d for d in letters if kind_of(d) == "unknown-outcome"]
    await service.bus.publish(channel_for("alert"), entry.payload)
    await wait_until(lambda: service.runner.stats.handlers["broadcast"].handled >= 2)
    await service.runner.drain(5)
    assert len(fake_twilio.sent_to(unknown)) == 1
    # ...until a person, having checked Twilio's log, resends it by id.
    url = redis_server.url  # type: ignore[attr-defined]
    assert await asyncio.to_thread(main, ["replay", "--url", url, "--id", entry.id]) == 0
    assert f"replayed {entry.id}" in capsys.readouterr().out
    await wait_until(lambda: len(fake_twilio.sent_to(unknown)) == 2)
    assert [kind_of(d) for d in await service.dead_letters()] == []
