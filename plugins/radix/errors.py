"""Errors at the Radix boundary: a failed request or a Radix error body becomes one readable RadixError.

Text that comes back from the scheduler may echo the request, whose payload holds the token: everything
that goes into a message or log line passes through :func:`scrub`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import httpx

from daemon.contracts import JobSpec, RunnerError

__all__ = ["RadixError", "failure_text", "job_secrets", "scrub"]

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
_MAX_TEXT = 500


class RadixError(RunnerError):
    """The scheduler could not be reached, refused a request, or a job's runner fields are unusable."""


def job_secrets(job: JobSpec) -> list[str]:
    """The values that must never leave in a message: the token and any secret-looking variable."""
    values = [job.token or "", job.env.get("DMSS_TOKEN", "")]
    values += [v for k, v in job.env.items() if _SECRET_NAME.search(k)]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str], *, limit: int | None = _MAX_TEXT) -> str:
    """The text without the job's secrets, cut to ``limit`` characters (messages stay one line)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def failure_text(response: httpx.Response, secrets: Iterable[str]) -> str:
    """A Radix error body (``{status: Failure, message, reason, code}``) as one readable phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        reason = body.get("reason")
        prefix = f"HTTP {response.status_code}" + (f" {reason}" if isinstance(reason, str) else "")
        return scrub(f"{prefix}: {body['message']}", secrets)
    text = response.text.strip() or response.reason_phrase
    return scrub(f"HTTP {response.status_code}: {text}", secrets)
