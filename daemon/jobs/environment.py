"""A job's environment and spec: what a runner is given to run one job (dm-job's variable names)."""

from __future__ import annotations

from collections.abc import Mapping

from daemon.config import Settings
from daemon.contracts import JobSpec
from daemon.store.records import JobRecord

__all__ = ["job_env", "job_spec"]


def job_env(record: JobRecord, settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """dm-job's environment for a job: exported daemon variables, DMSS access, the runner's own."""
    env = {name: environ[name] for name in settings.envs_to_export if name in environ}
    if settings.dmss_url:
        env["DMSS_URL"] = settings.dmss_url
    if record.token:
        env["DMSS_TOKEN"] = record.token
    if record.address:
        env["JOB_DMSS_ID"] = record.address
    env["DM_JOB_UID"] = record.uid
    if record.trace is not None:  # TRACEPARENT: what OpenTelemetry SDKs in the job continue
        env.update(record.trace.environment())
    runner = record.entity.get("runner") or {}
    for item in runner.get("environmentVariables") or []:
        name, sep, value = str(item).partition("=")
        if sep:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    return env


def job_spec(record: JobRecord, settings: Settings, environ: Mapping[str, str]) -> JobSpec:
    return JobSpec(
        uid=record.uid,
        entity=record.entity,
        env=job_env(record, settings, environ),
        token=record.token,
        address=record.address,
    )
