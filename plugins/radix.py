"""The Radix runner: a job runs through a Radix job scheduler's REST API (equinor/radix-job-scheduler).

``runner`` fields, as dm-job read them: ``jobName`` (the job component) and ``schedulerPort`` locate the
scheduler; ``imageTagName``, ``timeLimitSeconds``, ``backoffLimit`` and ``resources`` pass through to
Radix. The job's whole environment (DMSS_TOKEN, DMSS_URL, JOB_DMSS_ID, exported and runner variables)
travels as dm-job sent it: JSON in the ``payload`` field, which Radix mounts as a file in the container.

The scheduler is reached at ``DM_JOBD_RADIX_URL_TEMPLATE`` (default ``http://{jobName}:{schedulerPort}``,
the component's in-cluster address) + ``/api/v1``; each request may take ``DM_JOBD_RADIX_TIMEOUT_SECONDS``
(default 30). The handle keeps that base URL and the job name the scheduler chose. Every job is posted
with ``jobId`` = the job uid, so a start repeated after a crash finds the job it already posted
(``GET /jobs``) instead of posting a second one.

Radix has no result API: a job stores its own results (in DMSS, with its token). ``result`` returns the
scheduler's final JobStatus as JSON: status, message, timestamps and each pod's exit code.

The token travels only in the POST body. Text that comes back from the scheduler is scrubbed of the
job's secrets before it reaches a message or a log line, because an error body may echo the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from daemon.contracts import (
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    Log,
    RunnerContext,
    RunnerError,
    RunnerStatus,
    RunnerUnavailable,
    Started,
)

__all__ = ["DEFAULT_URL_TEMPLATE", "PLUGIN", "RadixError", "RadixRunner"]

TYPES = ("dmss://WorkflowDS/Blueprints/Radix",)
DEFAULT_URL_TEMPLATE = "http://{jobName}:{schedulerPort}"
DEFAULT_TIMEOUT = 30.0

#: Radix job status -> job status. "Waiting" (and no status yet) is dm-job's "starting".
_STATUSES = {
    "": JobStatus.STARTING,
    "Waiting": JobStatus.STARTING,
    "Running": JobStatus.RUNNING,
    "Active": JobStatus.RUNNING,
    "Stopping": JobStatus.RUNNING,
    "Succeeded": JobStatus.COMPLETED,
    "Completed": JobStatus.COMPLETED,
    "Failed": JobStatus.FAILED,
    "Stopped": JobStatus.REMOVED,
}
#: A Kubernetes DNS label: a job component's name, which becomes a host name.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
_MAX_TEXT = 500


class RadixError(RunnerError):
    """The scheduler could not be reached, refused a request, or a job's runner fields are unusable."""


def _secrets(job: JobSpec) -> list[str]:
    """The values that must never leave in a message: the token and any secret-looking variable."""
    values = [job.token or "", job.env.get("DMSS_TOKEN", "")]
    values += [v for k, v in job.env.items() if _SECRET_NAME.search(k)]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str], *, limit: int | None = _MAX_TEXT) -> str:
    """The text without the job's secrets, cut to ``limit`` characters (messages stay one line)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def _int_field(runner: Mapping[str, Any], name: str, *, low: int, high: int) -> int | None:
    """An optional integer field; a whole float (JSON from some DMSS clients) counts as one."""
    value = runner.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RadixError(f"runner.{name} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _resources(value: object) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping) or not set(value) <= {"requests", "limits"}:
        raise RadixError(
            'runner.resources must look like {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": ...}'
        )
    out: dict[str, dict[str, str]] = {}
    for kind, amounts in value.items():
        if not isinstance(amounts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in amounts.items()
        ):
            raise RadixError(f'runner.resources.{kind} must map resource names to amounts ("cpu": "500m")')
        out[kind] = dict(amounts)
    return out


def _check_env_list(runner: Mapping[str, Any]) -> None:
    """The daemon refuses these at start already; a job reaching this runner another way is checked too."""
    variables = runner.get("environmentVariables")
    if variables is None:
        return
    if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
        raise RadixError("runner.environmentVariables must be a list of 'NAME=value' or 'NAME' strings")
    for item in variables:
        name = item.partition("=")[0]
        if not _ENV_NAME.fullmatch(name):
            raise RadixError(f"runner.environmentVariables: {name!r} is not a valid variable name")


def _failure_text(response: httpx.Response, secrets: Iterable[str]) -> str:
    """A Radix error body (``{status: Failure, message, reason, code}``) as one readable phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        reason = body.get("reason")
        prefix = f"HTTP {response.status_code}" + (f" {reason}" if isinstance(reason, str) else "")
        return _scrub(f"{prefix}: {body['message']}", secrets)
    text = response.text.strip() or response.reason_phrase
    return _scrub(f"HTTP {response.status_code}: {text}", secrets)


