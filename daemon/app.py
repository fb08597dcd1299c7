"""The composition root: the only module that wires store, broker, runners and services together."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from datetime import datetime

import structlog

from . import amqp
from .config import Settings
from .contracts import Log, RunnerPlugin
from .dispatch import Dispatcher, start_key
from .dmss import DmssClient
from .events import EventFactory
from .jobs import Jobs
from .outbox import OutboxRelay
from .registry import Registry
from .scheduler import Scheduler
from .sqlite_store import SqliteStore
from .supervisor import Supervisor
from .writeback import WritebackRelay

__all__ = ["Daemon", "runner_environ"]


def runner_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment plugins see: the process's, with settings that came from elsewhere made explicit."""
    env = dict(environ)
    env["DM_JOBD_ENABLE_SHELL"] = "1" if settings.enable_shell else "0"
    return env


class Daemon:
    """One running dm-jobd: consume commands, run jobs, relay events. ``async with`` starts and stops it."""

    def __init__(
        self,
        settings: Settings,
        amqp_url: str,
        *,
        environ: Mapping[str, str] | None = None,
        plugins: Mapping[str, RunnerPlugin] | None = None,
        log: Log | None = None,
    ) -> None:
        self.settings = settings
        self.amqp_url = amqp_url
        self.environ = runner_environ(settings, os.environ if environ is None else environ)
        self.plugins = plugins
        self.log: Log = log or structlog.get_logger("dm-jobd")
        self.store = SqliteStore(settings.store_path)
        self.dmss: DmssClient | None = None
        self.writeback: WritebackRelay | None = None
        self._stopping = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        s = self.settings
        await self.store.open()
        self.registry = Registry.load(
            state_dir=s.state_dir,
            environ=self.environ,
            log=self.log,
            plugin_dirs=s.plugin_dirs,
            plugins=self.plugins,
        )
        events = EventFactory(source=s.event_source, log_lines=s.event_log_lines)
        if s.dmss_url:
            verify: bool | str = str(s.dmss_ca_bundle) if s.dmss_ca_bundle else True
            self.dmss = DmssClient(s.dmss_url, timeout=s.dmss_timeout_seconds, verify=verify)
        self.jobs = Jobs(self.store, self.registry, events, s, self.environ, self.dmss)
        self.supervisor = Supervisor(
            self.jobs, log=self.log, poll_min=s.poll_min_seconds, poll_max=s.poll_max_seconds
        )
        self.connection = await amqp.connect(self.amqp_url)
        self.publisher = amqp.EventPublisher(self.connection)
        await self.publisher.start()
        self.relay = OutboxRelay(self.store, self.publisher, log=self.log)
        self.store.on_commit = self.relay.notify
        self.relay.start()
        if self.dmss is not None:
            self.writeback = WritebackRelay(
                self.store, self.dmss, self.jobs.result_data, log=self.log, retry_max=s.dmss_retry_max_seconds
            )
            relay, writeback = self.relay, self.writeback

            def committed() -> None:
                relay.notify()
                writeback.notify()

            self.store.on_commit = committed
            self.writeback.start()
        resumed = await self.supervisor.resume()
        self._reconciler = asyncio.create_task(
            self.supervisor.reconcile(self.registry.runners()), name="runner cleanup"
        )
        self.command_publisher = amqp.EventPublisher(
            self.connection, exchange=amqp.COMMANDS, content_type="application/json"
        )
        await self.command_publisher.start()
        self.command_hold = amqp.CommandHold(self.connection)
        await self.command_hold.start()
        self.scheduler = Scheduler(
            self.store,
            self._publish_command,
            events,
            log=self.log,
            hold=self._hold_command if s.schedule_lead_seconds > 0 else None,
            landed=self._landed,
            lead=s.schedule_lead_seconds,
            burst=s.schedule_burst,
        )
        schedules = await self.scheduler.start()
        self.schedule_events = amqp.EventSubscription(self.connection, ["schedule.*.*"])
        await self.schedule_events.start()
        self._follower = asyncio.create_task(self._follow_schedules(), name="schedule follower")
        dispatcher = Dispatcher(
            self.jobs,
            self.supervisor,
            self.scheduler,
            log=self.log,
            max_body_bytes=s.max_body_bytes,
            delivery_limit=s.delivery_limit,
        )

        def unsettled(exc: Exception) -> None:
            self.log.warning("a command was not settled; the broker will redeliver it", error=str(exc))

        self.consumer = amqp.CommandConsumer(
            self.connection,
            dispatcher,
            prefetch=s.prefetch,
            delivery_limit=s.delivery_limit,
            on_error=unsettled,
        )
        await self.consumer.start()
        self._started = True
        self.log.info(
            "dm-jobd ready",
            store=str(s.store_path),
            resumed=resumed,
            schedules=schedules,
            runners=[e.type for e in self.registry.entries() if e.runner is not None],
        )

    async def stop(self) -> None:
        """Stop consuming, finish the commands in hand, flush events; running jobs keep running."""
        if not self._started:
            return
        self._started = False
        self._follower.cancel()
        self._reconciler.cancel()
        await asyncio.gather(self._follower, self._reconciler, return_exceptions=True)
        await self.schedule_events.close()
        await self.scheduler.close()
        await self.consumer.stop()
        await self.supervisor.close()
        await self.command_publisher.close()
        await self.command_hold.close()
        await self.relay.close()
        if self.writeback is not None:
            await self.writeback.close()
        if self.dmss is not None:
            await self.dmss.close()
        await self.publisher.close()
        await self.connection.close()
        await self.registry.close()
        await self.store.close()
        self.log.info("dm-jobd stopped")

    async def _follow_schedules(self) -> None:
        async for _key, body in self.schedule_events:
            self.scheduler.learn(body)

    async def _publish_command(self, kind: str, body: bytes, message_id: str) -> None:
        """The scheduler's way onto the bus: confirmed, or an error (it retries the fire)."""
        confirmed = await self.command_publisher.publish([amqp.Outgoing(kind, message_id, body)])
        if not all(confirmed):
            raise amqp.AmqpUnavailable(f"the broker did not confirm {kind} {message_id}")

    async def _hold_command(self, commands: Sequence[tuple[str, bytes, str]], due: datetime) -> list[bool]:
        """Hand commands to the broker now, for delivery at ``due``; which ones it confirmed."""
        outgoing = [amqp.Outgoing(kind, message_id, body) for kind, body, message_id in commands]
        return await self.command_hold.hold(outgoing, round(due.timestamp() * 1000))

    async def _landed(self, message_id: str) -> bool:
        """Whether a start command reached a daemon: the dispatcher stored its idempotency key."""
        return await self.store.answer_for(start_key(message_id)) is not None

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
