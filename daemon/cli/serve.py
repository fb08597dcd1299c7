"""``dm-jobd run``: the daemon in the foreground, with a private local broker when none is configured.

The local broker is shared by whatever runs from the same state folder: a second ``dm-jobd run``
reuses the node the first started, and only the process that started it stops it, and only once no
other client is connected (the other daemon would otherwise lose its broker under it).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from daemon.config import Settings

__all__ = ["run_daemon"]


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop when installed: the daemon spends most of its time in the event loop and socket writes."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _settle_heap() -> None:
    """Once started: what start-up built lives as long as the process, so the cyclic collector stops
    scanning it (``gc.freeze``), and collects young objects less often.

    Nearly all the garbage a job leaves is freed by reference counting; with the default thresholds
    the collector ran several times per job and took about 8% of the daemon's CPU (scripts/bench).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _others_connected(broker: Any) -> int:
    """Connections to the local broker other than ours (which is closed by now)."""
    try:
        out: str = await broker.ctl("list_connections", "-q", "--no-table-headers", "name")
    except Exception:  # the node is going away anyway; stopping it is then right
        return 0
    return len([line for line in out.splitlines() if line.strip()])


def run_daemon(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; the exit code (2 when the broker refuses us).

    The broker is started and stopped on plain asyncio loops of their own: its launcher waits on
    child processes, which hangs under uvloop, while the daemon itself runs on uvloop when installed.
    """
    from daemon.app import Daemon
    from daemon.bus.amqp import BrokerRefused, broker_address, broker_urls
    from daemon.localbroker import LocalBroker, ensure_installed
    from daemon.presence import StoreMismatch

    log = structlog.get_logger("dm-jobd")
    broker: LocalBroker | None = None
    started_here = False
    if settings.amqp_url is not None:
        url = settings.amqp_url.get_secret_value()
        if len(broker_urls(url)) > 1:  # say which nodes it moves between, never their credentials
            log.info(
                "several brokers: each connection moves to the next when it loses one",
                addresses=broker_address(url),
            )
    else:
        ensure_installed()
        broker = LocalBroker(settings.state_dir / "broker")
        log.info(
            "no DM_JOBD_AMQP_URL; starting a local RabbitMQ, or reusing one", folder=str(broker.base_dir)
        )
        started_here = asyncio.run(broker.start())
        if not started_here:
            log.info("reusing the local broker already running from this state folder")
        url = broker.url
        log.info("local broker ready", address=broker_address(url))
    if settings.enable_shell:
        log.warning("the shell runner is ON: jobs may run any script as this user")

    async def serve() -> int:
        await Daemon(settings, url).run(ready=_settle_heap)
        return 0

    try:
        return _event_loop_runner()(serve())
    except (BrokerRefused, StoreMismatch) as exc:
        log.error("cannot run", reason=str(exc))
        return 2
    except Exception:  # one JSON line with the traceback as a field, never a bare traceback
        log.exception("the daemon failed")
        return 1
    finally:
        if broker is not None and started_here:
            others = asyncio.run(_others_connected(broker))
            if others:
                log.info("left the local broker running: other clients still use it", connections=others)
            else:
                asyncio.run(broker.stop())
                log.info("local broker stopped")
