"""W3C trace context from a command to everything it causes, on the real broker: the answer, every
event (AMQP headers and the CloudEvents extension), the job's environment, and the HTTP calls the
daemon makes for the job (DMSS, Radix, ARM) as the fakes of those services receive them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import structlog
from conftest import DMSS_TOKEN
from fake_arm import FakeAzure, fixtures
from fake_arm.fixtures import azure_job, make_runner
from fake_dmss import FakeDmss
from fake_radix import FakeRadixScheduler
from helpers import RecordingLog, poll_until, shell_job
from test_dmss import DS, entity_where, input_entity, reverse_by_reference
from test_radix import TEMPLATE, radix_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.contracts import JobSpec, Trace, current_trace
from plugins.radix import RadixRunner

fake_azure = fixtures.fake_azure
PARENT = Trace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=abc")


@dataclass
class Peer:
    """A raw AMQP peer: sends commands with any headers, reads answers and events with theirs."""

    channel: aio_pika.abc.AbstractChannel
    replies: aio_pika.abc.AbstractQueue
    events: aio_pika.abc.AbstractQueue

    async def send(self, kind: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
        message_id = str(uuid.uuid4())
        exchange = await self.channel.get_exchange("dm-job.commands")
        message = aio_pika.Message(
            json.dumps(body).encode(),
            type=kind,
            message_id=message_id,
            reply_to=self.replies.name,
            correlation_id=message_id,
            headers=dict[str, Any](headers or {}),
        )
        await exchange.publish(message, routing_key=kind)
        return message_id

    async def answer(self) -> tuple[dict[str, Any], dict[str, Any]]:
        async def get() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await self.replies.get(no_ack=True, fail=False)

        message = await poll_until(get, what="an answer")
        return json.loads(message.body), dict(message.headers or {})

    async def events_until_end(self, uid: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        seen: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def ended() -> bool | None:
            message = await self.events.get(no_ack=True, fail=False)
            if message is None:
                return None
            if json.loads(message.body)["subject"] == uid:
                seen.append(message)
                if message.routing_key and message.routing_key.startswith(("job.completed", "job.failed")):
                    return True
            return None

        await poll_until(ended, every=0.01, what=f"the end of {uid}")
        return seen


@pytest.fixture
async def peer(jobd: Daemon, vhost_url: str) -> AsyncIterator[Peer]:
    async with await aio_pika.connect(vhost_url) as connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        events = await channel.declare_queue(exclusive=True)
        for key in ("job.#", "progress.#"):
            await events.bind("dm-job.events", key)
        yield Peer(channel, replies, events)


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_a_traceparent_travels_to_the_answer_every_event_and_the_jobs_environment(
    peer: Peer, client: JobdClient
) -> None:
    await peer.send("job.start", {"job": shell_job('echo "$TRACEPARENT" > $DM_JOB_RESULT')}, PARENT.headers())
    answer, headers = await peer.answer()
    job = Trace.parse(text(headers["traceparent"]), text(headers["tracestate"]))
    assert job is not None and job.trace_id == PARENT.trace_id, "the job continues the caller's trace"
    assert job.span_id != PARENT.span_id, "in a span of the daemon's own"
    assert job.tracestate == "vendor=abc"
    events = await peer.events_until_end(answer["uid"])
    assert len(events) >= 3
    for event in events:
        assert text((event.headers or {})["traceparent"]) == job.traceparent
        assert json.loads(event.body)["traceparent"] == job.traceparent, "the CloudEvents extension"
    handle = client.handle(answer["uid"])
    assert (await handle.status()).traceparent == job.traceparent
    assert (await handle.result()) == job.traceparent + "\n", "TRACEPARENT in the job's environment"


async def test_a_start_without_a_trace_or_with_a_broken_one_begins_a_new_trace(peer: Peer) -> None:
    traces = []
    for headers in (None, {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}):
        await peer.send("job.start", {"job": shell_job("true")}, headers)
        answer, got = await peer.answer()
        trace = Trace.parse(text(got["traceparent"]))
        assert trace is not None and trace.trace_id != "0" * 32
        [first, *_] = await peer.events_until_end(answer["uid"])
        assert text((first.headers or {})["traceparent"]) == trace.traceparent
        traces.append(trace.trace_id)
    assert traces[0] != traces[1], "each start its own trace"


async def test_any_command_with_a_trace_answers_in_it(peer: Peer, client: JobdClient) -> None:
    job = await client.submit(shell_job("true"))
    await peer.send("job.status", {"uid": job.uid}, PARENT.headers())
    answer, headers = await peer.answer()
    assert answer["ok"] and Trace.parse(text(headers["traceparent"])).trace_id == PARENT.trace_id  # type: ignore[union-attr]


async def test_the_dmss_calls_for_a_job_carry_its_trace(dmss_client: JobdClient, fake_dmss: FakeDmss) -> None:
    address = fake_dmss.add(DS, reverse_by_reference(input_entity(fake_dmss)))
    job = await dmss_client.submit(address=address, token=DMSS_TOKEN, trace=PARENT)
    await job.wait(timeout=20)
    await entity_where(fake_dmss, address, "completed")
    assert fake_dmss.seen, "DMSS was called"
    traced = [Trace.parse(s.traceparent) for s in fake_dmss.seen]
    assert all(t is not None and t.trace_id == PARENT.trace_id for t in traced), fake_dmss.seen
    assert {s.method for s in fake_dmss.seen} >= {"GET", "PUT"}, "the read at the start and the write-backs"


async def test_radix_and_arm_calls_carry_the_current_trace(fake_azure: FakeAzure, tmp_path: Path) -> None:
    async with FakeRadixScheduler() as radix:
        runner = RadixRunner(structlog.get_logger(), url_template=TEMPLATE)
        reset = current_trace.set(PARENT)
        try:
            await runner.start(JobSpec(uid=str(uuid.uuid4()), entity=radix_job(radix.port)))
        finally:
            current_trace.reset(reset)
            await runner.close()
        assert radix.traceparents and set(radix.traceparents) == {PARENT.traceparent}

    azure = make_runner(fake_azure.env(), tmp_path, RecordingLog())
    reset = current_trace.set(PARENT)
    try:
        await azure.start(azure_job())
    finally:
        current_trace.reset(reset)
        await azure.close()
    [put] = fake_azure.arm.received("PUT")
    assert put.headers["traceparent"] == PARENT.traceparent and put.headers["tracestate"] == "vendor=abc"


def test_trace_context_parsing_follows_the_w3c_rules() -> None:
    assert Trace.parse(PARENT.traceparent) == Trace(PARENT.traceparent)
    for bad in (
        None,
        5,
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is invalid
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has no more
    ):
        assert Trace.parse(bad) is None, bad
    future = Trace.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
    assert future is not None and future.traceparent.endswith("-01"), "a later version: its known part"
    assert Trace.parse(PARENT.traceparent, "x" * 600) == Trace(PARENT.traceparent), "oversized state dropped"
    child = PARENT.child()
    assert (child.trace_id, child.flags) == (
        PARENT.trace_id,
        PARENT.flags,
    ) and child.span_id != PARENT.span_id
