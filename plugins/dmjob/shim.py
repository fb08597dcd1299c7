"""Makes dm-job's module names (``services``, ``config``, ``utils``...) importable for handler folders.

Handler folders import ``config``, ``services.*``, ``restful.exceptions`` and ``utils.logging`` as
top-level modules, because that is where they lived inside dm-job. The shim files in ``compat/`` are
loaded under exactly those names, once per process, and refuse to replace a module of the same name
that is not ours. Handler calls run in threads; :meth:`Shim.bound` gives each call the daemon's
environment, a log sink, the job's token and the daemon's job control.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from daemon.contracts import RunnerUnavailable

__all__ = ["COMPAT_DIR", "MODULE_NAMES", "LogSink", "Shim", "ShimClash", "install"]

COMPAT_DIR = Path(__file__).resolve().parent / "compat"

#: dm-job's module name -> (file under compat/, is a package). Parents come before their children.
_FILES: dict[str, tuple[str, bool]] = {
    "config": ("config.py", False),
    "services": ("services/__init__.py", True),
    "services.job_handler_interface": ("services/job_handler_interface.py", False),
    "services.dmss": ("services/dmss.py", False),
    "services.job_service": ("services/job_service.py", False),
    "restful": ("restful/__init__.py", True),
    "restful.exceptions": ("restful/exceptions.py", False),
    "utils": ("utils/__init__.py", True),
    "utils.logging": ("utils/logging.py", False),
}
MODULE_NAMES = tuple(_FILES)

#: (level number, message, traceback text or None), as the compat logger hands lines over.
LogSink = Callable[[int, str, str | None], None]
#: ``services.job_service``'s way to the daemon: ``(operation, *arguments) -> result``, blocking.
Control = Callable[..., Any]

_lock = threading.Lock()


class ShimClash(RunnerUnavailable):
    """A module named like one of dm-job's is already loaded, so handler folders cannot get ours."""


@dataclass(frozen=True)
class Shim:
    """The installed compat modules, and what the adapter needs from them."""

    config: ModuleType
    interface: ModuleType
    logging: ModuleType
    dmss: ModuleType
    job_service: ModuleType

    @property
    def job_class(self) -> Any:
        return self.interface.Job

    @property
    def status_enum(self) -> Any:
        return self.interface.JobStatus

    @property
    def interface_class(self) -> type[Any]:
        cls: type[Any] = self.interface.JobHandlerInterface
        return cls

    def set_defaults(self, env: Mapping[str, str], sink: LogSink, control: Control | None = None) -> None:
        """What handler code sees when it runs outside a bound call (threads it starts itself)."""
        self.config._set_default_environment(env)
        self.logging._set_default_sink(sink)
        self.job_service._set_default_control(control)

    @contextmanager
    def bound(
        self,
        env: Mapping[str, str],
        sink: LogSink,
        *,
        token: str | None = None,
        control: Control | None = None,
    ) -> Iterator[None]:
        """Bind the environment, log sink, job token and job control for handler code in the block."""
        env_token = self.config._use_environment(env)
        sink_token = self.logging._use_sink(sink)
        dmss_token = self.dmss._use_token(token)
        control_token = self.job_service._use_control(control)
        try:
            yield
        finally:
            self.job_service._reset_control(control_token)
            self.dmss._reset_token(dmss_token)
            self.logging._reset_sink(sink_token)
            self.config._reset_environment(env_token)


def _is_ours(module: ModuleType) -> bool:
    origin = getattr(module, "__file__", None)
    if not origin:
        return False
    try:
        return Path(origin).resolve().is_relative_to(COMPAT_DIR)
    except OSError:
        return False


def _describe(module: ModuleType) -> str:
    return str(getattr(module, "__file__", None) or getattr(module, "__spec__", None) or repr(module))


def install() -> Shim:
    """Put the compat modules in ``sys.modules`` under dm-job's names (once); raise on a clash."""
    with _lock:
        clashes = [
            f"{name!r} (already loaded from {_describe(sys.modules[name])})"
            for name in MODULE_NAMES
            if name in sys.modules and not _is_ours(sys.modules[name])
        ]
        if clashes:
            raise ShimClash(
                "dm-job handler folders need the module names "
                + ", ".join(repr(n) for n in MODULE_NAMES)
                + " for dm-job's compatibility modules, but this process already uses "
                + "; ".join(clashes)
                + ". Rename that module or run handler folders in a daemon without it."
            )
        for name, (relative, is_package) in _FILES.items():
            if name not in sys.modules:
                _load(name, COMPAT_DIR / relative, is_package)
        return Shim(
            config=sys.modules["config"],
            interface=sys.modules["services.job_handler_interface"],
            logging=sys.modules["utils.logging"],
            dmss=sys.modules["services.dmss"],
            job_service=sys.modules["services.job_service"],
        )


def _load(name: str, path: Path, is_package: bool) -> None:
    locations = [str(path.parent)] if is_package else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    if spec is None or spec.loader is None:  # pragma: no cover - only if the package data is missing
        raise ShimClash(f"dm-job compatibility module {name!r} is missing from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
