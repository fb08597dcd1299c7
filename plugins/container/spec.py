"""Reading a LocalContainer runner entity into what the engine needs, with clear errors for bad values.

Parsing happens before the engine is touched, so a bad ``computeResource`` fails the job at once with a
message naming the field, not with whatever the engine would say about a negative byte count.

Units of ``computeResource``:

- ``cpu``: CPUs, as a number or string (``1``, ``0.5``, ``"1.5"``), or millicores (``"500m"``);
  becomes the container's ``NanoCpus`` (``docker run --cpus``).
- ``memory``: a string with a unit, binary (``"512Mi"``, ``"1Gi"``, ``"1.5Gi"``, ``Ki``/``Ti``) or
  decimal (``"500M"``, ``"2G"``, ``k``/``T``), or ``"<n>b"`` for bytes; a bare number (``1``, ``1.5``,
  ``"2"``) is **GiB**, as Azure's ``memoryInGB`` reads dm-job's other container runners.
  The engine's floor is 6 MiB.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_RESULT_PATH", "ContainerSpec", "parse_cpu", "parse_memory", "parse_spec"]

#: Where a job writes its result inside the container (also given to it as ``$DM_JOB_RESULT``).
DEFAULT_RESULT_PATH = "/dm-job/result"
MIN_MEMORY = 6 * 1024 * 1024
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_QUANTITY_RE = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*([A-Za-z]*)\s*$")
_MEMORY_UNITS = {
    "": 1024**3,
    "b": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    #: The registry host the image comes from, or None for Docker Hub.
    registry: str | None
    command: list[str] | None
    nano_cpus: int | None
    memory: int | None
    network: str | None
    name: str | None
    result_path: str


def _quantity(value: object, field: str) -> tuple[float, str]:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"runner.computeResource.{field} must be a number or a string, not {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        match = _QUANTITY_RE.match(value)
        if match is None:
            raise ValueError(f"runner.computeResource.{field}: {value!r} is not a quantity")
        number, unit = float(match[1]), match[2]
    if not number > 0 or number == float("inf"):
        raise ValueError(f"runner.computeResource.{field} must be more than 0, not {value!r}")
    return number, unit


def parse_cpu(value: object) -> int:
    """CPUs (``0.5``, ``"2"``) or millicores (``"500m"``) as nano-CPUs."""
    number, unit = _quantity(value, "cpu")
    if unit not in ("", "m"):
        raise ValueError(f"runner.computeResource.cpu: {value!r} has an unknown unit (use CPUs or 'm')")
    nanos = round(number * (1e6 if unit == "m" else 1e9))
    if nanos < 10_000_000:
        raise ValueError(f"runner.computeResource.cpu: {value!r} is below the engine's 0.01 CPU")
    return nanos


def parse_memory(value: object) -> int:
    """A memory quantity as bytes; a bare number is GiB."""
    number, unit = _quantity(value, "memory")
    if unit not in _MEMORY_UNITS:
        units = ", ".join(u for u in _MEMORY_UNITS if u)
        raise ValueError(f"runner.computeResource.memory: {value!r} has an unknown unit (use {units})")
    size = round(number * _MEMORY_UNITS[unit])
    if size < MIN_MEMORY:
        raise ValueError(f"runner.computeResource.memory: {value!r} is below the engine's minimum of 6 MiB")
    return size


def _image(runner: Mapping[str, Any]) -> tuple[str, str | None]:
    image = runner.get("image")
    if isinstance(image, str) and image.strip():
        ref = image.strip()
    elif isinstance(image, Mapping) and isinstance(image.get("imageName"), str) and image["imageName"]:
        ref = str(image["imageName"]).strip("/")
        registry = image.get("registryName")
        if isinstance(registry, str) and registry.strip("/"):
            ref = f"{registry.strip('/')}/{ref}"
        version = image.get("version")
        if version not in (None, ""):
            ref = f"{ref}:{version}"
    else:
        raise ValueError("runner.image must be {registryName, imageName, version} or an image reference")
    first, slash, _ = ref.partition("/")
    is_host = slash and ("." in first or ":" in first or first == "localhost")
    return ref, first if is_host else None


def _command(value: object) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return list(value)
    raise ValueError("runner.customCommand must be a command line or a list of arguments")


def _text(runner: Mapping[str, Any], key: str) -> str | None:
    value = runner.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"runner.{key} must be a string, not {value!r}")
    return value


def parse_spec(runner: Mapping[str, Any], *, default_network: str | None = None) -> ContainerSpec:
    """The container a LocalContainer runner entity describes; ValueError names the bad field."""
    image, registry = _image(runner)
    resources = runner.get("computeResource") or {}
    if not isinstance(resources, Mapping):
        raise ValueError("runner.computeResource must be an object with cpu and memory")
    cpu, memory = resources.get("cpu"), resources.get("memory")
    name = _text(runner, "name")
    if name is not None and not _NAME_RE.match(name):
        raise ValueError(f"runner.name {name!r} is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
    result_path = _text(runner, "resultPath") or DEFAULT_RESULT_PATH
    if not result_path.startswith("/"):
        raise ValueError(f"runner.resultPath must be an absolute path, not {result_path!r}")
    return ContainerSpec(
        image=image,
        registry=registry,
        command=_command(runner.get("customCommand")),
        nano_cpus=None if cpu in (None, "") else parse_cpu(cpu),
        memory=None if memory in (None, "") else parse_memory(memory),
        network=_text(runner, "network") or default_network,
        name=name,
        result_path=result_path,
    )
