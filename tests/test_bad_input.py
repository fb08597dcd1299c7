"""Bad input gets a clear error answer, is dead-lettered, and never stops the daemon serving."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from helpers import ended, events_until, poll_until, reverse_job, shell_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings


@dataclass
class Wire:
    """A raw AMQP peer: publishes exactly the bytes given, reads answers and dead letters."""

    channel: aio_pika.abc.AbstractChannel
    replies: aio_pika.abc.AbstractQueue

    async def send(self, kind: str, body: bytes, *, reply: bool = True) -> str:
        message_id = str(uuid.uuid4())
        exchange = await self.channel.get_exchange("dm-job.commands")
        await exchange.publish(
            aio_pika.Message(
                body,
                type=kind,
                message_id=message_id,
                reply_to=self.replies.name if reply else None,
                correlation_id=message_id,
            ),
            routing_key=kind if kind.count(".") == 1 else "job.unknown",
        )
        return message_id

    async def answer(self, message_id: str) -> dict[str, Any]:
        async def get() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await self.replies.get(no_ack=True, fail=False)

        message = await poll_until(get, what="an answer")
        assert message.correlation_id == message_id
        return dict(json.loads(message.body))

    async def dead_letters(self, count: int) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
        queue = await self.channel.get_queue("dm-job.dead-letter")
        found: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}

        async def enough() -> bool | None:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None and message.message_id:
                found[message.message_id] = message
            return True if len(found) >= count else None

        await poll_until(enough, every=0.01, what=f"{count} dead letters")
        return found


@pytest.fixture
async def wire(jobd: Daemon, vhost_url: str) -> AsyncIterator[Wire]:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        yield Wire(channel, replies)


BAD = [
    ("job.status", b"{not json", "bad_json"),
    ("job.status", b"\xff\xfe", "bad_json"),
    ("job.status", b"[1, 2]", "invalid"),
    ("job.stop", json.dumps({"uid": 5}).encode(), "invalid"),
    ("job.start", json.dumps({"job": {"type": "x"}}).encode(), "invalid"),
    ("job.start", json.dumps({"job": {"type": "x", "runner": {"type": "x"}}, "jobb": 1}).encode(), "invalid"),
    ("job.start", json.dumps({"job": reverse_job("a"), "address": "dmss://ds/x"}).encode(), "invalid"),
    ("job.explode", b"{}", "unknown_command"),
    (
        "job.start",
        json.dumps({"job": {"type": "x", "runner": {"type": "dmss://No/Such"}}}).encode(),
        "unknown_runner",
    ),
    ("job.status", json.dumps({"uid": "no-such-job"}).encode(), "unknown_job"),
    ("job.progress", json.dumps({"uid": "no-such-job", "percentage": 5}).encode(), "unknown_job"),
    ("job.progress", json.dumps({"uid": "x", "percentage": 500}).encode(), "invalid"),
    ("job.start", json.dumps({"address": "dmss://DS/$1", "token": "t"}).encode(), "dmss_not_configured"),
    ("job.start", json.dumps({"job": shell_job("true", environmentVariables="A=1")}).encode(), "invalid"),
    ("job.status", b'{"uid": "' + b"x" * (2 << 20) + b'"}', "too_large"),
]


async def test_each_bad_message_is_answered_and_dead_lettered_and_the_daemon_keeps_serving(
    wire: Wire, client: JobdClient
) -> None:
    sent: dict[str, str] = {}
    for kind, body, code in BAD:
        message_id = await wire.send(kind, body)
        answer = await wire.answer(message_id)
        assert answer["ok"] is False, (kind, body[:60])
        assert answer["error"]["code"] == code, (kind, body[:60], answer)
        assert answer["error"]["message"] and answer["message"] == answer["error"]["message"]
        sent[message_id] = kind
    silent = await wire.send("job.status", b"no reply wanted", reply=False)
    dead = await wire.dead_letters(len(sent) + 1)
    assert set(sent) | {silent} <= set(dead)
    some = dead[silent]
    assert some.headers.get("x-first-death-reason") == "rejected"

    async with client.events() as events:
        started = await client.start(reverse_job("still serving"[::-1]))
        assert started.uid
        await events_until(events, ended(started.uid))
    assert (await client.result(started.uid)).result == "still serving"


async def test_validation_errors_name_the_field_but_never_echo_the_token(wire: Wire) -> None:
    body = json.dumps(
        {"job": {"type": "x", "runner": {"type": "y"}}, "token": "s3cr3t", "timeLimitSeconds": -1}
    )
    answer = await wire.answer(await wire.send("job.start", body.encode()))
    assert answer["error"]["code"] == "invalid"
    assert "timeLimitSeconds" in answer["message"]
    assert "s3cr3t" not in json.dumps(answer)


async def test_shell_jobs_are_refused_while_the_shell_runner_is_off(
    settings: Settings, vhost_url: str
) -> None:
    off = settings.model_copy(update={"enable_shell": False})
    async with Daemon(off, vhost_url), await JobdClient.connect(vhost_url) as client:
        raw = await client.call("job.start", {"job": shell_job("echo no")})
    assert raw["ok"] is False and raw["error"]["code"] == "runner_disabled"
    assert "DM_JOBD_ENABLE_SHELL=1" in raw["error"]["message"]
