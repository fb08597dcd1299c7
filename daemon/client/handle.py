"""A handle on one job: its status, waiting for its end, its result, its events, stopping it.

Every method raises an error answer as the exception its code names (``UnknownJob``, ``NotFinished``,
``RunnerError``, ...). Waiting is race-free by construction: the handle subscribes to the job's
events first and asks for its status second, so a job that ended before the subscription existed is
seen ended, and one that ends after it is seen by its event.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from daemon.contracts import Answer, Base64Result, CloudEvent, JobView, ResultAnswer, ScheduleView

if TYPE_CHECKING:
    from daemon.client.jobd import JobdClient

__all__ = ["JobHandle"]


class JobHandle:
    """``uid`` names the job; ``answer`` is the start's answer (None for a handle made from a uid)."""

    def __init__(self, client: JobdClient, started: Answer | str) -> None:
        self._client = client
        if isinstance(started, str):
            self.uid: str = started
            self.answer: Answer | None = None
        else:
            if started.uid is None:  # an accepted start always names its job
                raise ValueError(f"a start answer without a uid: {started}")
            self.uid = started.uid
            self.answer = started

    @property
    def schedule(self) -> ScheduleView | None:
        """A recurring job's schedule, as registered."""
        return self.answer.schedule if self.answer is not None else None

    async def status(self) -> JobView:
        answer = Answer.model_validate(await self._client.ask("job.status", {"uid": self.uid}))
        return _view(answer)

    async def wait(self, timeout: float | None = None) -> JobView:
        """Wait until the job has ended (completed, failed, removed, ...); its final view.

        ``TimeoutError`` when it has not ended within ``timeout`` seconds. A job that is ``unknown``
        (its runner cannot tell) has not ended: it may still complete.
        """
        async with asyncio.timeout(timeout), self._client.events(job=self.uid) as events:
            view = await self.status()  # after subscribing: nothing can slip between the two
            while not view.status.is_terminal:
                event = await events.next()
                if event.data.uid == self.uid and event.data.status.is_terminal:
                    view = await self.status()
            return view

    async def result(self) -> str | bytes:
        """A completed job's result: text, or bytes when it is not UTF-8. ``NotFinished`` before that."""
        answer = ResultAnswer.model_validate(await self._client.ask("job.result", {"uid": self.uid}))
        if isinstance(answer.result, Base64Result):
            return base64.b64decode(answer.result.base64)
        return answer.result or ""

    async def stop(self) -> JobView:
        """Stop the job (a recurring job: its schedule too); its view afterwards."""
        return _view(Answer.model_validate(await self._client.ask("job.stop", {"uid": self.uid})))

    async def events(self) -> AsyncIterator[CloudEvent]:
        """The job's status and progress events from now on; ends once the job has ended.

        Subscribed before the status is read, so it ends even for a job that is over already.
        """
        async with self._client.events(job=self.uid) as stream:
            if (await self.status()).status.is_terminal:
                return
            while True:
                event = await stream.next()
                yield event
                if event.data.status.is_terminal and not event.type.endswith(".progress"):
                    return

    def __repr__(self) -> str:
        return f"JobHandle({self.uid!r})"


def _view(answer: Answer) -> JobView:
    if answer.job is not None:
        return answer.job
    raise ValueError(f"an answer without the job's view: {answer}")  # never for status or stop
