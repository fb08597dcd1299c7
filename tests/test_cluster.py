"""Failover across the nodes of a real three-node RabbitMQ cluster, with real faults (``kill -9``).

The daemon and the client are given every node's URL (``DM_JOBD_AMQP_URL``, comma-separated); the
command queue is a quorum queue replicated on the three nodes. Killing the node that holds its leader
in the middle of a burst of starts must lose no command and run none twice; killing the node a client
is connected to must leave the client answering, through another node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aio_pika.abc
import pytest
from helpers import JOB, NOOP, cli, poll_until
from pydantic import BaseModel, SecretStr
from rabbit_cluster import RabbitCluster
from test_schedules import recurring

from daemon.app import Daemon
from daemon.bus.amqp import _scrubbed, broker_address, broker_urls
from daemon.client import BadBrokerUrl, JobdClient
from daemon.client.url import check_broker_url
from daemon.config import BadSettings, Settings, load_settings
from daemon.contracts import COMMAND_QUEUE, COMMANDS_EXCHANGE, JobStatus
from daemon.localbroker import LocalBroker, LocalBrokerError

#: A user of the cluster whose password must never appear in a log line or an error.
USER = ("failover", "pw-5c1e9a-secret")
BURST = 300
BATCH = 20
KILL_AFTER = 100  # confirmed starts before the leader's node is killed: a third of the burst


@pytest.fixture
async def cluster(rabbit_cluster: RabbitCluster) -> RabbitCluster:
    """The module's cluster with all three nodes up (a test before may have killed one)."""
    await rabbit_cluster.revive()
    return rabbit_cluster


@pytest.fixture
async def vhost(cluster: RabbitCluster) -> str:
    """A virtual host of the test's own, for the failover user."""
    name = f"c-{uuid.uuid4().hex[:10]}"
    with contextlib.suppress(LocalBrokerError):  # made by an earlier test of this module
        await cluster.add_user(*USER)
    await cluster.add_vhost(name, user=USER[0])
    return name


def noop_job(label: str) -> dict[str, object]:
    return {"type": JOB, "label": label, "runner": {"type": NOOP}}


