"""Configuration from the environment: ``DM_JOBD_*`` plus dm-job's own variable names.

dm-job's names (``DMSS_URL``, ``SCHEDULER_ENVS_TO_EXPORT``, the ``AZURE_*`` ones) keep working so a
deployment can switch from dm-job without renaming its secrets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from daemon.contracts import DaemonSettings, broker_url_problem
from daemon.store import is_postgres_url

__all__ = ["BadSettings", "Settings", "load_settings"]

ENV_PREFIX = "DM_JOBD_"


def _split(value: object, sep: str) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(sep) if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    amqp_url: SecretStr | None = Field(
        default=None,
        description="Broker URL, or several comma-separated (the nodes of one cluster, tried in turn, at "
        "connect and on every reconnect); when unset, `dm-jobd run` starts a private local broker",
    )
    state_dir: Path = Field(default=Path(".state"), description="Project-local folder for all state")
    store: SecretStr | None = Field(
        default=None,
        description="The store: a SQLite file (default <state_dir>/jobd.sqlite3), or a PostgreSQL URL "
        "(postgresql://user:password@host/db) that replicas share",
    )
    enable_shell: bool = Field(default=False, description="Allow the shell runner (runs arbitrary scripts)")
    plugin_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders of dm-job style handler folders (os.pathsep-separated)"
    )
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    prefetch: int = Field(default=128, gt=0)
    delivery_limit: int = Field(default=5, gt=0)
    poll_min_seconds: float = Field(default=0.05, gt=0)
    poll_max_seconds: float = Field(default=5.0, gt=0)
    default_time_limit_seconds: float | None = Field(default=None, gt=0)
    log_lines: int = Field(default=200, gt=0, description="Log lines kept per job")
    event_log_lines: int = Field(default=10, ge=0, description="Last log lines carried in each event")
    event_source: str = Field(default="dm-jobd")
    schedule_burst: int = Field(
        default=100, gt=0, description="Fires due at one instant from which they are held in the broker early"
    )
    schedule_claim_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long a replica's claim on a due fire lasts: a replica that dies after claiming "
        "a fire has it published by another this long after",
    )
    schedule_lead_seconds: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="How early a burst of fires is handed to the broker (0: never)",
    )
    stop_step_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait for each step of stopping (the broker may be away)"
    )
    retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Ended jobs, their files and idempotency keys are deleted this many days after they "
        "ended (0: kept for ever)",
    )
    retention_sweep_seconds: float = Field(default=3600.0, gt=0, description="How often retention runs")
    dead_letter_max_length: int = Field(
        default=100_000, gt=0, description="Messages the dead-letter queue keeps (the oldest go first)"
    )
    dead_letter_max_age_days: float = Field(
        default=14.0, gt=0, description="Days a message stays in the dead-letter queue"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (unset: off; 0: any free port)",
    )
    # all interfaces: a scraper runs elsewhere (another container); the endpoint is off unless a port is set
    metrics_host: str = Field(default="0.0.0.0", description="Address the metrics endpoint listens on")  # noqa: S104
    metrics_refresh_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often the store is counted for the jobs, schedules and backlog gauges",
    )
    replica_heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="How often this replica records that it is alive (replicas, health)"
    )
    lease_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How long a replica's hold on its running jobs lasts unless renewed "
        "(renewed every third of it): a replica that dies has its jobs adopted within about this long",
    )
    identify_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long a starting daemon waits for the running ones to say their store",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"

    dmss_url: str | None = Field(default=None, validation_alias=AliasChoices("DM_JOBD_DMSS_URL", "DMSS_URL"))
    dmss_timeout_seconds: float = Field(default=30.0, gt=0, description="Per request to DMSS")
    dmss_ca_bundle: Path | None = Field(default=None, description="CA bundle for DMSS's TLS certificate")
    dmss_retry_max_seconds: float = Field(
        default=60.0, gt=0, description="Longest wait between retries of a write-back to DMSS"
    )
    dmss_retry_limit: int = Field(
        default=10,
        gt=0,
        description="Attempts of a write-back that DMSS answers 500 before it is given up (an outage, "
        "502/503/504/429 or no answer, is waited out without limit)",
    )
    envs_to_export: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("DM_JOBD_ENVS_TO_EXPORT", "SCHEDULER_ENVS_TO_EXPORT"),
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Each of several URLs checked on its own; the message says which, never what it holds."""
        if value is None:
            return None
        parts = [part.strip() for part in value.get_secret_value().split(",") if part.strip()]
        if not parts:
            raise ValueError("no broker URL")
        for at, part in enumerate(parts, 1):
            if problem := broker_url_problem(part):
                if len(parts) == 1:
                    raise ValueError(problem)
                # Without the problem's details: a piece split off at a password's own comma would
                # have them quote that password's pieces (as a port, or a scheme).
                raise ValueError(
                    f"URL {at} of {len(parts)} is not a broker URL (expected amqp://user:password@host:5672/"
                    "vhost; several are separated by commas, and a comma inside a password is written %2C)"
                )
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Absolute, so paths handed to jobs (``DM_JOB_RESULT``) hold from the job's own folder."""
        return value.absolute()

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: object) -> object:
        """A path made absolute (as the state folder); a PostgreSQL URL as it is."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, Path) or (isinstance(raw, str) and raw and not is_postgres_url(raw)):
            return str(Path(raw).absolute())
        return value

    @field_validator("plugin_dirs", mode="before")
    @classmethod
    def _paths(cls, value: object) -> object:
        return _split(value, os.pathsep)

    @field_validator("envs_to_export", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        return _split(value, ",")

    @property
    def store_url(self) -> str | None:
        """The PostgreSQL URL, when the store is one (None: SQLite)."""
        raw = self.store.get_secret_value() if self.store is not None else ""
        return raw if is_postgres_url(raw) else None

    @property
    def store_path(self) -> Path:
        """The SQLite file (when the store is not PostgreSQL)."""
        raw = self.store.get_secret_value() if self.store is not None else ""
        return Path(raw) if raw and not is_postgres_url(raw) else self.state_dir / "jobd.sqlite3"

    def for_runners(self) -> DaemonSettings:
        """The part of these settings runners see (:class:`~daemon.contracts.RunnerContext`)."""
        return DaemonSettings(
            enable_shell=self.enable_shell, log_lines=self.log_lines, dmss_url=self.dmss_url
        )


class BadSettings(ValueError):
    """A setting the environment gives is not valid; the message names the variable to fix."""


def variable_of(field: str) -> str:
    """The environment variable(s) that set ``field``: what a person has to edit."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        names = [str(choice) for choice in alias.choices]
        return " or ".join(names)
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings() -> Settings:
    """Settings from the environment; :class:`BadSettings` naming each bad variable (never its value)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"{variable_of(str(error['loc'][0])) if error['loc'] else 'a setting'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise BadSettings("; ".join(problems)) from None
