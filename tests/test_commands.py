"""Every command against the real broker: start, status, result, stop, progress, events, RPC answers."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from helpers import NOOP, REVERSE, ended, events_until, poll_until, reverse_job, shell_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus


async def test_shell_job_runs_reports_every_change_and_gives_its_result(client: JobdClient) -> None:
    async with client.events() as events:
        answer = await client.start(shell_job('echo "hello from $DM_JOB_UID"; echo second line'))
        assert answer.ok and answer.status is JobStatus.STARTING and answer.uid
        uid = answer.uid
        seen = await events_until(events, ended(uid))
    statuses = [e.data.status for e in seen if not e.type.endswith(".progress")]
    assert statuses == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED]
    completed = seen[-1]
    assert completed.type == "dm-job.job.completed"
    assert completed.subject == uid
    assert completed.data.previous_status is not None
    assert completed.data.logs[-2:] == [f"hello from {uid}", "second line"]

    status = await client.status(uid)
    assert status.ok and status.status is JobStatus.COMPLETED
    assert status.job is not None and status.job.started and status.job.ended
    assert status.job.started <= status.job.ended <= datetime.now(UTC)
    result = await client.result(uid)
    assert result.ok and result.result == f"hello from {uid}\nsecond line\n"
    assert result.media_type == "text/plain"


async def test_events_are_cloudevents_routed_by_status_and_uid(
    jobd: Daemon, vhost_url: str, client: JobdClient
) -> None:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("dm-job.events")
        failures = await channel.declare_queue(exclusive=True)
        await failures.bind(exchange, "job.failed.*")
        answer = await client.start(shell_job("exit 3"))
        assert answer.uid
        one_job = await channel.declare_queue(exclusive=True)
        await one_job.bind(exchange, f"job.*.{answer.uid}")

        async def failed_message() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await failures.get(no_ack=True, fail=False)

        message = await poll_until(failed_message, what="the failure event")
    assert message.routing_key == f"job.failed.{answer.uid}"
    assert message.content_type == "application/cloudevents+json"
    body = json.loads(message.body)
    assert body["specversion"] == "1.0" and body["type"] == "dm-job.job.failed"
    assert body["subject"] == answer.uid and body["id"] == message.message_id
    assert body["data"]["status"] == "failed" and "exit code 3" in body["data"]["message"]
    assert body["data"]["runnerType"] == "dmss://WorkflowDS/Blueprints/Shell"


async def test_reverse_description_result(client: JobdClient) -> None:
    async with client.events() as events:
        answer = await client.start(reverse_job("sdrawkcaBsIsihT"))
        assert answer.uid
        seen = await events_until(events, ended(answer.uid))
    assert [e.data.status for e in seen] == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED]
    assert (await client.result(answer.uid)).result == "ThisIsBackwards"


async def test_stop_kills_the_whole_process_group(client: JobdClient, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pid_file}; echo started; wait"
    async with client.events() as events:
        answer = await client.start(shell_job(script))
        uid = answer.uid
        assert uid
        await events_until(events, lambda e: e.subject == uid and "started" in e.data.logs)
        child = int(pid_file.read_text())
        stopped = await client.stop(uid)
        assert stopped.ok and stopped.status is JobStatus.REMOVED, stopped
        seen = await events_until(events, ended(uid))
    assert seen[-1].type == "dm-job.job.removed"

    async def child_gone() -> bool | None:
        return True if not Path(f"/proc/{child}").exists() else None

    await poll_until(child_gone, what="the script's child process to be killed")
    again = await client.stop(uid)
    assert again.ok and again.status is JobStatus.REMOVED and "nothing to stop" in again.message


async def test_progress_reports_update_the_job_and_emit_progress_events(
    client: JobdClient, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with client.events() as events:
        answer = await client.start(shell_job(f"while [ ! -e {gate} ]; do sleep 0.05; done"))
        uid = answer.uid
        assert uid
        await events_until(events, lambda e: e.subject == uid and e.data.status is JobStatus.RUNNING)
        reply = await client.progress(uid, percentage=40, logs=["step 1 of 3 done"])
        assert reply.ok and reply.job is not None and reply.job.percentage == 40
        progress = await events_until(events, lambda e: e.type == "dm-job.job.progress" and e.subject == uid)
        assert progress[-1].data.percentage == 40 and "step 1 of 3 done" in progress[-1].data.logs
        gate.touch()
        await events_until(events, ended(uid))
    status = await client.status(uid)
    assert status.status is JobStatus.COMPLETED and status.job is not None and status.job.percentage == 40


async def test_a_job_reporting_its_own_end_is_settled_by_it(client: JobdClient, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    answer = await client.start(shell_job(f"while [ ! -e {gate} ]; do sleep 0.05; done"))
    assert answer.uid
    reply = await client.progress(answer.uid, status=JobStatus.FAILED, logs=["gave up"])
    assert reply.status is JobStatus.FAILED
    later = await client.progress(answer.uid, status=JobStatus.COMPLETED)
    assert later.status is JobStatus.FAILED, "a terminal status is final"
    gate.touch()


async def test_time_limit_stops_the_job_and_fails_it(client: JobdClient) -> None:
    async with client.events() as events:
        answer = await client.start(shell_job("sleep 300"), time_limit=0.5)
        assert answer.uid
        seen = await events_until(events, ended(answer.uid))
    assert seen[-1].data.status is JobStatus.FAILED
    assert "time limit of 0.5 s" in (seen[-1].data.message or "")


async def test_result_before_completion_is_a_clear_error(client: JobdClient) -> None:
    answer = await client.start(shell_job("sleep 300"))
    assert answer.uid
    result = await client.result(answer.uid)
    assert not result.ok and result.error is not None and result.error.code == "not_finished"
    await client.stop(answer.uid)


async def test_environment_injection(settings: Settings, vhost_url: str) -> None:
    """The job sees dm-job's variables, its runner's own (NAME=value, or NAME from the daemon) and,
    for the shell runner, the daemon's environment."""
    environ = {
        "PATH": os.environ["PATH"],
        "PASSED_THROUGH": "through",
        "OF_DAEMON": "visible",
        "SCHEDULER_ONE": "exported",
    }
    settings = settings.model_copy(update={"envs_to_export": ["SCHEDULER_ONE"], "dmss_url": "http://dmss"})
    script = (
        'echo "uid=$DM_JOB_UID a=$FROM_RUNNER b=$PASSED_THROUGH c=$OF_DAEMON d=$DMSS_URL"; '
        '[ "$DMSS_TOKEN" = tok-123 ] && echo token-ok'
    )
    job = shell_job(script, environmentVariables=["FROM_RUNNER=1", "PASSED_THROUGH"])
    async with Daemon(settings, vhost_url, environ=environ), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            answer = await client.start(job, token="tok-123")
            assert answer.uid
            seen = await events_until(events, ended(answer.uid))
        assert seen[-1].data.logs[-2:] == [
            f"uid={answer.uid} a=1 b=through c=visible d=http://dmss",
            "token-ok",
        ]


