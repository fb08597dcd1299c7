"""A fake Radix job scheduler: equinor/radix-job-scheduler's ``/api/v1/jobs`` REST API on loopback.

It follows ``../shared/reference/radix-job-scheduler.md``: the paths, JobScheduleDescription in,
JobStatus out (every timestamp present, null until set), Status bodies for stop and delete, and the
``{"status": "Failure", "message", "reason", "code"}`` error bodies with the HTTP status equal to
``code`` (bad JSON 422, unknown job 404).

A job moves Waiting -> Running -> Succeeded/Failed one step per ``GET /jobs/{name}`` of it, never by
the clock, so a test sees every state however fast or slow the machine is. What the job's "container"
does is read from its payload, as a real job would read the file Radix mounts: ``FAKE_EXIT_CODE``
(default 0; non-zero fails it) and ``FAKE_RUNNING_POLLS`` (GETs it stays Running, default 1; ``forever``
keeps it running until stopped). Tests can also steer it: :meth:`FakeRadixScheduler.fail_next` answers
the next request of a method with an error body, :meth:`FakeRadixScheduler.forget` deletes a job
behind the runner's back.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = ["FakeJob", "FakeRadixScheduler"]

#: JobScheduleDescription's fields and the JSON types Go's decoder accepts for each.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "payload": str,
    "jobId": str,
    "imageTagName": str,
    "image": str,
    "timeLimitSeconds": int,
    "backoffLimit": int,
    "resources": dict,
    "variables": dict,
    "command": list,
    "args": list,
    "node": dict,
    "failurePolicy": dict,
}
#: A Kubernetes resource quantity ("500m", "256Mi", "1", "1.5Gi").
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _random(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def _failure(code: int, reason: str, message: str) -> web.Response:
    body = {"status": "Failure", "message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


def _success(message: str) -> web.Response:
    return web.json_response({"status": "Success", "message": message, "code": 200})


@dataclass
class FakeJob:
    """One scheduled job and the program its payload describes."""

    name: str
    description: dict[str, Any]
    exit_code: int = 0
    running_polls: int | None = 1  # None: runs until stopped
    gets: int = 0
    status: str = "Waiting"
    message: str | None = None
    created: str = field(default_factory=_now)
    started: str | None = None
    ended: str | None = None
    pod: str = field(default_factory=lambda: _random(5))

    def advance(self) -> None:
        """One GET of the job: the first still finds it Waiting, then Running, then its end."""
        self.gets += 1
        if self.status not in ("Waiting", "Running"):
            return
        if self.gets >= 2 and self.status == "Waiting":
            self.status, self.started = "Running", _now()
        if self.running_polls is not None and self.gets >= 2 + self.running_polls:
            self.ended = _now()
            if self.exit_code == 0:
                self.status = "Succeeded"
            else:
                self.status = "Failed"
                self.message = "Job has reached the specified backoff limit"

    def as_status(self) -> dict[str, Any]:
        """JobStatus, as the scheduler answers it."""
        pods: list[dict[str, Any]] = []
        if self.started is not None:
            pod_status = {"Running": "Running", "Stopped": "Failed"}.get(self.status, self.status)
            pod: dict[str, Any] = {
                "name": f"{self.name}-{self.pod}",
                "created": self.started,
                "startTime": self.started,
                "endTime": self.ended,
                "replicaStatus": {"status": pod_status},
                "statusMessage": "",
                "restartCount": 0,
                "image": "radixdev.azurecr.io/app-compute:" + self.description.get("imageTagName", "latest"),
                "exitCode": 0,
                "reason": "",
            }
            if self.status == "Succeeded":
                pod["reason"] = "Completed"
            elif self.status == "Failed":
                pod.update(exitCode=self.exit_code, reason="Error", statusMessage="the program failed")
            elif self.status == "Stopped":
                pod.update(exitCode=143, reason="Error", statusMessage="stopped")
            pods.append(pod)
        return {
            "name": self.name,
            "jobId": self.description.get("jobId", ""),
            "batchName": "",
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "updated": self.ended or self.started or self.created,
            "status": self.status,
            "message": self.message,
            "failed": 1 if self.status == "Failed" else 0,
            "podStatuses": pods,
        }


class FakeRadixScheduler:
    """The scheduler of one job component, serving ``/api/v1`` on 127.0.0.1 (``async with`` runs it)."""

    def __init__(self, component: str = "compute") -> None:
        self.component = component
        self.jobs: dict[str, FakeJob] = {}
        #: Every JobScheduleDescription posted, as received (including ones refused).
        self.received: list[dict[str, Any]] = []
        #: Every request, as ``"METHOD /path"``.
        self.requests: list[str] = []
        #: Every request's ``traceparent`` header (None when it had none), in order.
        self.traceparents: list[str | None] = []
        self._fail: dict[str, list[tuple[int, str, str]]] = {}
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/api/v1/jobs", self._post)
        app.router.add_get("/api/v1/jobs", self._list)
        app.router.add_get("/api/v1/jobs/{name}", self._get)
        app.router.add_delete("/api/v1/jobs/{name}", self._delete)
        app.router.add_post("/api/v1/jobs/{name}/stop", self._stop)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def __aenter__(self) -> FakeRadixScheduler:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    # -- controls ---------------------------------------------------------------------------------

    def fail_next(self, method: str, code: int, reason: str, message: str) -> None:
        """Answer the next ``method`` request with this error body (``InternalError`` 500, ...)."""
        self._fail.setdefault(method.upper(), []).append((code, reason, message))

    def forget(self, name: str) -> None:
        """Delete a job behind the runner's back (what a Radix history clean-up does)."""
        del self.jobs[name]

    def job_for(self, uid: str) -> FakeJob | None:
        """The job posted with ``jobId`` = ``uid``."""
        return next((j for j in self.jobs.values() if j.description.get("jobId") == uid), None)

    # -- the API ----------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        self.traceparents.append(request.headers.get("traceparent"))
        queued = self._fail.get(request.method)
        if queued:
            return _failure(*queued.pop(0))
        response: web.StreamResponse = await handler(request)
        return response

    def _find(self, request: web.Request) -> FakeJob | web.Response:
        name = request.match_info["name"]
        job = self.jobs.get(name)
        return job if job is not None else _failure(404, "NotFound", f"job {name} not found")

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return _failure(422, "Invalid", f"invalid JobScheduleDescription: {exc}")
        if not isinstance(body, dict):
            return _failure(422, "Invalid", "invalid JobScheduleDescription: not an object")
        self.received.append(body)
        for key, kind in _FIELDS.items():
            value = body.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                return _failure(
                    422, "Invalid", f"json: cannot unmarshal {type(value).__name__} into field {key}"
                )
        for kind, amounts in (body.get("resources") or {}).items():
            for resource, amount in (amounts or {}).items():
                if not isinstance(amount, str) or not _QUANTITY.fullmatch(amount):
                    return _failure(
                        400, "BadRequest", f"invalid {kind} quantity {amount!r} for resource {resource}"
                    )
        env = json.loads(body.get("payload") or "{}")
        polls = env.get("FAKE_RUNNING_POLLS", "1")
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        name = f"batch-{self.component}-{stamp}-{_random(8)}-{_random(8)}"
        job = FakeJob(
            name=name,
            description=body,
            exit_code=int(env.get("FAKE_EXIT_CODE", "0")),
            running_polls=None if polls == "forever" else int(polls),
        )
        self.jobs[name] = job
        return web.json_response(job.as_status())

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([job.as_status() for job in self.jobs.values()])

    async def _get(self, request: web.Request) -> web.Response:
        job = self._find(request)
        if isinstance(job, web.Response):
            return job
        job.advance()
        return web.json_response(job.as_status())

    async def _stop(self, request: web.Request) -> web.Response:
        job = self._find(request)
        if isinstance(job, web.Response):
            return job
        if job.status not in ("Waiting", "Running"):
            return _failure(400, "BadRequest", f"job {job.name} is not active")
        job.status, job.ended = "Stopped", _now()
        return _success(f"job {job.name} was successfully stopped")

    async def _delete(self, request: web.Request) -> web.Response:
        job = self._find(request)
        if isinstance(job, web.Response):
            return job
        del self.jobs[job.name]
        return _success(f"job {job.name} successfully deleted")
