"""The private RabbitMQ node the daemon and the tests rely on, exercised for real.

A second node (started through the command line, as shell scripts do) runs beside the session broker;
the restart test uses it so the session broker's other users are never disturbed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import pytest
import pytest_asyncio
from helpers import poll_until

from daemon.localbroker import LocalBroker

ROOT = Path(__file__).resolve().parent.parent


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m daemon.localbroker ...`` as a shell script would run it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.localbroker",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def second(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBroker]:
    """A second node, started by the CLI (which returns while the node keeps running), then adopted.

    Depends on ``broker`` so that it is skipped or failed the same way when RabbitMQ is missing.
    """
    base = tmp_path_factory.mktemp("second-broker")
    started = await cli("start", "--dir", str(base), "--name", "second")
    assert started.returncode == 0, started.stderr
    node = LocalBroker(base, name="second")
    try:
        assert started.stdout.strip() == node.url
        assert await node.is_running(), "the node must outlive the CLI command that started it"
        await node.start()  # adopts the running node
        yield node
    finally:
        stopped = await cli("stop", "--dir", str(base))
        assert stopped.returncode == 0, stopped.stderr
    assert not await node.is_running()
    assert not (base / "url").exists()


async def roundtrip(url: str, body: bytes) -> bytes:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
        message = await poll_until(lambda: queue.get(fail=False), what="the published message")
        await message.ack()
        return message.body


async def test_publish_and_consume(broker: LocalBroker, amqp_url: str) -> None:
    assert amqp_url == broker.url
    assert amqp_url.startswith("amqp://guest:guest@127.0.0.1:")
    assert (broker.base_dir / "url").read_text().strip() == amqp_url
    assert await roundtrip(amqp_url, b"hello") == b"hello"


async def test_start_is_idempotent_and_a_second_instance_adopts(broker: LocalBroker) -> None:
    pid = (broker.base_dir / "rabbitmq.pid").read_text().strip()
    await broker.start()
    again = LocalBroker(broker.base_dir)
    assert again.url == broker.url
    await again.start()
    assert (broker.base_dir / "rabbitmq.pid").read_text().strip() == pid


async def test_two_brokers_side_by_side(broker: LocalBroker, second: LocalBroker) -> None:
    def ports(node: LocalBroker) -> set[int]:
        saved = json.loads((node.base_dir / "broker.json").read_text())
        return {saved["amqp"], saved["dist"], saved["epmd"], saved["ctl_dist_min"], saved["ctl_dist_max"]}

    assert not ports(broker) & ports(second)
    assert await roundtrip(broker.url, b"one") == b"one"
    assert await roundtrip(second.url, b"two") == b"two"
    # Separate nodes: a queue declared on one does not exist on the other.
    async with await aio_pika.connect(broker.url) as first_conn:
        await (await first_conn.channel()).declare_queue("only-on-the-session-broker", auto_delete=True)
        async with await aio_pika.connect(second.url) as second_conn:
            channel = await second_conn.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue("only-on-the-session-broker", passive=True)


async def test_cli_url(second: LocalBroker) -> None:
    result = await cli("url", "--dir", str(second.base_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == second.url


async def test_restart_keeps_durable_queue_and_robust_clients_reconnect(second: LocalBroker) -> None:
    url = second.url
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await received.put(message.body)

    robust = await aio_pika.connect_robust(url, reconnect_interval=0.2)
    try:
        channel = await robust.channel()
        live = await channel.declare_queue("restart-live", durable=True)
        await live.consume(on_message)

        async with await aio_pika.connect(url) as connection:
            publisher = await connection.channel()  # publisher confirms: the message is on disk
            await publisher.declare_queue("restart-kept", durable=True)
            persistent = aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await publisher.default_exchange.publish(persistent, routing_key="restart-kept")

        await second.restart()
        assert second.url == url, "a restart keeps the port, so clients reconnect to the same URL"

        async with await aio_pika.connect(url) as connection:
            channel2 = await connection.channel()
            kept = await channel2.declare_queue("restart-kept", durable=True, passive=True)
            message = await poll_until(lambda: kept.get(fail=False), what="the persistent message")
            assert message.body == b"kept"
            await message.ack()
            await channel2.default_exchange.publish(aio_pika.Message(b"after"), routing_key="restart-live")

        body = await asyncio.wait_for(received.get(), 30)
        assert body == b"after", "the robust consumer resumed on the restarted node"
    finally:
        await robust.close()


async def test_a_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    """After a reboot the saved pid may belong to anything: stop() must leave it alone."""
    stranger = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        node = LocalBroker(tmp_path / "stale")
        (node.base_dir / "rabbitmq.pid").write_text(f"{stranger.pid}\n")
        assert not await node.is_running()
        await node.stop()
        assert stranger.returncode is None
        os.kill(stranger.pid, 0)  # still there
    finally:
        stranger.kill()
        await stranger.wait()
