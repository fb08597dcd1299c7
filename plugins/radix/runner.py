"""The Radix runner: start, poll, result and stop a job through a Radix job scheduler's REST API."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from daemon.contracts import (
    REACH_ANYWHERE,
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    Log,
    RunnerStatus,
    Started,
    trace_headers,
)

from .errors import RadixError, failure_text, job_secrets, scrub
from .request import DEFAULT_URL_TEMPLATE, base_url, description
from .status import runner_status

__all__ = ["DEFAULT_TIMEOUT", "RadixRunner"]

DEFAULT_TIMEOUT = 30.0


async def _traced(request: httpx.Request) -> None:
    """Every call for a job carries the job's ``traceparent`` (the daemon sets it per job)."""
    request.headers.update(trace_headers())


class RadixRunner:
    def __init__(
        self, log: Log, *, url_template: str = DEFAULT_URL_TEMPLATE, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.log = log
        self.url_template = url_template
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            timeout=timeout, headers={"Accept": "application/json"}, event_hooks={"request": [_traced]}
        )

    # -- requests ---------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        secrets: Iterable[str] = (),
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """One request; a transport failure becomes a RadixError naming the scheduler, never the body."""
        try:
            return await self._http.request(method, url, json=body)
        except httpx.TimeoutException as exc:
            raise RadixError(
                f"the Radix job scheduler at {_origin(url)} did not answer within {self.timeout:g} s "
                f"while trying to {what}"
            ) from exc
        except httpx.HTTPError as exc:
            detail = scrub(str(exc) or type(exc).__name__, secrets)
            raise RadixError(
                f"cannot reach the Radix job scheduler at {_origin(url)} to {what}: {detail}"
            ) from exc

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise RadixError(f"the Radix job scheduler answered {what} with something not JSON") from exc

    async def _job_status(
        self, url: str, name: str, secrets: Iterable[str], what: str
    ) -> Mapping[str, Any] | None:
        """GET one job's JobStatus; None when the scheduler does not know it (404)."""
        response = await self._request("GET", f"{url}/jobs/{quote(name, safe='')}", what=what)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RadixError(f"the Radix job scheduler refused to {what}: {failure_text(response, secrets)}")
        body = self._json(response, what)
        if not isinstance(body, Mapping):
            raise RadixError(f"the Radix job scheduler answered {what} with something not a JobStatus")
        return body

    # -- the runner contract ----------------------------------------------------------------------

    async def _posted_before(self, url: str, uid: str, secrets: Iterable[str]) -> Mapping[str, Any] | None:
        """The job this uid already has in the scheduler (a start repeated after a crash), if any."""
        what = "list its jobs"
        response = await self._request("GET", f"{url}/jobs", what=what)
        if response.status_code != 200:
            raise RadixError(f"the Radix job scheduler refused to {what}: {failure_text(response, secrets)}")
        jobs = self._json(response, what)
        mine = (
            [j for j in jobs if isinstance(j, Mapping) and j.get("jobId") == uid]
            if isinstance(jobs, list)
            else []
        )
        return mine[-1] if mine else None

    async def start(self, job: JobSpec) -> Started:
        url = base_url(self.url_template, job.runner)
        schedule = description(job)
        secrets = job_secrets(job)
        body = await self._posted_before(url, job.uid, secrets)
        if body is None:
            what = "schedule the job"
            response = await self._request("POST", f"{url}/jobs", what=what, secrets=secrets, body=schedule)
            if response.status_code != 200:
                raise RadixError(
                    f"the Radix job scheduler refused to {what}: {failure_text(response, secrets)}"
                )
            body = self._json(response, what)
            if not isinstance(body, Mapping) or not isinstance(body.get("name"), str) or not body["name"]:
                raise RadixError("the Radix job scheduler's answer to the new job has no job name")
            self.log.info("radix job scheduled", uid=job.uid, radix_job=body["name"], scheduler=_origin(url))
        else:
            self.log.info("radix job found again", uid=job.uid, radix_job=body.get("name"))
        handle: Handle = {"url": url, "name": str(body["name"]), "jobId": job.uid}
        return Started(handle=handle, status=runner_status(body, secrets))

    @staticmethod
    def _where(handle: Handle) -> tuple[str, str]:
        url, name = handle.get("url"), handle.get("name")
        if not isinstance(url, str) or not isinstance(name, str):
            raise RadixError(f"the job's handle names no Radix job: {handle!r}")
        return url, name

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        url, name = self._where(handle)
        secrets = job_secrets(job)
        body = await self._job_status(url, name, secrets, f"show job {name}")
        if body is None:
            return RunnerStatus(
                JobStatus.FAILED,
                message=f"the Radix job scheduler at {_origin(url)} no longer knows job {name} "
                "(deleted outside dm-jobd?)",
            )
        return runner_status(body, secrets)

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        """The final JobStatus as JSON: Radix has no result API (jobs store their results in DMSS)."""
        url, name = self._where(handle)
        secrets = job_secrets(job)
        body = await self._job_status(url, name, secrets, f"show job {name}")
        if body is None:
            raise RadixError(
                f"the Radix job scheduler no longer knows job {name}; it keeps a limited history"
            )
        text = scrub(json.dumps(body, indent=2), secrets, limit=None)
        return JobResult(text, media_type="application/json")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """Ask Radix to stop the job, then delete it; a job Radix no longer has is stopped already."""
        url, name = self._where(handle)
        secrets = job_secrets(job)
        path = f"{url}/jobs/{quote(name, safe='')}"
        stopped = await self._request("POST", f"{path}/stop", what=f"stop job {name}")
        refused = None
        if stopped.status_code not in (200, 404):  # e.g. not active any more: deleting still ends it
            refused = failure_text(stopped, secrets)
        deleted = await self._request("DELETE", path, what=f"delete job {name}")
        if deleted.status_code not in (200, 404):
            text = f"the Radix job scheduler refused to delete job {name}: {failure_text(deleted, secrets)}"
            raise RadixError(text + (f" (and to stop it: {refused})" if refused else ""))
        self.log.info("radix job stopped and deleted", uid=job.uid, radix_job=name, stop_refused=refused)

    def reach(self, runner_type: str) -> str:
        """Its jobs live in the cloud: any replica with the credentials can follow them."""
        return REACH_ANYWHERE

    def runner_fields(self, runner_type: str) -> frozenset[str]:
        return frozenset(
            {"jobName", "schedulerPort", "imageTagName", "timeLimitSeconds", "backoffLimit", "resources"}
        )

    async def close(self) -> None:
        await self._http.aclose()


def _origin(url: str) -> str:
    """Scheme, host and port of a URL: enough to say which scheduler, never a query or credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