async def test_triggered_by_defaults_to_the_validated_user_id(jobd: Daemon, vhost_url: str) -> None:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        exchange = await channel.get_exchange("dm-job.commands")
        body = json.dumps({"job": {"type": "x", "runner": {"type": NOOP}}}).encode()
        await exchange.publish(
            aio_pika.Message(
                body,
                type="job.start",
                message_id=str(uuid.uuid4()),
                user_id="guest",
                reply_to=replies.name,
                correlation_id="c-1",
            ),
            routing_key="job.start",
        )

        async def answer() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await replies.get(no_ack=True, fail=False)

        message = await poll_until(answer, what="the answer on a classic reply queue")
    assert message.correlation_id == "c-1"
    reply = json.loads(message.body)
    assert reply["ok"] and reply["job"]["triggeredBy"] == "guest"


async def test_a_message_straight_to_the_queue_is_typed_by_its_type_property(
    jobd: Daemon, vhost_url: str
) -> None:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        body = json.dumps(
            {"job": {"type": "x", "runner": {"type": REVERSE}, "applicationInput": {}}}
        ).encode()
        await channel.default_exchange.publish(
            aio_pika.Message(body, type="job.start", reply_to=replies.name, correlation_id="direct"),
            routing_key="dm-job.commands",
        )

        async def answer() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await replies.get(no_ack=True, fail=False)

        message = await poll_until(answer, what="the answer")
    assert json.loads(message.body)["ok"] is True
