"""Imports dm-job handler folders, each under its own private module name.

dm-job imported ``job_handler_plugins.<folder>``; the daemon has no such package, so each folder is
loaded from its ``__init__.py`` as a package named ``_dmjob_handler_<n>_<folder>``: relative imports
inside the folder work, and two folders with the same name in different directories never collide.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["HandlerFolder", "HandlerLoadError", "handler_folders", "load_handler_folder"]

#: dm-job's top-level packages; a handler importing more of them than the shim provides gets a hint.
_DM_JOB_PACKAGES = frozenset(
    {
        "config",
        "services",
        "utils",
        "restful",
        "domain_classes",
        "features",
        "dmss_api",
        "default_job_handlers",
        "job_handler_plugins",
    }
)

_counter = itertools.count(1)
_counter_lock = threading.Lock()


class HandlerLoadError(Exception):
    """A handler folder that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class HandlerFolder:
    """One imported handler folder."""

    folder: Path
    module: ModuleType
    types: tuple[str, ...]
    handler_class: type[Any]

    @property
    def origin(self) -> str:
        return f"handler folder {self.folder}"


def handler_folders(directory: Path) -> Iterator[Path]:
    """The handler folders in ``directory`` (sorted by name), or ``directory`` itself if it is one."""
    if (directory / "__init__.py").is_file():
        yield directory
        return
    for child in sorted(directory.iterdir(), key=lambda p: p.name):
        if child.name.startswith(("_", ".")) or not child.is_dir():
            continue
        if (child / "__init__.py").is_file():
            yield child


def _module_name(folder: Path) -> str:
    with _counter_lock:
        n = next(_counter)
    return f"_dmjob_handler_{n}_{re.sub(r'[^0-9A-Za-z_]', '_', folder.name)}"


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def _supported_types(module: ModuleType, folder: Path) -> tuple[str, ...]:
    if not hasattr(module, "_SUPPORTED_TYPE"):
        raise HandlerLoadError(
            f"handler folder {folder} has no _SUPPORTED_TYPE: set it in __init__.py to the runner type "
            "(a string, or a tuple or list of strings) the folder's JobHandler runs"
        )
    raw = module._SUPPORTED_TYPE
    values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, tuple | list) else None
    if not values or not all(isinstance(v, str) and v for v in values):
        raise HandlerLoadError(
            f"handler folder {folder}: _SUPPORTED_TYPE must be a non-empty string, or a tuple or list of "
            f"them, not {raw!r}"
        )
    return tuple(dict.fromkeys(values))


def _handler_class(module: ModuleType, folder: Path) -> type[Any]:
    cls = getattr(module, "JobHandler", None)
    if cls is None:
        raise HandlerLoadError(
            f"handler folder {folder} has no JobHandler: define `class JobHandler(JobHandlerInterface)` "
            "in its __init__.py"
        )
    if not inspect.isclass(cls) or not callable(getattr(cls, "start", None)):
        raise HandlerLoadError(f"handler folder {folder}: JobHandler must be a class with a start() method")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise HandlerLoadError(f"handler folder {folder}: JobHandler does not implement {missing}")
    return cls


def load_handler_folder(folder: Path) -> HandlerFolder:
    """Import ``folder/__init__.py`` as a fresh package; any failure becomes a :class:`HandlerLoadError`.

    The caller binds the compat environment around this call: handler modules run code at import
    (``config.X`` at module level, creating result folders...).
    """
    folder = folder.resolve()
    init = folder / "__init__.py"
    name = _module_name(folder)
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"handler folder {folder}: {init} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        _forget(name)
        where = f"{exc.filename}, line {exc.lineno}" if exc.lineno else str(exc.filename or init)
        raise HandlerLoadError(f"handler folder {folder} has a syntax error ({where}): {exc.msg}") from exc
    except BaseException as exc:
        _forget(name)
        if not isinstance(exc, Exception | SystemExit):
            raise
        hint = ""
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing and missing.split(".")[0] in _DM_JOB_PACKAGES:
            hint = (
                " (of dm-job's own modules only config, services.job_handler_interface and utils.logging "
                "are provided)"
            )
        raise HandlerLoadError(
            f"handler folder {folder} failed to import: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    try:
        types = _supported_types(module, folder)
        handler_class = _handler_class(module, folder)
    except HandlerLoadError:
        _forget(name)
        raise
    return HandlerFolder(folder=folder, module=module, types=types, handler_class=handler_class)
