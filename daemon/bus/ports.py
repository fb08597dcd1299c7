"""What the daemon needs from a message bus, as protocols: the AMQP bus and the in-memory one fit them.

The composition root asks a :class:`Bus` for its parts; nothing else in the daemon knows which bus
it runs on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from daemon.bus.message import Handler
from daemon.contracts import Outgoing

__all__ = ["Bus", "Consumer", "Holder", "Publisher", "Subscription"]


class Publisher(Protocol):
    async def publish(self, messages: Sequence[Outgoing]) -> list[bool]:
        """Publish all and wait for the broker's confirms; ``True`` where it confirmed.

        Raises :class:`~daemon.bus.message.BusUnavailable` when nothing can be published now.
        """
        ...

    async def close(self) -> None: ...


class Holder(Protocol):
    async def hold(self, messages: Sequence[Outgoing], due_ms: int) -> list[bool]:
        """Hand commands to the broker now, for delivery to the command queue at ``due_ms`` (epoch ms)."""
        ...

    async def close(self) -> None: ...


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        """Events as ``(routing key, body)``, as they arrive."""
        ...

    async def close(self) -> None: ...


class Consumer(Protocol):
    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking deliveries, let those in hand finish and settle, stop answering."""
        ...


class Closer(Protocol):
    async def close(self) -> None: ...


class Bus(Protocol):
    async def open(self) -> None:
        """Connect (waiting for the broker if need be)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now (the metrics' broker state)."""
        ...

    async def close(self) -> None: ...

    async def event_publisher(self) -> Publisher:
        """A confirming publisher to the events exchange."""
        ...

    async def command_publisher(self) -> Publisher:
        """A confirming publisher to the commands exchange (the scheduler's fires)."""
        ...

    async def holder(self) -> Holder: ...

    async def identify(self, timeout: float) -> list[bytes]:
        """Ask the replicas consuming the command queue who they are (their stores): their answers."""
        ...

    async def answer_identify(self, identity: bytes) -> Closer:
        """Answer other replicas' ``identify`` with ``identity`` until closed."""
        ...

    async def subscribe(self, keys: Sequence[str]) -> Subscription:
        """A private subscription to the events exchange for these binding keys."""
        ...

    async def consume(
        self,
        handler: Handler,
        *,
        prefetch: int,
        delivery_limit: int,
        on_error: Callable[[Exception], None],
    ) -> Consumer:
        """Consume the command queue (declaring the topology), answering on each delivery's ``reply_to``."""
        ...
