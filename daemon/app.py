"""The composition root: the only module that wires store, broker, runners and services together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from daemon.bus import amqp
from daemon.config import Settings
from daemon.contracts import Log, RunnerPlugin
from daemon.dmss.client import DmssClient
from daemon.dmss.writeback import WritebackRelay
from daemon.jobs.control import JobService
from daemon.jobs.dispatch import Dispatcher, start_key
from daemon.jobs.events import EventFactory
from daemon.jobs.outbox import OutboxRelay
from daemon.jobs.registry import Registry
from daemon.jobs.service import Jobs
from daemon.jobs.supervisor import Supervisor
from daemon.scheduling.scheduler import Scheduler
from daemon.store.records import JobRecord, ScheduleRecord
from daemon.store.sqlite import SqliteStore

__all__ = ["Daemon", "runner_environ"]


def runner_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment plugins see: the process's, with settings that came from elsewhere made explicit."""
    env = dict(environ)
    env["DM_JOBD_ENABLE_SHELL"] = "1" if settings.enable_shell else "0"
    if settings.dmss_url:  # dm-job's name, which its handlers (services.dmss, config) read
        env["DMSS_URL"] = settings.dmss_url
    if settings.dmss_ca_bundle is not None:
        env["DM_JOBD_DMSS_CA_BUNDLE"] = str(settings.dmss_ca_bundle)
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
        self.registry: Registry | None = None
        self.connection: amqp.Connection | None = None
        self.replier: amqp.Replier | None = None
        self._closers: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._stopping = asyncio.Event()
        self._opened = False
        self._started = False

    def _on_close(self, what: str, close: Callable[[], Awaitable[object]]) -> None:
        """Remember how to undo one step of :meth:`start`; :meth:`stop` undoes them newest first."""
        self._closers.append((what, close))

    async def start(self) -> None:
        """Open everything and consume; a start cancelled half-way is undone by :meth:`stop`."""
        s = self.settings
        self._opened = True
        await self.store.open()
        self._on_close("store", self.store.close)
        self.control = control = JobService()
        self.registry = registry = Registry.load(
            state_dir=s.state_dir,
            environ=self.environ,
            log=self.log,
            plugin_dirs=s.plugin_dirs,
            plugins=self.plugins,
            jobs=control,
        )
        self._on_close("runners", registry.close)
        events = EventFactory(source=s.event_source, log_lines=s.event_log_lines)
        if s.dmss_url:
            verify: bool | str = str(s.dmss_ca_bundle) if s.dmss_ca_bundle else True
            self.dmss = dmss = DmssClient(s.dmss_url, timeout=s.dmss_timeout_seconds, verify=verify)
            self._on_close("dmss", dmss.close)
        self.jobs = Jobs(self.store, registry, events, s, self.environ, self.dmss)
        self.supervisor = Supervisor(
            self.jobs, log=self.log, poll_min=s.poll_min_seconds, poll_max=s.poll_max_seconds
        )
        self.connection = connection = await amqp.connect_when_up(self.amqp_url, log=self.log.warning)
        self._on_close("broker connection", connection.close)
        self.publisher = amqp.EventPublisher(connection)
        await self.publisher.start()
        self._on_close("event channel", self.publisher.close)
        self.relay = OutboxRelay(self.store, self.publisher, log=self.log)
        self.relay.start()
        self._on_close("outbox relay", self.relay.close)
        notify = [self.relay.notify]
        if self.dmss is not None:
            self.writeback = writeback = WritebackRelay(
                self.store,
                self.dmss,
                self.jobs.result_data,
                log=self.log,
                retry_max=s.dmss_retry_max_seconds,
                retry_limit=s.dmss_retry_limit,
                note=self._note_writeback,
            )
            writeback.start()
            self._on_close("write-back relay", writeback.close)
            notify.append(writeback.notify)

        def committed() -> None:
            for wake in notify:
                wake()

        self.store.on_commit = committed
        self._on_close("job watchers", self.supervisor.close)
        resumed = await self.supervisor.resume()
        self._reconciler = asyncio.create_task(
            self.supervisor.reconcile(registry.runners()), name="runner cleanup"
        )
        self._on_close("runner cleanup", lambda: _cancel(self._reconciler))
        self.command_publisher = amqp.EventPublisher(
            connection, exchange=amqp.COMMANDS, content_type="application/json"
        )
        await self.command_publisher.start()
        self._on_close("command channel", self.command_publisher.close)
        self.command_hold = amqp.CommandHold(connection)
        await self.command_hold.start()
        self._on_close("hold channel", self.command_hold.close)
        self.scheduler = scheduler = Scheduler(
            self.store,
            self._publish_command,
            events,
            log=self.log,
            hold=self._hold_command if s.schedule_lead_seconds > 0 else None,
            landed=self._landed,
            lead=s.schedule_lead_seconds,
            burst=s.schedule_burst,
        )
        supervisor = self.supervisor

        def inserted(record: JobRecord, schedule: ScheduleRecord | None) -> None:
            if schedule is not None:
                scheduler.reschedule(schedule.uid, schedule.next_fire)
            else:
                supervisor.launch(record)

        self.store.on_insert = inserted
        control.bind(self.jobs, supervisor, scheduler)
        schedules = await scheduler.start()
        self._on_close("scheduler", scheduler.close)
        self.schedule_events = amqp.EventSubscription(connection, ["schedule.*.*"])
        await self.schedule_events.start()
        self._on_close("schedule events", self.schedule_events.close)
        self._follower = asyncio.create_task(self._follow_schedules(), name="schedule follower")
        self._on_close("schedule follower", lambda: _cancel(self._follower))
        self.replier = replier = amqp.Replier(self.amqp_url, log=self.log.warning)
        replier.start()
        self._on_close("answers", replier.close)
        dispatcher = Dispatcher(
            self.jobs,
            control,
            scheduler,
            log=self.log,
            max_body_bytes=s.max_body_bytes,
            delivery_limit=s.delivery_limit,
        )

        def unsettled(exc: Exception) -> None:
            self.log.warning("a command was not settled; the broker will redeliver it", error=str(exc))

        self.consumer = amqp.CommandConsumer(
            connection,
            dispatcher,
            answer=replier.send,
            prefetch=s.prefetch,
            delivery_limit=s.delivery_limit,
            on_error=unsettled,
            log=self.log.warning,
        )
        self._on_close("consumer", self.consumer.stop)
        await self.consumer.start()
        self._started = True
        self.log.info(
            "dm-jobd ready",
            store=str(s.store_path),
            resumed=resumed,
            schedules=schedules,
            runners=[e.type for e in registry.entries() if e.runner is not None],
        )

    async def stop(self) -> None:
        """Stop consuming, finish the commands in hand, flush events; running jobs keep running.

        Every step is bounded: with the broker away nothing can be flushed, and since everything in
        flight is in the store, a prompt exit loses nothing (the next start picks it all up).
        """
        if not self._opened:
            return
        self._opened = self._started = False
        closers, self._closers = self._closers, []
        for what, close in reversed(closers):
            try:
                await asyncio.wait_for(close(), self.settings.stop_step_seconds)
            except TimeoutError:
                self.log.warning("stopping: gave up waiting", step=what)
            except Exception as exc:
                self.log.warning("stopping: a step failed", step=what, error=str(exc))
        self.log.info("dm-jobd stopped")

    async def _note_writeback(self, uid: str, why: str) -> None:
        await self.jobs.change(uid, writeback=why)

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
        """Run until SIGTERM or SIGINT, which are honoured at any moment, waiting for the broker too."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        starting = asyncio.create_task(self.start(), name="start")
        stopping = asyncio.create_task(self._stopping.wait(), name="stop request")
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # a failed start raises here
                await stopping
        finally:
            await _cancel(starting)
            await _cancel(stopping)
            await self.stop()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait for it to be over."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
