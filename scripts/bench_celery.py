"""The Celery side of ``scripts/bench --compare``: a no-op task, its publisher and a bare worker.

Run by scripts/bench, each part in a process of its own, never imported by the daemon (Celery is the
``bench`` extra only):

    python scripts/bench_celery.py publish URL QUEUE COUNT
    python scripts/bench_celery.py worker URL QUEUE COUNT DONE_FILE

``publish`` declares QUEUE (a quorum queue, as dm-jobd's command queue is, on a direct exchange of the
same name) and sends COUNT no-op tasks to it through Celery's own client, numbered 0..COUNT-1.
``worker`` runs a Celery worker on QUEUE: ``--pool threads -c 8``, no result backend
(``task_ignore_result``), Celery's default early acks and prefetch, events, mingle, gossip, heartbeat
and remote control off. The task counts the distinct numbers it ran under a lock; at the first, every
1000th and the COUNT-th it writes DONE_FILE (JSON, replaced atomically): ``first`` and ``last`` (that
completion's ``time.monotonic()``, the system-wide clock scripts/bench reads too), ``distinct`` and
``executions`` (more executions than numbers: a task ran twice).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from kombu import Exchange, Queue

TASK = "dm_jobd_bench.noop"
POOL, CONCURRENCY = "threads", 8


class BareConsumer(Consumer):
    """Celery's consumer without native delayed delivery (Celery 5.5+ includes it when it sees a quorum
    queue: 28 queues and 29 exchanges named ``celery_delayed_*``, shared by every app on the virtual
    host, declared at start-up). It serves countdown and ETA tasks only, which the bench never sends."""

    class Blueprint(Consumer.Blueprint):
        default_steps = [s for s in Consumer.Blueprint.default_steps if not s.endswith(":DelayedDelivery")]


def make_app(url: str, queue: str) -> Celery:
    """The bench's Celery app: every name it declares is ``queue`` or starts with it."""
    app = Celery("dm_jobd_bench", broker=url, set_as_current=True)
    app.conf.update(
        task_queues=[
            Queue(
                queue,
                Exchange(queue, type="direct", durable=True),
                routing_key=queue,
                durable=True,
                queue_arguments={"x-queue-type": "quorum"},
            )
        ],
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_create_missing_queues=False,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        # Unused with events and remote control off; named after the queue all the same, so nothing
        # the bench could leave on the broker is another app's.
        event_exchange=f"{queue}.events",
        control_exchange=f"{queue}.control",
        worker_consumer=BareConsumer,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
    )
    return app


class Counter:
    """Completions in this worker process (a threads pool: one process), distinct by task number."""

    def __init__(self, target: int, done_file: Path) -> None:
        self.target = target
        self.done_file = done_file
        self.lock = threading.Lock()
        self.seen: set[int] = set()
        self.executions = 0
        self.first: float | None = None

    def completed(self, number: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.executions += 1
            if number in self.seen:
                return
            self.seen.add(number)
            if self.first is None:
                self.first = now
            distinct = len(self.seen)
            if distinct == 1 or distinct % 1000 == 0 or distinct == self.target:
                self._write(now, distinct)

    def _write(self, now: float, distinct: int) -> None:
        state = {"first": self.first, "last": now, "distinct": distinct, "executions": self.executions}
        part = self.done_file.with_name(self.done_file.name + ".part")
        part.write_text(json.dumps(state))
        os.replace(part, self.done_file)


COUNTER: Counter | None = None


def register(app: Celery) -> Any:
    @app.task(name=TASK, ignore_result=True)
    def noop(number: int) -> None:
        if COUNTER is not None:
            COUNTER.completed(number)

    return noop


def publish(url: str, queue: str, count: int) -> None:
    app = make_app(url, queue)
    noop = register(app)
    with app.connection_for_write() as connection:
        app.amqp.queues[queue].bind(connection.default_channel).declare()
        with app.producer_or_acquire() as producer:
            for number in range(count):
                noop.apply_async((number,), producer=producer)


def worker(url: str, queue: str, count: int, done_file: Path) -> None:
    global COUNTER
    COUNTER = Counter(count, done_file)
    app = make_app(url, queue)
    register(app)
    app.worker_main(
        [
            "worker",
            *("--pool", POOL, "--concurrency", str(CONCURRENCY)),
            *("--without-mingle", "--without-gossip", "--without-heartbeat"),
            *("--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "WARNING"),
        ]
    )


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "publish":
        publish(argv[1], argv[2], int(argv[3]))
    elif len(argv) == 5 and argv[0] == "worker":
        worker(argv[1], argv[2], int(argv[3]), Path(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
