"""The client's connection: RPC calls (answers as the wire models) and event subscriptions.

:meth:`JobdClient.submit` and :class:`~daemon.client.handle.JobHandle` are the typed layer on top:
they raise error answers as exceptions. The methods that return an :class:`Answer` (``start``,
``status``, ...) give the answer as the daemon sent it, errors included, for tools like the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from daemon.bus import amqp
from daemon.client.handle import JobHandle
from daemon.client.stream import EventStream
from daemon.client.url import broker_url, check_broker_url
from daemon.contracts import (
    COMMAND_QUEUE,
    Answer,
    ErrorCode,
    JobStatus,
    ListCommand,
    ResultAnswer,
    Trace,
    error_for,
)

__all__ = ["JobdClient"]

#: Commands sent again when the connection is lost before their answer (its node went away): the
#: queries, and the starts whose message id is their idempotency key (the daemon answers a repeat as
#: it answered the first). Others (progress, stop, schedule changes) are left to the caller.
_REPEATABLE = frozenset(
    {
        "job.status",
        "job.result",
        "job.list",
        "job.logs",
        "runner.list",
        "replica.list",
        "schedule.list",
        "schedule.show",
    }
)
_IDEMPOTENT_BY_ID = frozenset({"job.start", "job.rerun"})


class JobdClient:
    def __init__(self, connection: Any, rpc: amqp.RpcClient, *, timeout: float) -> None:
        self._connection = connection
        self._rpc = rpc
        self.timeout = timeout

    @classmethod
    async def connect(
        cls, url: str | None = None, *, timeout: float = 30.0, name: str = "dm-jobd client"
    ) -> JobdClient:
        """Connect to ``url``; by default ``DM_JOBD_AMQP_URL``, else the local broker (``dm-jobd run``).

        ``url`` may name several brokers, comma-separated (one cluster's nodes): the first that answers
        is used, and when the connection to it is lost the client reconnects to the next; a call made
        meanwhile waits for that, within its timeout. Fails at once, without waiting for a broker:
        :class:`NoBroker` when none is configured or running, ``BrokerUnreachable`` when none answers,
        ``BrokerRefused`` for bad credentials.
        """
        connection = await amqp.connect_once(
            check_broker_url(url or broker_url()), name=name, timeout=timeout
        )
        rpc = amqp.RpcClient(connection)
        await rpc.start()
        return cls(connection, rpc, timeout=timeout)

    async def close(self) -> None:
        await self._rpc.close()
        await self._connection.close()

    async def __aenter__(self) -> JobdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def consumers(self) -> int:
        """How many daemons consume the command queue (0 when none has declared it yet)."""
        return await amqp.queue_consumers(self._connection, COMMAND_QUEUE) or 0

    async def call(
        self,
        kind: str,
        body: Mapping[str, Any] | bytes,
        *,
        message_id: str | None = None,
        timeout: float | None = None,
        trace: Trace | None = None,
    ) -> dict[str, Any]:
        """Send any command and return its answer as a dict (``TimeoutError`` if none comes).

        ``trace`` continues a W3C trace: the command, and for a start the job, its events and its
        environment, carry it (a start without one begins a new trace). A command whose answer was
        lost with its broker node is sent again, through the next node (until the call's timeout), when
        repeating it is harmless (a query, or a start with a message id); otherwise ``ConnectionError``
        is raised.
        """
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = trace.headers() if trace is not None else None
        repeatable = kind in _REPEATABLE or (kind in _IDEMPOTENT_BY_ID and message_id is not None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        pause = 0.05
        while True:
            try:
                reply = await self._rpc.send(
                    kind, raw, message_id=message_id, timeout=deadline - loop.time(), headers=headers
                )
                break
            except ConnectionError:
                if not repeatable or loop.time() + pause >= deadline:
                    raise
                # Until the deadline: right after a node dies, a send can fail again before the
                # connection has noticed and failed over (it then waits for the next node).
                await asyncio.sleep(pause)  # a back-off between attempts, not a synchronisation
                pause = min(pause * 2, 0.5)
        assert reply is not None
        answer: dict[str, Any] = json.loads(reply)
        return answer

    async def ask(
        self, kind: str, body: Mapping[str, Any], *, message_id: str | None = None
    ) -> dict[str, Any]:
        """:meth:`call`, with an error answer raised as the exception its code names."""
        answer = await self.call(kind, body, message_id=message_id)
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise error_for(ErrorCode(error.get("code", "internal")), str(error.get("message", answer)))
        return answer

    async def submit(
        self,
        job: Mapping[str, Any] | None = None,
        *,
        address: str | None = None,
        token: str | None = None,
        time_limit: float | None = None,
        message_id: str | None = None,
        trace: Trace | None = None,
    ) -> JobHandle:
        """Start a job and return its handle; an error answer is raised (``UnknownRunner``, ...)."""
        answer = await self.start(
            job, address=address, token=token, time_limit=time_limit, message_id=message_id, trace=trace
        )
        if not answer.ok and answer.error is not None:
            raise error_for(answer.error.code, answer.error.message)
        return JobHandle(self, answer)

    def handle(self, uid: str) -> JobHandle:
        """A handle on a job started earlier (by this client or anyone)."""
        return JobHandle(self, uid)

    async def start(
        self,
        job: Mapping[str, Any] | None = None,
        *,
        address: str | None = None,
        token: str | None = None,
        time_limit: float | None = None,
        message_id: str | None = None,
        trace: Trace | None = None,
    ) -> Answer:
        """Start a job. ``message_id`` is the idempotency key: one id starts one job, however often sent."""
        body = start_body(job, address=address, token=token, time_limit=time_limit)
        answer = await self.call("job.start", body, message_id=message_id or str(uuid.uuid4()), trace=trace)
        return Answer.model_validate(answer)

    async def status(self, uid: str) -> Answer:
        return Answer.model_validate(await self.call("job.status", {"uid": uid}))

    async def stop(self, uid: str) -> Answer:
        return Answer.model_validate(await self.call("job.stop", {"uid": uid}))

    async def result(self, uid: str) -> ResultAnswer:
        return ResultAnswer.model_validate(await self.call("job.result", {"uid": uid}))

    async def list_jobs(self, *, limit: int = 100, cursor: str | None = None, **filters: Any) -> Answer:
        """A page of jobs, newest first (``answer.jobs``; ``answer.next_cursor`` for the next page).

        ``filters`` are ``job.list``'s: ``status`` (a list), ``runner_type``, ``label``, ``triggered_by``,
        ``schedule``, ``created_since``, ``created_until`` (datetimes).
        """
        body = ListCommand.model_validate({**filters, "limit": limit, "cursor": cursor})
        wire = body.model_dump(mode="json", by_alias=True, exclude_none=True)
        return Answer.model_validate(await self.call("job.list", wire))

    async def logs(self, uid: str, offset: int = 0) -> Answer:
        """A job's kept log lines from ``offset`` (``answer.logs``, ``answer.next_offset``)."""
        return Answer.model_validate(await self.call("job.logs", {"uid": uid, "offset": offset}))

    async def rerun(self, uid: str, *, message_id: str | None = None) -> Answer:
        """Start a new job from an ended job's entity; ``message_id`` makes it idempotent."""
        answer = await self.call("job.rerun", {"uid": uid}, message_id=message_id or str(uuid.uuid4()))
        return Answer.model_validate(answer)

    async def replicas(self) -> Answer:
        """The daemons using the store, from their heartbeats (``answer.replicas``)."""
        return Answer.model_validate(await self.call("replica.list", {}))

    async def runners(self) -> Answer:
        """The runner types the daemon that answers has loaded (``answer.runners``)."""
        return Answer.model_validate(await self.call("runner.list", {}))

    async def schedules(self) -> Answer:
        """Every schedule (``answer.schedules``)."""
        return Answer.model_validate(await self.call("schedule.list", {}))

    async def schedule(self, action: str, uid: str) -> Answer:
        """``show``, ``pause``, ``resume`` or ``trigger`` the schedule of recurring job ``uid``."""
        if action not in ("show", "pause", "resume", "trigger"):
            raise ValueError(f"unknown schedule action {action!r}")
        return Answer.model_validate(await self.call(f"schedule.{action}", {"uid": uid}))

    async def progress(
        self,
        uid: str,
        *,
        status: JobStatus | None = None,
        percentage: float | None = None,
        logs: Sequence[str] | None = None,
    ) -> Answer:
        body: dict[str, Any] = {"uid": uid}
        if status is not None:
            body["status"] = status.value
        if percentage is not None:
            body["percentage"] = percentage
        if logs is not None:
            body["logs"] = list(logs)
        return Answer.model_validate(await self.call("job.progress", body))

    @contextlib.asynccontextmanager
    async def events(
        self, job: str | None = None, *, keys: Sequence[str] | None = None
    ) -> AsyncIterator[EventStream]:
        """Subscribe to status and progress events, of one job or all; unsubscribes on exit."""
        if keys is None:
            keys = [f"job.*.{job}", f"progress.{job}"] if job else ["job.#", "progress.#"]
        subscription = amqp.EventSubscription(self._connection, keys)
        await subscription.start()
        try:
            yield EventStream(subscription)
        finally:
            await subscription.close()


def start_body(
    job: Mapping[str, Any] | None, *, address: str | None, token: str | None, time_limit: float | None
) -> dict[str, Any]:
    """A ``job.start`` body: the entity inline or a DMSS address (with the caller's token)."""
    body: dict[str, Any] = {}
    if job is not None:
        body["job"] = dict(job)
    if address is not None:
        body["address"] = address
    if token is not None:
        body["token"] = token
    if time_limit is not None:
        body["timeLimitSeconds"] = time_limit
    return body
