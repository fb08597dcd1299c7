"""Prometheus metrics: what an operator graphs and alerts on, served when ``DM_JOBD_METRICS_PORT`` is set.

Each daemon has a registry of its own (no process-wide default registry), so two daemons in one
process (tests, benchmarks) never mix their figures. Counters and histograms are updated where things
happen; what the store holds (jobs by status, schedules, backlogs) is counted every refresh period,
off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from daemon.contracts import JobStatus
from daemon.store.records import JobRecord, JobStore
from daemon.version import dm_jobd_version

__all__ = ["Metrics", "MetricsServer"]

#: Job run times: a no-op job's milliseconds to a long simulation's day.
_DURATION_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
#: From accepted to running: the runner's start (a container pull, an ACI group) dominates.
_QUEUE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600)
#: How long after its instant a fire's start reached a daemon.
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("dmjobd_build", "The running dm-jobd", registry=r).info({"version": dm_jobd_version()})
        self.commands = Counter(
            "dmjobd_commands", "Commands handled, by command and outcome (ok, or the error code)",
            ["command", "outcome"], registry=r,
        )  # fmt: skip
        self.job_duration = Histogram(
            "dmjobd_job_duration_seconds", "How long jobs ran, from started to ended, by how they ended",
            ["runner_type", "status"], buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.job_queueing = Histogram(
            "dmjobd_job_queue_seconds", "From a job's acceptance to its runner reporting it running",
            ["runner_type"], buckets=_QUEUE_BUCKETS, registry=r,
        )  # fmt: skip
        self.fire_lateness = Histogram(
            "dmjobd_schedule_fire_lateness_seconds",
            "How long after its instant a recurring job's start reached a daemon",
            buckets=_LATENESS_BUCKETS, registry=r,
        )  # fmt: skip
        self.pruned = Counter("dmjobd_jobs_pruned", "Ended jobs deleted by retention", registry=r)
        self.jobs = Gauge(
            "dmjobd_jobs",
            "Jobs in the store, by runner type and status",
            ["runner_type", "status"],
            registry=r,
        )
        self.schedules = Gauge("dmjobd_schedules", "Schedules in the store, by state", ["state"], registry=r)
        self.outbox = Gauge("dmjobd_outbox_backlog", "Events committed and not yet published", registry=r)
        self.writeback = Gauge(
            "dmjobd_writeback_backlog", "DMSS write-backs queued and not yet made", registry=r
        )
        self.watched = Gauge("dmjobd_watched_jobs", "Active jobs this daemon is watching", registry=r)
        self.broker = Gauge("dmjobd_broker_connected", "1 while the broker connection is up", registry=r)
        self._seen_jobs: set[tuple[str, str]] = set()
        self._seen_states: set[str] = set()

    # -- updated where things happen -------------------------------------------------------------------

    def command(self, kind: str, outcome: str) -> None:
        self.commands.labels(kind, outcome).inc()

    def status_changed(self, record: JobRecord, previous: JobStatus) -> None:
        """A job's committed status change: its queueing time when it runs, its duration when it ends."""
        if record.status is JobStatus.RUNNING and record.started is not None:
            waited = (record.started - record.created).total_seconds()
            self.job_queueing.labels(record.runner_type).observe(max(0.0, waited))
        if record.status.is_terminal and record.ended is not None:
            began = record.started or record.created
            ran = (record.ended - began).total_seconds()
            self.job_duration.labels(record.runner_type, record.status.value).observe(max(0.0, ran))

    def fired(self, late_seconds: float) -> None:
        self.fire_lateness.observe(max(0.0, late_seconds))

    def watch(self, watched: Callable[[], int], connected: Callable[[], bool]) -> None:
        """Gauges read at each scrape: the daemon's watchers and its broker connection."""
        self.watched.set_function(lambda: float(watched()))
        self.broker.set_function(lambda: 1.0 if connected() else 0.0)

    # -- counted from the store --------------------------------------------------------------------------

    async def refresh(self, store: JobStore) -> None:
        counts = await store.counts()
        for key in self._seen_jobs - set(counts.jobs):  # a status no job has any more reads 0, not stale
            self.jobs.labels(*key).set(0)
        for (runner_type, status), n in counts.jobs.items():
            self.jobs.labels(runner_type, status).set(n)
        self._seen_jobs |= set(counts.jobs)
        for state in self._seen_states - set(counts.schedules):
            self.schedules.labels(state).set(0)
        for state, n in counts.schedules.items():
            self.schedules.labels(state).set(n)
        self._seen_states |= set(counts.schedules)
        self.outbox.set(counts.outbox)
        self.writeback.set(counts.writeback)

    async def refresh_every(self, store: JobStore, seconds: float, log: Callable[..., object]) -> None:
        while True:
            try:
                await self.refresh(store)
            except Exception as exc:  # the store is busy or closing: the next round tries again
                log("counting the store for metrics failed", error=str(exc))
            await asyncio.sleep(seconds)  # a refresh period, not a synchronisation


class MetricsServer:
    """Prometheus's own HTTP server for one registry, on a thread of its own (``/metrics``)."""

    def __init__(self, metrics: Metrics, port: int, host: str) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, host, registry=metrics.registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
            self._server.server_close()
        self._thread.join(timeout=5)
