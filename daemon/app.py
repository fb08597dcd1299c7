"""The composition root: the only module that wires store, broker, runners and services together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from daemon.bus import amqp
from daemon.bus.message import BusUnavailable
from daemon.bus.ports import Bus, Consumer, Holder, Publisher, Subscription
from daemon.clock import Clock, SystemClock
from daemon.config import Settings
from daemon.contracts import Log, Outgoing, RunnerPlugin
from daemon.dmss.client import DmssClient
from daemon.dmss.writeback import WritebackRelay
from daemon.jobs.control import JobService
from daemon.jobs.dispatch import Dispatcher, start_key
from daemon.jobs.events import EventFactory
from daemon.jobs.intake import Intake
from daemon.jobs.leases import Leases
from daemon.jobs.outbox import OutboxRelay
from daemon.jobs.registry import Registry
from daemon.jobs.retention import Retention
from daemon.jobs.service import Jobs
from daemon.jobs.supervisor import Supervisor
from daemon.metrics import Metrics, MetricsServer
from daemon.presence import Presence, store_mismatch
from daemon.scheduling.commands import ScheduleCommands
from daemon.scheduling.held import HeldBursts
from daemon.scheduling.scheduler import Scheduler
from daemon.scheduling.starts import Starts
from daemon.store import store_for
from daemon.store.records import JobRecord, ScheduleRecord

__all__ = ["Daemon", "runner_environ"]


def runner_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment plugins see: the process's, with settings that came from elsewhere made explicit."""
    env = dict(environ)
    if settings.dmss_url:  # dm-job's name, which its handlers (services.dmss, config) read
        env["DMSS_URL"] = settings.dmss_url
    if settings.dmss_ca_bundle is not None:
        env["DM_JOBD_DMSS_CA_BUNDLE"] = str(settings.dmss_ca_bundle)
    return env


