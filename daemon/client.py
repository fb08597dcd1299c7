"""An async Python client for dm-jobd: what DM backends import, and what the CLI is built on.

async with await JobdClient.connect(url) as client:
    answer = await client.start(entity)
    async with client.events(job=answer.uid) as events:
        async for event in events:
            ...
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from daemon.bus import amqp
from daemon.contracts import COMMAND_QUEUE, Answer, CloudEvent, JobStatus, ResultAnswer

__all__ = ["EventStream", "JobdClient"]


class EventStream:
    """Events as they arrive, parsed; bodies that are not CloudEvents are skipped."""

    def __init__(self, subscription: amqp.EventSubscription) -> None:
        self._subscription = subscription

    async def raw(self, timeout: float | None = None) -> tuple[str, bytes]:
        """The next event of any kind (job, progress or schedule): its routing key and JSON body."""
        return await self._subscription.get(timeout)

    async def next(self, timeout: float | None = None) -> CloudEvent:
        while True:
            _key, body = await self._subscription.get(timeout)
            try:
                return CloudEvent.model_validate_json(body)
            except ValidationError:
                continue

    def __aiter__(self) -> AsyncIterator[CloudEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[CloudEvent]:
        while True:
            yield await self.next()


class JobdClient:
    def __init__(self, connection: Any, rpc: amqp.RpcClient, *, timeout: float) -> None:
        self._connection = connection
        self._rpc = rpc
        self.timeout = timeout

    @classmethod
    async def connect(cls, url: str, *, timeout: float = 30.0, name: str = "dm-jobd client") -> JobdClient:
        connection = await amqp.connect(url, name=name)
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
    ) -> dict[str, Any]:
        """Send any command and return its answer as a dict (``TimeoutError`` if none comes)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = await self._rpc.send(kind, raw, message_id=message_id, timeout=timeout or self.timeout)
        assert reply is not None
        answer: dict[str, Any] = json.loads(reply)
        return answer

    async def start(
        self,
        job: Mapping[str, Any] | None = None,
        *,
        address: str | None = None,
        token: str | None = None,
        time_limit: float | None = None,
        message_id: str | None = None,
    ) -> Answer:
        """Start a job. ``message_id`` is the idempotency key: one id starts one job, however often sent."""
        body: dict[str, Any] = {}
        if job is not None:
            body["job"] = dict(job)
        if address is not None:
            body["address"] = address
        if token is not None:
            body["token"] = token
        if time_limit is not None:
            body["timeLimitSeconds"] = time_limit
        answer = await self.call("job.start", body, message_id=message_id or str(uuid.uuid4()))
        return Answer.model_validate(answer)

    async def status(self, uid: str) -> Answer:
        return Answer.model_validate(await self.call("job.status", {"uid": uid}))

    async def stop(self, uid: str) -> Answer:
        return Answer.model_validate(await self.call("job.stop", {"uid": uid}))

    async def result(self, uid: str) -> ResultAnswer:
        return ResultAnswer.model_validate(await self.call("job.result", {"uid": uid}))

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
