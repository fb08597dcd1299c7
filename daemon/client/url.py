"""Where the broker is: ``DM_JOBD_AMQP_URL``, else the URL of a local broker that ``dm-jobd run`` started.

``DM_JOBD_AMQP_URL`` may name several brokers, comma-separated (the nodes of one cluster): the client
connects to the first that answers and moves to the next when it loses one.

A local broker writes its URL to ``<state folder>/broker/url`` while it runs. The state folder is
``DM_JOBD_STATE_DIR`` when set, else ``.state`` in the working folder or the nearest folder above it
that has one, so the CLI and the client find the broker from anywhere inside the checkout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from daemon.contracts import broker_url_problem

__all__ = ["BadBrokerUrl", "NoBroker", "broker_url", "check_broker_url", "local_broker_url", "state_dirs"]


class NoBroker(Exception):
    """No broker URL is configured and no local broker runs."""


class BadBrokerUrl(ValueError):
    """The broker URL is not one (``not-a-url``, ``http://...``): refused before any attempt."""


def check_broker_url(url: str) -> str:
    """``url`` when it is an AMQP URL, or several comma-separated; :class:`BadBrokerUrl` saying what is
    wrong otherwise (which of several, never the URL itself: it may hold a password)."""
    parts = [part.strip() for part in url.split(",") if part.strip()]
    if not parts:
        raise BadBrokerUrl("no broker URL")
    for at, part in enumerate(parts, 1):
        problem = broker_url_problem(part)
        if problem is not None and len(parts) == 1:
            raise BadBrokerUrl(problem)
        if problem is not None:
            # Without the problem's details: a piece split off at a password's own comma would have
            # them quote that password's pieces (as a port, or a scheme).
            raise BadBrokerUrl(
                f"URL {at} of {len(parts)} is not a broker URL (expected amqp://user:password@host:5672/"
                "vhost; several are separated by commas, and a comma inside a password is written %2C)"
            )
    return url


def state_dirs(environ: Mapping[str, str], cwd: Path) -> list[Path]:
    """Where a local daemon's state folder may be: ``DM_JOBD_STATE_DIR``, else ``.state`` here or above."""
    state = environ.get("DM_JOBD_STATE_DIR")
    candidates = [Path(state) if Path(state).is_absolute() else cwd / state] if state else []
    return candidates + [folder / ".state" for folder in (cwd, *cwd.parents)]


def local_broker_url(environ: Mapping[str, str], cwd: Path) -> str | None:
    """The running local broker's URL, or None."""
    for folder in state_dirs(environ, cwd):
        url_file = folder / "broker" / "url"
        if url_file.is_file():
            text = url_file.read_text().strip()
            if text:
                return text
    return None


def broker_url(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """The broker to use; :class:`NoBroker` with what to do when there is none."""
    env = os.environ if environ is None else environ
    configured = env.get("DM_JOBD_AMQP_URL")
    if configured:
        return configured
    found = local_broker_url(env, Path.cwd() if cwd is None else cwd)
    if found is None:
        raise NoBroker(
            "no broker: set DM_JOBD_AMQP_URL, or start the daemon with `dm-jobd run` (or scripts/run), "
            "which starts a local broker"
        )
    return found
