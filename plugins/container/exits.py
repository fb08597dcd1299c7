"""Push: one follower of the engine's ``die`` events for every container this daemon owns.

One stream serves all jobs (not one per container). When it drops it reconnects with a backoff and asks
the engine to replay from the last event it saw (``since``), so an exit during the gap is still
delivered; meanwhile the supervisor's polling carries on. Exits are remembered for a while, so a job
whose watch begins just after its container died still hears of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Mapping

from daemon.contracts import Log

from .engine import Engine

__all__ = ["ExitFollower"]

_REMEMBER = 4096
_BACKOFF_MIN = 0.2
_BACKOFF_MAX = 5.0


class ExitFollower:
    def __init__(self, engine: Engine, labels: Mapping[str, str], log: Log) -> None:
        self.engine = engine
        self.filters = {
            "type": ["container"],
            "event": ["die"],
            "label": [f"{key}={value}" for key, value in labels.items()],
        }
        self.log = log
        self._dead: OrderedDict[str, None] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        #: Replay from here on reconnecting: a little before the follower began, then the last event.
        self._since = time.time() - 1.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="container exits")

    async def died(self, container: str) -> None:
        """Return once the container has died (at once if it already has, since the follower began)."""
        self.start()
        if container in self._dead:
            return
        event = self._waiters.setdefault(container, asyncio.Event())
        await event.wait()

    def _record(self, container: str) -> None:
        self._dead[container] = None
        while len(self._dead) > _REMEMBER:
            self._dead.popitem(last=False)
        event = self._waiters.pop(container, None)
        if event is not None:
            event.set()

    async def _follow(self) -> None:
        delay = _BACKOFF_MIN
        dropped = False
        while True:
            try:
                async for event in self.engine.events(self.filters, self._since):
                    delay = _BACKOFF_MIN
                    if dropped:
                        self.log.info("following the Docker engine's events again")
                        dropped = False
                    nanos = event.get("timeNano")
                    if isinstance(nanos, int):
                        self._since = max(self._since, nanos / 1e9)
                    actor = event.get("Actor") or {}
                    container = actor.get("ID") or event.get("id")
                    if event.get("Action") == "die" and isinstance(container, str):
                        self._record(container)
                reason = "the stream ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = str(exc)
            if not dropped:
                self.log.warning("the Docker engine's event stream dropped; polling", error=reason)
                dropped = True
            await asyncio.sleep(delay)  # reconnecting with a backoff: nothing to wait on but time
            delay = min(delay * 2, _BACKOFF_MAX)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
