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

from urllib.parse import urlsplit

from daemon.contracts import RunnerContext, RunnerUnavailable

from .errors import RadixError
from .request import DEFAULT_URL_TEMPLATE
from .runner import DEFAULT_TIMEOUT, RadixRunner

__all__ = ["DEFAULT_URL_TEMPLATE", "PLUGIN", "RadixError", "RadixRunner"]

TYPES = ("dmss://WorkflowDS/Blueprints/Radix",)


class _Plugin:
    types: tuple[str, ...] = TYPES

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
