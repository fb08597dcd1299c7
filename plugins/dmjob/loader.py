"""Imports dm-job handler folders as dm-job laid them out.

dm-job imported ``job_handler_plugins.<folder>``: a package of handler folders, which may import each
other by that absolute name (``job_handler_plugins.omnia_classic_azure_container_instances.ARM_deployer``).
A directory named in ``DM_JOBD_PLUGIN_DIRS`` is therefore either one handler folder (its ``__init__.py``
sets ``_SUPPORTED_TYPE``) or a package of them (with or without an ``__init__.py`` of its own). A
package is imported under its own name, and each handler folder as ``<package>.<folder>``; a single
handler folder whose parent is a package is imported the same way. Two directories with the same
package name share it, as a namespace package would. Where the name is taken in this process (our own
``plugins`` package, say), or is no identifier, a private name is used and absolute imports between
folders do not work: the load report says so.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import keyword
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["PROVIDED", "HandlerFolder", "HandlerLoadError", "handler_folders", "load_handler_folder"]

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

#: Modules dm-job's own handlers import -> the package of the ``dmjob`` extra that brings each.
_EXTRA_PACKAGES = {"docker": "docker", "requests": "requests", "azure.mgmt.resource": "azure-mgmt-resource"}


def _extra_package(missing: str) -> str | None:
    """The extra's package that would bring the module ``missing``, when that package is not installed."""
    for module, package in _EXTRA_PACKAGES.items():
        if missing == module or missing.startswith(module + ".") or module.startswith(missing + "."):
            try:
                installed = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                installed = False
            return None if installed else package
    return None


#: dm-job's modules the compatibility layer provides (kept in step with ``shim.MODULE_NAMES``).
PROVIDED = (
    "config",
    "restful.exceptions",
    "services.dmss",
    "services.job_handler_interface",
    "services.job_service",
    "utils.logging",
)
#: Set on packages this loader made, so a second directory of the same name joins the first.
_MARK = "__dmjobd_handler_package__"

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


def _is_handler_folder(folder: Path) -> bool:
    init = folder / "__init__.py"
    try:
        return init.is_file() and "_SUPPORTED_TYPE" in init.read_text(errors="replace")
    except OSError:
        return False


def handler_folders(directory: Path) -> Iterator[Path]:
    """The handler folders in ``directory`` (sorted by name), or ``directory`` itself if it is one."""
    if _is_handler_folder(directory):
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


def _package_for(folder: Path, *, listed: bool) -> str | None:
    """The package ``folder`` is imported in (its parent's name), made importable; None if it cannot be.

    The parent directory becomes (or joins) a package of that name whose ``__path__`` lists it, so a
    handler's ``import <package>.<other folder>`` finds its sibling, as under dm-job.
    """
    parent = folder.parent
    name = parent.name
    if not listed and not (parent / "__init__.py").is_file():
        return None  # a lone handler folder in a plain directory: nothing to import it under
    if not name.isidentifier() or keyword.iskeyword(name) or not folder.name.isidentifier():
        return None
    with _counter_lock:
        existing = sys.modules.get(name)
        if existing is not None:
            if getattr(existing, _MARK, False):
                paths = existing.__path__
                if str(parent) not in paths:
                    paths.append(str(parent))
                return name
            return None  # a module of this process (ours, or a library's): never shadowed
        init = parent / "__init__.py"
        if init.is_file():
            spec = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[str(parent)]
            )
        else:
            spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
        if spec is None:
            return None
        module = importlib.util.module_from_spec(spec)
        if not init.is_file():
            module.__path__ = [str(parent)]
        setattr(module, _MARK, True)
        sys.modules[name] = module
    if init.is_file() and spec.loader is not None:
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            _forget(name)
            raise HandlerLoadError(
                f"the package {parent} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
    return name


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


def load_handler_folder(folder: Path, *, listed: bool = False) -> HandlerFolder:
    """Import ``folder/__init__.py`` as a fresh package; any failure becomes a :class:`HandlerLoadError`.

    ``listed``: the folder was found in a directory of handler folders, which is its package.

    The caller binds the compat environment around this call: handler modules run code at import
    (``config.X`` at module level, creating result folders...).
    """
    folder = folder.resolve()
    init = folder / "__init__.py"
    package = _package_for(folder, listed=listed)
    name = f"{package}.{folder.name}" if package is not None else _module_name(folder)
    if name in sys.modules:  # the same folder named twice (or a sibling imported it already)
        _forget(name)
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
        top = missing.split(".")[0] if missing else ""
        extra = _extra_package(missing or "")
        if extra is not None:
            hint = f" (install it with the dmjob extra: pip install 'dm-jobd[dmjob]', which brings {extra})"
        elif top in _DM_JOB_PACKAGES:
            hint = (
                f" (dm-job's {missing!r} is not provided; the compatibility layer has {', '.join(PROVIDED)})"
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