@dataclass
class DaemonProcess:
    """``dm-jobd run`` as a deployment runs it, its stderr (JSON log lines) kept as it comes."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self, ready: asyncio.Event) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace")
            self.lines.append(text)
            if '"dm-jobd ready"' in text:
                ready.set()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, url: str, state: Path) -> AsyncIterator[DaemonProcess]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
        env.update(
            {
                "DM_JOBD_AMQP_URL": url,
                "DM_JOBD_STATE_DIR": str(state),
                "DM_JOBD_LOG_FORMAT": "json",
                "DM_JOBD_POLL_MAX_SECONDS": "0.5",
            }
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.cli",
            "run",
            env=env,
            cwd=state.parent,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 24,  # one JSON line may hold a long traceback, or a debug line a whole frame
        )
        daemon = cls(proc)
        ready = asyncio.Event()
        daemon.reader = asyncio.create_task(daemon._read(ready))  # drained throughout: a full pipe blocks it
        try:
            waiting = asyncio.create_task(ready.wait())
            await asyncio.wait({waiting, daemon.reader}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            assert ready.is_set(), "the daemon did not become ready:\n" + "".join(daemon.lines[-20:])
            yield daemon
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await daemon.reader


async def publish_confirmed(
    connection: aio_pika.abc.AbstractConnection,
    channel: aio_pika.abc.AbstractChannel,
    messages: list[aio_pika.Message],
) -> tuple[aio_pika.abc.AbstractChannel, int]:
    """Publish a batch and wait for every confirm; a message not confirmed is published again with its
    message id (the idempotency key), as a careful producer does. The channel (a fresh one if the
    first closed) and how many were published again."""
    again = 0
    pending = messages
    for _ in range(10):
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        outcomes = await asyncio.gather(
            *(exchange.publish(m, routing_key="job.start") for m in pending), return_exceptions=True
        )
        pending = [m for m, outcome in zip(pending, outcomes, strict=True) if isinstance(outcome, Exception)]
        if not pending:
            return channel, again
        again += len(pending)
        if channel.is_closed:
            channel = await connection.channel(publisher_confirms=True)
    raise AssertionError(f"{len(pending)} starts were never confirmed")


async def test_killing_the_command_queues_leader_mid_burst_loses_no_start_and_runs_none_twice(
    cluster: RabbitCluster, vhost: str, tmp_path: Path
) -> None:
    urls = cluster.urls(vhost=vhost, user=USER)
    state = tmp_path / "state"
    async with DaemonProcess.running(",".join(urls), state) as daemon:
        # The daemon connected to node 1 (its first URL) and declared the queue there: the leader is
        # there (RabbitMQ's default, client-local), and so is the daemon's own connection.
        leader = await cluster.leader(COMMAND_QUEUE, vhost=vhost)
        assert await cluster.members(COMMAND_QUEUE, vhost=vhost) == set(cluster.nodes), "on all three"
        assert await cluster.connected_to("dm-jobd", vhost=vhost) == [leader], "the daemon on the leader"
        survivors = [url for node, url in zip(cluster.nodes, urls, strict=True) if node is not leader]

        completed: dict[str, set[str]] = {}  # job uid -> ids of its completed events (duplicates kept apart)
        async with await JobdClient.connect(",".join(survivors), timeout=30) as client:
            async with client.events(keys=["job.completed.*"]) as stream:

                async def collect() -> None:
                    async for event in stream:
                        completed.setdefault(event.subject, set()).add(event.id)

                collector = asyncio.create_task(collect())
                publisher = await aio_pika.connect(survivors[0])
                try:
                    channel = await publisher.channel(publisher_confirms=True)
                    starts = [
                        aio_pika.Message(
                            json.dumps({"job": noop_job(f"burst-{i}")}).encode(),
                            content_type="application/json",
                            type="job.start",
                            message_id=f"burst-{i}",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        )
                        for i in range(BURST)
                    ]

                    async def some_completed() -> bool | None:
                        return True if completed else None

                    again = 0
                    done_at_kill = -1
                    killed_at = gone = 0.0
                    for at in range(0, BURST, BATCH):
                        if at == KILL_AFTER:  # once the daemon is at work on them: mid-burst for it too
                            await poll_until(some_completed, what="a first completed job")
                            done_at_kill = len(completed)
                            killed_at = time.monotonic()
                            await cluster.kill(leader)
                            gone = time.monotonic() - killed_at
                        channel, n = await publish_confirmed(publisher, channel, starts[at : at + BATCH])
                        again += n
                    published = time.monotonic()

                    async def all_completed() -> bool | None:
                        return True if len(completed) >= BURST else None

                    await poll_until(all_completed, timeout=60, what=f"{BURST} completed jobs")
                    drained = time.monotonic()
                finally:
                    await publisher.close()
                    collector.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await collector
                new_leader = await cluster.leader(COMMAND_QUEUE, vhost=vhost)
                print(
                    f"killed {leader.node} (leader, and the daemon's node; gone in {gone:.2f} s) after "
                    f"{KILL_AFTER} confirmed "
                    f"starts, {done_at_kill} completed by then; the rest published "
                    f"{published - killed_at:.2f} s after the kill ({again} published again); "
                    f"all {BURST} done {drained - killed_at:.2f} s after it; leader now {new_leader.node}"
                )
                assert new_leader is not leader
                assert done_at_kill < BURST, "the kill came mid-burst"

                jobs = []
                cursor = None
                while True:
                    page = await client.list_jobs(limit=1000, cursor=cursor)
                    jobs += page.jobs or []
                    cursor = page.next_cursor
                    if not cursor:
                        break
        assert daemon.proc.returncode is None, "the daemon rode the fault out"
        connected = await cluster.connected_to("dm-jobd", vhost=vhost)
        assert connected and leader not in connected, "the daemon moved to a surviving node"

    labels = sorted(job.label or "" for job in jobs)
    assert labels == sorted(f"burst-{i}" for i in range(BURST)), "one job per start: none lost, none twice"
    assert all(job.status is JobStatus.COMPLETED for job in jobs)
    assert set(completed) == {job.uid for job in jobs}
    twice = {uid: ids for uid, ids in completed.items() if len(ids) != 1}
    assert not twice, f"jobs that completed more than once: {twice}"
    logs = "".join(daemon.lines)
    assert USER[1] not in logs, "the broker password reached the daemon's log"


async def test_a_client_answers_after_the_node_it_was_connected_to_is_killed(
    cluster: RabbitCluster, vhost: str, settings: Settings, tmp_path: Path
) -> None:
    urls = cluster.urls(vhost=vhost, user=USER)
    first, second, third = cluster.nodes
    # The daemon on node 2 (its first URL), the client on node 1: killing node 1 fails only the client over.
    daemon_url = ",".join([urls[1], urls[2], urls[0]])
    async with Daemon(settings, daemon_url), await JobdClient.connect(",".join(urls), timeout=30) as client:
        job = await client.submit(noop_job("before"))
        assert (await job.wait(timeout=20)).status is JobStatus.COMPLETED
        assert await cluster.connected_to("dm-jobd client", vhost=vhost) == [first]

        killed = time.monotonic()
        await cluster.kill(first)
        gone = time.monotonic() - killed
        job = await client.submit(noop_job("after"))  # waits for the client's failover, within its timeout
        answered = time.monotonic() - killed
        assert (await job.wait(timeout=20)).status is JobStatus.COMPLETED
        print(f"the client answered {answered:.2f} s after its node was killed (gone in {gone:.2f} s)")
        moved = await poll_until(
            lambda: _connected_elsewhere(cluster, vhost, first), what="the client's connection listed"
        )
        assert moved in (second, third)

        # A new client, and the CLI, whose first URL is the dead node: connect goes on to the next.
        async with await JobdClient.connect(",".join(urls), timeout=10) as late:
            assert (await late.status(job.uid)).status is JobStatus.COMPLETED
        code, out, err = await cli("status", job.uid, "--json", url=",".join(urls), cwd=tmp_path)
        assert code == 0, err
        assert json.loads(out)["status"] == "completed"
        assert USER[1] not in out + err

        # None answers: the error names every address and no password.
        dead = f"amqp://{USER[0]}:{USER[1]}@127.0.0.1:{first.port}/{vhost}"
        code, _, err = await cli("status", job.uid, url=f"{dead},{dead}", cwd=tmp_path)
        assert code == 2 and f"127.0.0.1:{first.port}" in err and USER[1] not in err, err


async def _connected_elsewhere(cluster: RabbitCluster, vhost: str, dead: LocalBroker) -> LocalBroker | None:
    nodes = await cluster.connected_to("dm-jobd client", vhost=vhost)
    return nodes[0] if len(nodes) == 1 and nodes[0] is not dead else None


# -- several URLs in one setting, without a cluster --------------------------------------------------


def test_several_broker_urls_are_checked_one_by_one_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    good = "amqp://u:pw-1@h1:5672/v,amqp://u:pw-2@h2/v , amqp://u:pw-3@h3:5673/v"
    monkeypatch.setenv("DM_JOBD_AMQP_URL", good)
    assert load_settings().amqp_url is not None
    assert broker_urls(good) == ["amqp://u:pw-1@h1:5672/v", "amqp://u:pw-2@h2/v", "amqp://u:pw-3@h3:5673/v"]
    assert broker_address(good) == (
        "h1:5672 (virtual host 'v'), h2:5672 (virtual host 'v'), h3:5673 (virtual host 'v')"
    )
    assert check_broker_url(good) == good

    raw_comma = "amqp://u:pw-1@h1/,amqp://u:p,w-2@h2/"  # a password's own comma splits it
    monkeypatch.setenv("DM_JOBD_AMQP_URL", raw_comma)
    with pytest.raises(BadSettings) as bad:
        load_settings()
    # "amqp://u:p" has "p" for a port: the message names the URL's place, and quotes nothing of it
    assert str(bad.value).startswith("DM_JOBD_AMQP_URL: URL 2 of 3 is not a broker URL") and "%2C" in str(
        bad.value
    )
    assert "'p'" not in str(bad.value) and "w-2" not in str(bad.value)
    with pytest.raises(BadBrokerUrl, match="URL 2 of 3") as refused:
        check_broker_url(raw_comma)
    assert "'p'" not in str(refused.value)
    monkeypatch.setenv("DM_JOBD_AMQP_URL", "amqp://u:p%2Cw-2@h2/")  # written as the README says
    assert load_settings().amqp_url is not None


def test_errors_about_several_brokers_hide_every_password() -> None:
    urls = "amqp://u:first-secret@h1/,amqp://u:sec%2Cond@h2/"
    error = OSError("refused by u:first-secret@h1 and u:sec,ond@h2 (sec%2Cond)")
    text = _scrubbed(error, urls)
    assert "first-secret" not in text and "sec,ond" not in text and "sec%2Cond" not in text
    assert text.count("***") == 3


def handled(daemon: Daemon, command: str) -> float:
    """How many ``command``s this replica has handled (its own metrics registry)."""
    return sum(
        sample.value
        for metric in daemon.metrics.registry.collect()
        if metric.name == "dmjobd_commands"
        for sample in metric.samples
        if sample.name == "dmjobd_commands_total" and sample.labels.get("command") == command
    )


async def test_three_replicas_on_one_store_answer_every_command_the_same(
    cluster: RabbitCluster, vhost: str, settings: Settings, postgres_url: str
) -> None:
    """Whichever replica consumes a command (each on another node), the answer is the shared store's."""
    urls = cluster.urls(vhost=vhost, user=USER)
    async with contextlib.AsyncExitStack() as stack:
        daemons = [
            await stack.enter_async_context(
                Daemon(
                    settings.model_copy(
                        update={"store": SecretStr(postgres_url), "state_dir": settings.state_dir / f"r{n}"}
                    ),
                    ",".join(urls[n:] + urls[:n]),  # replica n on node n
                )
            )
            for n in range(3)
        ]
        client = await stack.enter_async_context(await JobdClient.connect(",".join(urls), timeout=30))
        done = await client.submit(noop_job("answered alike"))
        assert (await done.wait(timeout=20)).status is JobStatus.COMPLETED
        schedule = str((await client.start(recurring("0 0 1 1 *"))).uid)
        asks: dict[str, Callable[[], Awaitable[BaseModel]]] = {
            "job.status": lambda: client.status(done.uid),
            "job.result": lambda: client.result(done.uid),
            "job.list": lambda: client.list_jobs(limit=10),
            "job.logs": lambda: client.logs(done.uid),
            "schedule.show": lambda: client.schedule("show", schedule),
            "schedule.list": client.schedules,
            "job.progress": lambda: client.progress(done.uid, percentage=50),  # ended: refused alike
            "job.stop": lambda: client.stop(done.uid),  # ended: the same answer from each
        }
        for command, ask in asks.items():
            answers = [(await ask()).model_dump_json() for _ in range(12)]
            assert len(set(answers)) == 1, (command, set(answers))
            by_replica = [handled(d, command) for d in daemons]
            assert all(n > 0 for n in by_replica), f"{command}: not every replica answered: {by_replica}"
        views = [(await client.replicas()).replicas or [] for _ in range(12)]
        assert all({v.id for v in listed} == {d.presence.id for d in daemons} for listed in views)
        assert {next(v.id for v in listed if v.answering) for listed in views} == {
            d.presence.id for d in daemons
        }, "each replica answered replica.list, and named itself"
