"""Runs dm-job handler folders unchanged: discovery, and one adapter runner per folder.

A handler folder is what dm-job loaded from ``job_handler_plugins/``: a directory whose ``__init__.py``
defines ``_SUPPORTED_TYPE`` and ``class JobHandler(JobHandlerInterface)``. ``discover`` imports every such
folder (with dm-job's ``config``, ``services`` and ``utils`` modules provided by ``compat/``) and
returns a runner for each; a folder that cannot be used is logged and skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.contracts import Runner, RunnerContext

from .adapter import DmJobAdapter, Redactor, log_sink
from .loader import HandlerLoadError, handler_folders, load_handler_folder
from .shim import ShimClash, install

__all__ = ["CALL_TIMEOUT_VARIABLE", "Discovered", "DmJobAdapter", "ShimClash", "Skipped", "discover"]

#: Seconds a handler's progress()/result()/remove() may take before the call is reported as failed.
CALL_TIMEOUT_VARIABLE = "DM_JOBD_DMJOB_CALL_TIMEOUT"
_DEFAULT_CALL_TIMEOUT = 300.0


@dataclass(frozen=True)
class Discovered:
    """One usable handler folder: the runner types it serves and the runner that runs them."""

    types: tuple[str, ...]
    runner: Runner
    origin: str


@dataclass(frozen=True)
class Skipped:
    """A handler folder that did not load, and why (what ``dm-jobd runners`` shows)."""

    folder: Path
    reason: str


def discover(
    directories: Sequence[Path], ctx: RunnerContext, skipped: list[Skipped] | None = None
) -> list[Discovered]:
    """Every usable handler folder in ``directories`` (each may also be a handler folder itself).

    Folders that cannot be used are logged, and appended to ``skipped`` when it is given.

    Raises :class:`ShimClash` when this process already has modules named like dm-job's (``config``,
    ``services``, ``utils``...): handler folders could not import ours, so none of them could run.
    """
    shim = install()
    redact = Redactor.for_env(ctx.env)
    import_sink = log_sink(ctx.log, "import", redact)
    shim.set_defaults(ctx.env, import_sink)
    timeout = _call_timeout(ctx)
    found: list[Discovered] = []
    skipped = [] if skipped is None else skipped
    for directory in (Path(d) for d in directories):
        if not directory.is_dir():
            ctx.log.error("dm-job handler directory skipped: it is not a directory", directory=str(directory))
            continue
        try:
            folders = list(handler_folders(directory))
        except OSError as exc:
            ctx.log.error(
                "dm-job handler directory skipped: it cannot be listed",
                directory=str(directory),
                error=str(exc),
            )
            continue
        if not folders:
            ctx.log.warning("no dm-job handler folders found", directory=str(directory))
        listed = folders != [directory]
        for folder in folders:
            try:
                with shim.bound(ctx.env, log_sink(ctx.log, folder.name, redact)):
                    handler = load_handler_folder(folder, listed=listed)
            except HandlerLoadError as exc:
                reason = redact(str(exc))
                ctx.log.error("dm-job handler folder skipped", folder=str(folder), error=reason)
                skipped.append(Skipped(folder=folder, reason=reason))
                continue
            runner = DmJobAdapter(handler, ctx, shim, call_timeout=timeout)
            found.append(Discovered(types=handler.types, runner=runner, origin=handler.origin))
            ctx.log.info(
                "dm-job handler folder loaded", folder=str(handler.folder), types=list(handler.types)
            )
    return found


def _call_timeout(ctx: RunnerContext) -> float:
    raw = ctx.env.get(CALL_TIMEOUT_VARIABLE)
    if not raw:
        return _DEFAULT_CALL_TIMEOUT
    try:
        value = float(raw)
        if value <= 0:
            raise ValueError(raw)
    except ValueError:
        ctx.log.error(
            f"{CALL_TIMEOUT_VARIABLE} must be a positive number of seconds; using the default",
            value=raw,
            default=_DEFAULT_CALL_TIMEOUT,
        )
        return _DEFAULT_CALL_TIMEOUT
    return value