class Daemon:
    """One running dm-jobd: consume commands, run jobs, relay events. ``async with`` starts and stops it.

    The parts are built here, without I/O; :meth:`start` opens them in order (store, runners, bus,
    relays, watchers, scheduler, consumer) and :meth:`stop` closes them in reverse. ``bus`` replaces
    the RabbitMQ bus (the in-memory one, in tests); ``clock`` the wall clock of the scheduler.
    """

    def __init__(
        self,
        settings: Settings,
        amqp_url: str | None = None,
        *,
        bus: Bus | None = None,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        plugins: Mapping[str, RunnerPlugin] | None = None,
        log: Log | None = None,
    ) -> None:
        s = self.settings = settings
        self.log: Log = log or structlog.get_logger("dm-jobd")
        if bus is None:
            if amqp_url is None:
                raise ValueError("a Daemon needs an AMQP URL or a bus")
            limits = amqp.DeadLetterLimits(
                max_length=s.dead_letter_max_length, max_age_seconds=s.dead_letter_max_age_days * 86400
            )
            bus = amqp.AmqpBus(amqp_url, log=self.log.warning, dead_letters=limits)
        self.bus: Bus = bus
        self.clock: Clock = clock or SystemClock()
        self.environ = runner_environ(settings, os.environ if environ is None else environ)
        self.plugins = plugins
        self.store = store_for(s)
        self.metrics = Metrics()
        #: The Prometheus endpoint, once started (``DM_JOBD_METRICS_PORT``).
        self.metrics_server: MetricsServer | None = None
        self.registry = Registry()
        self.control = JobService()
        self.events = EventFactory(source=s.event_source, log_lines=s.event_log_lines)
        self.dmss: DmssClient | None = None
        if s.dmss_url:
            verify: bool | str = str(s.dmss_ca_bundle) if s.dmss_ca_bundle else True
            self.dmss = DmssClient(s.dmss_url, timeout=s.dmss_timeout_seconds, verify=verify)
        self.jobs = Jobs(self.store, self.registry, self.events, s, self.environ, self.dmss, clock=self.clock)
        self.intake = Intake(self.store, self.registry, self.events, s, self.dmss, clock=self.clock)
        self.supervisor = Supervisor(
            self.jobs,
            log=self.log,
            poll_min=s.poll_min_seconds,
            poll_max=s.poll_max_seconds,
            clock=self.clock,
        )
        # Heartbeats are wall-clock liveness, whatever clock the jobs and schedules run on.
        self.presence = Presence(
            self.store,
            SystemClock(),
            self.log,
            state_dir=s.state_dir,
            every=s.replica_heartbeat_seconds,
            broker_up=lambda: self.bus.connected,
            consuming=lambda: self._started and not self._stopping.is_set(),
            describe=self.store.describe,
        )
        self.leases = Leases(
            self.store,
            self.registry,
            SystemClock(),  # leases are compared across replicas: wall-clock time
            self.log,
            owner=lambda: self.presence.id,
            # Where host-bound jobs can be followed from: their processes and files (the state folder).
            host=f"{socket.gethostname()}:{s.state_dir}",
            ttl=s.lease_seconds,
            launch=self.supervisor.launch,
            note=self._note_message,
        )
        self.intake.lease = self.leases.stamp
        starts = Starts(self.store, self._publish_command, self.clock)
        held = None
        if s.schedule_lead_seconds > 0:
            held = HeldBursts(
                self.store,
                self.events,
                starts,
                self._hold_commands,
                clock=self.clock,
                log=self.log,
                landed=self._landed,
            )
        self.scheduler = Scheduler(
            self.store,
            starts,
            self.events,
            log=self.log,
            clock=self.clock,
            held=held,
            lead=s.schedule_lead_seconds,
            burst=s.schedule_burst,
            owner=lambda: self.presence.id,
            claim_seconds=s.schedule_claim_seconds,
        )
        self.schedules = ScheduleCommands(
            self.store, self.events, starts, clock=self.clock, reschedule=self.scheduler.reschedule
        )
        self.dispatcher = Dispatcher(
            self.jobs,
            self.intake,
            self.control,
            self.schedules,
            log=self.log,
            max_body_bytes=s.max_body_bytes,
            delivery_limit=s.delivery_limit,
            metrics=self.metrics,
            replica_id=self.presence.id,
            heartbeat_seconds=s.replica_heartbeat_seconds,
            clock=self.clock,
        )
        self.jobs.on_status = self.metrics.status_changed
        self.writeback: WritebackRelay | None = None
        if self.dmss is not None:
            self.writeback = WritebackRelay(
                self.store,
                self.dmss,
                self.jobs.result_data,
                log=self.log,
                retry_max=s.dmss_retry_max_seconds,
                retry_limit=s.dmss_retry_limit,
                note=self._note_writeback,
            )
        self.retention = Retention(
            self.store,
            self.registry,
            self.clock,
            self.log,
            keep=timedelta(days=s.retention_days) if s.retention_days > 0 else None,
            every=s.retention_sweep_seconds,
            on_pruned=self.metrics.pruned.inc,
        )
        self.control.bind(self.jobs, self.intake, self.supervisor, self.schedules)
        self.store.on_commit = self._committed
        self.store.on_insert = self._inserted
        #: Opened by :meth:`start`: the bus's publishers, the outbox relay, the consumer.
        self.relay: OutboxRelay | None = None
        self._commands: Publisher | None = None
        self._holder: Holder | None = None
        self._schedule_events: Subscription | None = None
        self.consumer: Consumer | None = None
        self._closers: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._stopping = asyncio.Event()
        self._opened = False
        self._started = False

    def _on_close(self, what: str, close: Callable[[], Awaitable[object]]) -> None:
        """Remember how to undo one step of :meth:`start`; :meth:`stop` undoes them newest first."""
        self._closers.append((what, close))

    def _task(self, what: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=what)
        self._on_close(what, lambda: _cancel(task))

    async def start(self) -> None:
        """Open everything and consume; a start cancelled half-way is undone by :meth:`stop`."""
        self._opened = True
        self._on_close("replica id", self._release_replica_id)
        await self.store.open()
        self._on_close("store", self.store.close)
        self._load_runners()
        await self._open_bus()
        store_id = await self._refuse_another_store()  # before it resumes, schedules or consumes anything
        self._on_close("job leases", self.leases.release)  # after the watchers have stopped
        self._on_close("job watchers", self.supervisor.close)
        resumed = await self.leases.take(mine=True)  # leased now, watched once consuming
        self._task("job leases", self.leases.run())
        self._task("runner cleanup", self.supervisor.reconcile(self.registry.runners()))
        self._task("retention", self.retention.run())
        self._serve_metrics()
        await self._start_scheduler()
        responder = await self.bus.answer_identify(self.presence.identity(store_id))  # before consuming
        self._on_close("identity", responder.close)
        self.consumer = consumer = await self.bus.consume(
            self.dispatcher,
            prefetch=self.settings.prefetch,
            delivery_limit=self.settings.delivery_limit,
            on_error=self._unsettled,
        )
        self._on_close("consumer", consumer.stop)
        self._started = True
        self._on_close("replica table", self.presence.leave)
        await self.presence.beat()  # on the table, and healthy to `dm-jobd health`, before "ready"
        self._task("heartbeat", self.presence.run())
        self._task("resumed jobs", self.leases.watch(resumed))
        self.scheduler.start()  # loads the schedules meanwhile: the store's first reads are the beat's
        self.log.info(
            "dm-jobd ready",
            store=self.store.describe,
            resumed=len(resumed),
            runners=[e.type for e in self.registry.entries() if e.runner is not None],
        )

    async def _release_fire_claims(self) -> None:
        """A stopping replica's claims go at once: the others need not wait for them to run out."""
        await self.store.release_schedules(self.presence.id)

    async def _release_replica_id(self) -> None:
        self.presence.release_id()

    async def _refuse_another_store(self) -> str:
        """This store's id, once the replicas already consuming say they use the same store.

        A daemon with a store of its own on a shared command queue would answer from that store: a
        status would depend on which daemon took the command. It refuses to consume instead.
        """
        store_id = await self.store.store_id()
        answers = await self.bus.identify(self.settings.identify_seconds)
        refusal = store_mismatch(self.store.describe, store_id, answers)
        if refusal is not None:
            raise refusal
        return store_id

    def _serve_metrics(self) -> None:
        port = self.settings.metrics_port
        if port is None:
            return
        self.metrics.watch(lambda: self.supervisor.watching, lambda: self.bus.connected)
        server = self.metrics_server = MetricsServer(self.metrics, port, self.settings.metrics_host)
        self._on_close("metrics endpoint", lambda: asyncio.to_thread(server.close))
        every = self.settings.metrics_refresh_seconds
        self._task("metrics refresh", self.metrics.refresh_every(self.store, every, self.log.warning))
        self.log.info("metrics served", port=server.port, path="/metrics")

    def _load_runners(self) -> None:
        s = self.settings
        self.registry.load_runners(
            state_dir=s.state_dir,
            environ=self.environ,
            log=self.log,
            plugin_dirs=s.plugin_dirs,
            plugins=self.plugins,
            jobs=self.control,
            settings=s.for_runners(),
            dmss=self.dmss,
        )
        self._on_close("runners", self.registry.close)
        if self.dmss is not None:
            self._on_close("dmss", self.dmss.close)

    async def _open_bus(self) -> None:
        """Connect, then relay the outbox (and DMSS write-backs) and open the scheduler's publishers."""
        await self.bus.open()
        self._on_close("broker connection", self.bus.close)
        events = await self.bus.event_publisher()
        self._on_close("event channel", events.close)
        self.relay = relay = OutboxRelay(self.store, events, log=self.log, claimant=lambda: self.presence.id)
        relay.start()
        self._on_close("outbox relay", relay.close)
        if self.writeback is not None:
            self.writeback.start()
            self._on_close("write-back relay", self.writeback.close)
        self._commands = await self.bus.command_publisher()
        self._on_close("command channel", self._commands.close)
        self._holder = await self.bus.holder()
        self._on_close("hold channel", self._holder.close)

    async def _start_scheduler(self) -> None:
        self._on_close("fire claims", self._release_fire_claims)  # after the scheduler has stopped
        self._on_close("scheduler", self.scheduler.close)
        self._schedule_events = await self.bus.subscribe(["schedule.*.*"])
        self._on_close("schedule events", self._schedule_events.close)
        self._task("schedule follower", self._follow_schedules(self._schedule_events))

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

    # -- callbacks of the parts --------------------------------------------------------------------

    def _committed(self) -> None:
        """A transaction committed: the relays have something to send."""
        if self.relay is not None:
            self.relay.notify()
        if self.writeback is not None:
            self.writeback.notify()

    def _inserted(self, record: JobRecord, schedule: ScheduleRecord | None) -> None:
        """A job or schedule was committed: launch it, or put its first fire on the heap."""
        if schedule is not None:
            self.scheduler.reschedule(schedule.uid, schedule.next_fire)
        else:
            self.supervisor.launch(record)

    def _unsettled(self, exc: Exception) -> None:
        self.log.warning("a command was not settled; the broker will redeliver it", error=str(exc))

    async def _note_message(self, uid: str, message: str) -> None:
        await self.jobs.change(uid, message=message)

    async def _note_writeback(self, uid: str, why: str) -> None:
        await self.jobs.change(uid, writeback=why)

    async def _follow_schedules(self, events: Subscription) -> None:
        async for _key, body in events:
            self.scheduler.learn(body)

    async def _publish_command(self, command: Outgoing) -> None:
        """The scheduler's way onto the bus: confirmed, or an error (it retries the fire)."""
        if self._commands is None:
            raise BusUnavailable("the daemon is not started")
        confirmed = await self._commands.publish([command])
        if not all(confirmed):
            raise BusUnavailable(f"the broker did not confirm {command.routing_key} {command.message_id}")

    async def _hold_commands(self, commands: Sequence[Outgoing], due: datetime) -> list[bool]:
        """Hand commands to the broker now, for delivery at ``due``; which ones it confirmed."""
        if self._holder is None:
            raise BusUnavailable("the daemon is not started")
        return await self._holder.hold(commands, round(due.timestamp() * 1000))

    async def _landed(self, message_id: str) -> bool:
        """Whether a start command reached a daemon: the dispatcher stored its idempotency key."""
        return await self.store.answer_for(start_key(message_id)) is not None

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT, which are honoured at any moment, waiting for the broker too.

        ``ready`` is called once the daemon consumes (the process's own tuning: see ``dm-jobd run``).
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        starting = asyncio.create_task(self.start(), name="start")
        stopping = asyncio.create_task(self._stopping.wait(), name="stop request")
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # a failed start raises here
                if ready is not None:
                    ready()
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
