"""The installed dm-jobd's version: for ``--version``, the metrics' build info and replica heartbeats."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["dm_jobd_version"]


def dm_jobd_version() -> str:
    try:
        return version("dm-jobd")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"