def _exit_code(body: Mapping[str, Any]) -> int | None:
    """The failed pod's exit code: the last pod that exited non-zero, else the last one that exited."""
    codes = [p.get("exitCode") for p in body.get("podStatuses") or [] if isinstance(p, Mapping)]
    codes = [c for c in codes if isinstance(c, int) and not isinstance(c, bool)]
    failed = [c for c in codes if c != 0]
    return (failed or codes or [None])[-1]


def _log_lines(body: Mapping[str, Any], secrets: Iterable[str]) -> tuple[str, ...]:
    """What the scheduler says about the job and each of its pods, one line each."""
    status = body.get("status") or "no status yet"
    lines = [f"Radix job {body.get('name')}: {status}"]
    if body.get("message"):
        lines.append(f"message: {body['message']}")
    for pod in body.get("podStatuses") or []:
        if not isinstance(pod, Mapping):
            continue
        replica = pod.get("replicaStatus")
        phase = replica.get("status") if isinstance(replica, Mapping) else None
        parts = [f"pod {pod.get('name')}: {phase or 'unknown'}"]
        if isinstance(pod.get("exitCode"), int) and (phase in ("Succeeded", "Failed") or pod["exitCode"]):
            parts.append(f"exit code {pod['exitCode']}")
        if pod.get("reason"):
            parts.append(f"reason {pod['reason']}")
        if pod.get("restartCount"):
            parts.append(f"{pod['restartCount']} restarts")
        if pod.get("statusMessage"):
            parts.append(str(pod["statusMessage"]))
        lines.append(", ".join(parts))
    return tuple(_scrub(line, secrets) for line in lines)


def _runner_status(body: Mapping[str, Any], secrets: Iterable[str]) -> RunnerStatus:
    """A Radix JobStatus as the daemon's status, with the message and the exit code of a failure."""
    radix = body.get("status") or ""
    logs = _log_lines(body, secrets)
    message = _scrub(str(body.get("message") or ""), secrets)
    status = _STATUSES.get(radix, JobStatus.UNKNOWN)
    if status is JobStatus.FAILED:
        code = _exit_code(body)
        text = "the Radix job failed" + (f": {message}" if message else "")
        text += f" (exit code {code})" if code is not None else ""
        return RunnerStatus(status, message=text, logs=logs)
    texts = {
        JobStatus.STARTING: f"waiting in the Radix job scheduler as {body.get('name')}",
        JobStatus.RUNNING: f"{radix.lower()} in Radix as {body.get('name')}",
        JobStatus.COMPLETED: "the Radix job succeeded" + (f": {message}" if message else ""),
        JobStatus.REMOVED: "the Radix job was stopped" + (f": {message}" if message else ""),
        JobStatus.UNKNOWN: f"the Radix job scheduler reports an unknown status {radix!r}",
    }
    return RunnerStatus(status, message=texts[status], logs=logs)


