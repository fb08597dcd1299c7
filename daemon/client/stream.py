"""A subscription to the events exchange, parsed: what ``JobdClient.events`` yields."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import ValidationError

from daemon.bus import amqp
from daemon.contracts import CloudEvent

__all__ = ["EventStream"]


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
