"""dm-job's ``config`` module: ``from config import config`` reads the daemon's environment.

dm-job read ``os.environ`` once at import. Here every attribute is looked up when it is read, in the
environment the adapter binds for the call in progress (the daemon's ``RunnerContext.env``), so one
process can serve several contexts (and tests) without touching ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["Config", "config"]

_current: ContextVar[Mapping[str, str] | None] = ContextVar("dmjob_compat_environment", default=None)
#: Used outside any bound call (e.g. threads a handler starts itself): the last environment installed.
_default: list[Mapping[str, str]] = [{}]


def _use_environment(env: Mapping[str, str]) -> Token[Mapping[str, str] | None]:
    """Bind ``env`` for the current thread of execution; the adapter calls this around handler calls."""
    return _current.set(env)


def _reset_environment(token: Token[Mapping[str, str] | None]) -> None:
    """Undo :func:`_use_environment`."""
    _current.reset(token)


def _set_default_environment(env: Mapping[str, str]) -> None:
    """The environment seen where no call is bound."""
    _default[0] = env


def _env() -> Mapping[str, str]:
    env = _current.get()
    return _default[0] if env is None else env


def _get(name: str, default: str | None = None) -> str | None:
    value = _env().get(name)
    return default if value is None else value


def _first(*names: str, default: str | None = None) -> str | None:
    for name in names:
        value = _env().get(name)
        if value:
            return value
    return default


def _env_list(name: str) -> list[str]:
    raw = _env().get(name, "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def _bool(name: str, default: str) -> bool:
    raw = _get(name, default) or default
    try:
        return bool(int(raw))
    except ValueError:
        return raw.strip().lower() in {"true", "yes", "on"}


def _int(name: str, default: int) -> int:
    try:
        return int(_get(name) or default)
    except ValueError:
        return default


#: dm-job's attribute names, each computed from the environment the way dm-job computed it.
_KNOWN: dict[str, Callable[[], Any]] = {
    "LOGGER_LEVEL": lambda: _get("LOGGING_LEVEL", "INFO"),
    "ENVIRONMENT": lambda: _get("ENVIRONMENT", "local"),
    "AUTH_ENABLED": lambda: _bool("AUTH_ENABLED", "1"),
    "DMSS_API": lambda: _first("DMSS_URL", "DMSS_API", default="http://dmss:5000"),
    "DMSS_URL": lambda: _first("DMSS_URL", "DMSS_API", default="http://dmss:5000"),
    "DM_JOB_URL": lambda: _get("DM_JOB_URL", "http://job-api:5000"),
    "GLOBAL_DMSS_URL": lambda: _get("GLOBAL_DMSS_URL", ""),
    "GLOBAL_DM_JOB_URL": lambda: _get("GLOBAL_DM_JOB_URL", ""),
    "AZURE_JOB_SUBSCRIPTION": lambda: _get("AZURE_JOB_SUBSCRIPTION"),
    "AZURE_JOB_RESOURCE_GROUP": lambda: _get("AZURE_JOB_RESOURCE_GROUP", "common"),
    "IMAGE_REGISTRY_USERNAME": lambda: _get("IMAGE_REGISTRY_USERNAME"),
    "IMAGE_REGISTRY_PASSWORD": lambda: _get("IMAGE_REGISTRY_PASSWORD"),
    # dm-job's config attribute names differ from its variable names for the service principal;
    # both spellings are served so handlers of every dm-job version work.
    "AZURE_SP_SECRET": lambda: _get("AZURE_SP_SECRET"),
    "AZURE_JOB_SP_SECRET": lambda: _get("AZURE_SP_SECRET"),
    "AZURE_JOB_CLIENT_ID": lambda: _get("AZURE_JOB_CLIENT_ID"),
    "AZURE_JOB_SP_CLIENT_ID": lambda: _get("AZURE_JOB_CLIENT_ID"),
    "AZURE_JOB_TENANT_ID": lambda: _get("AZURE_JOB_TENANT_ID"),
    "AZURE_JOB_SP_TENANT_ID": lambda: _get("AZURE_JOB_TENANT_ID"),
    "SCHEDULER_ENVS_TO_EXPORT": lambda: _env_list("SCHEDULER_ENVS_TO_EXPORT"),
    "SCHEDULER_REDIS_PASSWORD": lambda: _get("SCHEDULER_REDIS_PASSWORD"),
    "SCHEDULER_REDIS_HOST": lambda: _get("SCHEDULER_REDIS_HOST", "job-store"),
    "SCHEDULER_REDIS_PORT": lambda: _int("SCHEDULER_REDIS_PORT", 6379),
    "SCHEDULER_REDIS_SSL": lambda: (_get("SCHEDULER_REDIS_SSL", "False") or "").lower() == "true",
    "OAUTH_CLIENT_ID": lambda: _get("OAUTH_CLIENT_ID"),
    "OAUTH_AUTH_SCOPE": lambda: _get("OAUTH_AUTH_SCOPE"),
    "APPINSIGHTS_BE_CONNECTION_STRING": lambda: _get("APPINSIGHTS_BE_CONNECTION_STRING", ""),
    "RECURRING_JOB": lambda: "dmss://WorkflowDS/Blueprints/RecurringJob",
    "JOB": lambda: "dmss://WorkflowDS/Blueprints/Job",
}


def _lookup(name: str) -> Any:
    """dm-job's names first; any other upper-case name is read from the environment (None if unset)."""
    if name.startswith("_"):
        raise AttributeError(name)
    known = _KNOWN.get(name)
    if known is not None:
        return known()
    if name.isupper():
        return _env().get(name)
    raise AttributeError(f"dm-job's config has no attribute {name!r}")


class _ConfigMeta(type):
    """Serves class-level reads (``Config.LOGGER_LEVEL``), which dm-job's own modules used."""

    def __getattr__(cls, name: str) -> Any:
        return _lookup(name)


class Config(metaclass=_ConfigMeta):
    """dm-job's configuration object; attributes are read from the bound environment on every access."""

    def __getattr__(self, name: str) -> Any:
        return _lookup(name)

    def __repr__(self) -> str:
        return "<dm-job compat config>"


config = Config()