class RadixRunner:
    def __init__(
        self, log: Log, *, url_template: str = DEFAULT_URL_TEMPLATE, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.log = log
        self.url_template = url_template
        self.timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout, headers={"Accept": "application/json"})

    # -- requests ---------------------------------------------------------------------------------

    def _base_url(self, runner: Mapping[str, Any]) -> str:
        name = runner.get("jobName")
        if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
            raise RadixError(
                f"runner.jobName must name the Radix job component (lowercase letters, digits and '-', "
                f"at most 63), not {name!r}"
            )
        port = _int_field(runner, "schedulerPort", low=1, high=65535)
        if port is None:
            raise RadixError("runner.schedulerPort must give the Radix job scheduler's port")
        return self.url_template.format(jobName=name, schedulerPort=port).rstrip("/") + "/api/v1"

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
            detail = _scrub(str(exc) or type(exc).__name__, secrets)
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
            raise RadixError(f"the Radix job scheduler refused to {what}: {_failure_text(response, secrets)}")
        body = self._json(response, what)
        if not isinstance(body, Mapping):
            raise RadixError(f"the Radix job scheduler answered {what} with something not a JobStatus")
        return body

    # -- the runner contract ----------------------------------------------------------------------

    def _description(self, job: JobSpec) -> dict[str, Any]:
        """dm-job's JobScheduleDescription, plus ``jobId`` (the uid) and the pass-through fields."""
        runner = job.runner
        _check_env_list(runner)
        description: dict[str, Any] = {"payload": json.dumps(dict(job.env)), "jobId": job.uid}
        tag = runner.get("imageTagName")
        if tag is not None:
            if not isinstance(tag, str) or not tag.strip():
                raise RadixError(f"runner.imageTagName must be an image tag, not {tag!r}")
            description["imageTagName"] = tag
        limit = _int_field(runner, "timeLimitSeconds", low=1, high=2**63 - 1)
        if limit is not None:
            description["timeLimitSeconds"] = limit
        backoff = _int_field(runner, "backoffLimit", low=0, high=2**31 - 1)
        if backoff is not None:
            description["backoffLimit"] = backoff
        if runner.get("resources") is not None:
            description["resources"] = _resources(runner["resources"])
        return description

    async def _posted_before(self, url: str, uid: str, secrets: Iterable[str]) -> Mapping[str, Any] | None:
        """The job this uid already has in the scheduler (a start repeated after a crash), if any."""
        what = "list its jobs"
        response = await self._request("GET", f"{url}/jobs", what=what)
        if response.status_code != 200:
            raise RadixError(f"the Radix job scheduler refused to {what}: {_failure_text(response, secrets)}")
        jobs = self._json(response, what)
        mine = (
            [j for j in jobs if isinstance(j, Mapping) and j.get("jobId") == uid]
            if isinstance(jobs, list)
            else []
        )
        return mine[-1] if mine else None

    async def start(self, job: JobSpec) -> Started:
        url = self._base_url(job.runner)
        description = self._description(job)
        secrets = _secrets(job)
        body = await self._posted_before(url, job.uid, secrets)
        if body is None:
            what = "schedule the job"
            response = await self._request(
                "POST", f"{url}/jobs", what=what, secrets=secrets, body=description
            )
            if response.status_code != 200:
                raise RadixError(
                    f"the Radix job scheduler refused to {what}: {_failure_text(response, secrets)}"
                )
            body = self._json(response, what)
            if not isinstance(body, Mapping) or not isinstance(body.get("name"), str) or not body["name"]:
                raise RadixError("the Radix job scheduler's answer to the new job has no job name")
            self.log.info("radix job scheduled", uid=job.uid, radix_job=body["name"], scheduler=_origin(url))
        else:
            self.log.info("radix job found again", uid=job.uid, radix_job=body.get("name"))
        handle: Handle = {"url": url, "name": str(body["name"]), "jobId": job.uid}
        return Started(handle=handle, status=_runner_status(body, secrets))

    @staticmethod
    def _where(handle: Handle) -> tuple[str, str]:
        url, name = handle.get("url"), handle.get("name")
        if not isinstance(url, str) or not isinstance(name, str):
            raise RadixError(f"the job's handle names no Radix job: {handle!r}")
        return url, name

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        url, name = self._where(handle)
        secrets = _secrets(job)
        body = await self._job_status(url, name, secrets, f"show job {name}")
        if body is None:
            return RunnerStatus(
                JobStatus.FAILED,
                message=f"the Radix job scheduler at {_origin(url)} no longer knows job {name} "
                "(deleted outside dm-jobd?)",
            )
        return _runner_status(body, secrets)

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        """The final JobStatus as JSON: Radix has no result API (jobs store their results in DMSS)."""
        url, name = self._where(handle)
        secrets = _secrets(job)
        body = await self._job_status(url, name, secrets, f"show job {name}")
        if body is None:
            raise RadixError(
                f"the Radix job scheduler no longer knows job {name}; it keeps a limited history"
            )
        text = _scrub(json.dumps(body, indent=2), secrets, limit=None)
        return JobResult(text, media_type="application/json")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """Ask Radix to stop the job, then delete it; a job Radix no longer has is stopped already."""
        url, name = self._where(handle)
        secrets = _secrets(job)
        path = f"{url}/jobs/{quote(name, safe='')}"
        stopped = await self._request("POST", f"{path}/stop", what=f"stop job {name}")
        refused = None
        if stopped.status_code not in (200, 404):  # e.g. not active any more: deleting still ends it
            refused = _failure_text(stopped, secrets)
        deleted = await self._request("DELETE", path, what=f"delete job {name}")
        if deleted.status_code not in (200, 404):
            text = f"the Radix job scheduler refused to delete job {name}: {_failure_text(deleted, secrets)}"
            raise RadixError(text + (f" (and to stop it: {refused})" if refused else ""))
        self.log.info("radix job stopped and deleted", uid=job.uid, radix_job=name, stop_refused=refused)

    async def close(self) -> None:
        await self._http.aclose()


def _origin(url: str) -> str:
    """Scheme, host and port of a URL: enough to say which scheduler, never a query or credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class _Plugin:
    types = TYPES

    def create(self, ctx: RunnerContext) -> RadixRunner:
        template = ctx.env.get("DM_JOBD_RADIX_URL_TEMPLATE") or DEFAULT_URL_TEMPLATE
        try:
            probe = template.format(jobName="component", schedulerPort=8080)
        except (KeyError, IndexError, ValueError) as exc:
            raise RunnerUnavailable(
                f"DM_JOBD_RADIX_URL_TEMPLATE may use only {{jobName}} and {{schedulerPort}}: {exc}"
            ) from exc
        if urlsplit(probe).scheme not in ("http", "https") or not urlsplit(probe).hostname:
            raise RunnerUnavailable(f"DM_JOBD_RADIX_URL_TEMPLATE must give an http(s) URL, not {template!r}")
        raw_timeout = ctx.env.get("DM_JOBD_RADIX_TIMEOUT_SECONDS") or str(DEFAULT_TIMEOUT)
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise RunnerUnavailable(
                f"DM_JOBD_RADIX_TIMEOUT_SECONDS must be a positive number, not {raw_timeout!r}"
            )
        return RadixRunner(ctx.log, url_template=template, timeout=timeout)


PLUGIN = _Plugin()
