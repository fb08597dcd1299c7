"""Finding runners: the ``dm_jobd.runners`` entry-point group, then dm-job style handler folders.

Every runner is kept behind the error boundary (:class:`~daemon.jobs.boundary.GuardedRunner`).
A plugin that is switched off or fails to load still claims its types, so a job for it is refused with
the reason ("the shell runner is off: set DM_JOBD_ENABLE_SHELL=1") instead of "unknown runner".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from daemon.contracts import (
    DaemonSettings,
    Documents,
    JobControl,
    Log,
    Runner,
    RunnerContext,
    RunnerDisabled,
    RunnerPlugin,
    RunnerUnavailable,
    UnknownRunner,
)
from daemon.jobs.boundary import GuardedRunner

__all__ = ["ENTRY_POINT_GROUP", "Entry", "Registry"]

ENTRY_POINT_GROUP = "dm_jobd.runners"


@dataclass(frozen=True)
class Entry:
    type: str
    origin: str
    runner: GuardedRunner | None
    #: Why the runner cannot be used, when it cannot.
    disabled: str | None = None


class Registry:
    """Runner type -> runner. Built once at start-up by :meth:`load`; tests may build one by hand."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        #: Handler folders that were found but did not load: (folder, why).
        self.skipped: list[tuple[str, str]] = []

    def add(
        self,
        types: Iterable[str],
        runner: Runner | None,
        origin: str,
        *,
        disabled: str | None = None,
        log: Log | None = None,
    ) -> None:
        guarded = runner if runner is None or isinstance(runner, GuardedRunner) else GuardedRunner(runner)
        for type_ in types:
            previous = self._entries.get(type_)
            if previous is not None and log is not None:
                log.warning(
                    "runner type claimed twice; the later one wins",
                    runner_type=type_,
                    previous=previous.origin,
                    origin=origin,
                )
            self._entries[type_] = Entry(type_, origin, guarded, disabled)

    def get(self, runner_type: str) -> GuardedRunner:
        entry = self._entries.get(runner_type)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownRunner(f"no runner for type {runner_type!r} (known: {known})")
        if entry.runner is None:
            raise RunnerDisabled(f"the runner for {runner_type!r} is not available: {entry.disabled}")
        return entry.runner

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.type)

    def runners(self) -> list[GuardedRunner]:
        """Every usable runner once (a plugin serving several types appears once)."""
        return list({id(e.runner): e.runner for e in self._entries.values() if e.runner is not None}.values())

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.runners()), return_exceptions=True)

    @classmethod
    def load(
        cls,
        *,
        state_dir: Path,
        environ: Mapping[str, str],
        log: Log,
        plugin_dirs: Sequence[Path] = (),
        plugins: Mapping[str, RunnerPlugin] | None = None,
        jobs: JobControl | None = None,
        settings: DaemonSettings | None = None,
        dmss: Documents | None = None,
    ) -> Registry:
        """Create every runner: from ``plugins`` when given, else the entry points; then handler folders."""
        registry = cls()
        registry.load_runners(
            state_dir=state_dir,
            environ=environ,
            log=log,
            plugin_dirs=plugin_dirs,
            plugins=plugins,
            jobs=jobs,
            settings=settings,
            dmss=dmss,
        )
        return registry

    def load_runners(
        self,
        *,
        state_dir: Path,
        environ: Mapping[str, str],
        log: Log,
        plugin_dirs: Sequence[Path] = (),
        plugins: Mapping[str, RunnerPlugin] | None = None,
        jobs: JobControl | None = None,
        settings: DaemonSettings | None = None,
        dmss: Documents | None = None,
    ) -> None:
        """Fill this registry (see :meth:`load`); the daemon builds its parts around an empty one first."""
        registry = self
        shared = settings or DaemonSettings()

        def context(name: str) -> RunnerContext:
            return RunnerContext(
                env=environ,
                state_dir=state_dir / "runners" / name,
                log=log,
                jobs=jobs,
                settings=shared,
                dmss=dmss,
            )

        if plugins is None:
            plugins = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    plugins[ep.name] = ep.load()
                except Exception as exc:
                    log.error("runner plugin failed to import", plugin=ep.name, error=str(exc))
        for name, plugin in plugins.items():
            origin = f"plugin {name} ({type(plugin).__module__})"
            ctx = context(name)
            try:
                runner = plugin.create(ctx)
            except RunnerUnavailable as exc:
                registry.add(plugin.types, None, origin, disabled=str(exc), log=log)
                continue
            except Exception as exc:
                log.error("runner plugin failed to start", plugin=name, error=str(exc))
                registry.add(plugin.types, None, origin, disabled=f"failed to load: {exc}", log=log)
                continue
            registry.add(plugin.types, runner, origin, log=log)
        if plugin_dirs:
            from plugins.dmjob import Skipped, discover  # the adapter is a plugin; only this root wires it in

            ctx = context("dmjob")
            skipped: list[Skipped] = []
            try:
                found_all = discover(list(plugin_dirs), ctx, skipped)
            except RunnerUnavailable as exc:  # dm-job's module names are taken in this process
                log.error("dm-job handler folders cannot be loaded", error=str(exc))
                found_all = []
            for found in found_all:
                registry.add(found.types, found.runner, found.origin, log=log)
            registry.skipped.extend((str(s.folder), s.reason) for s in skipped)
