"""A private RabbitMQ node for development and tests, run from Debian's ``rabbitmq-server`` package.

Why it exists: a developer's ``scripts/run`` and the test session need a real broker without systemd,
without touching the system node, and without a fixed port. Everything the node needs (Erlang cookie,
mnesia data, logs, config, pid file, a private epmd) lives under one base directory, so several nodes can
run side by side and a later process can find (adopt) or restart the same node with its data intact.

Layout of ``base_dir``::

    broker.json      node name and ports, reused by every later LocalBroker on this folder
    home/            HOME of server and CLI (the Erlang cookie)
    mnesia/ log/     RabbitMQ data and logs
    rabbitmq.conf advanced.config enabled_plugins
    rabbitmq.pid     written by the node itself
    server.log       the node's stdout and stderr
    url              the AMQP URL, present while the node runs (read by other processes)
    lock             serialises start/stop across processes

Modules: :mod:`.broker` (:class:`LocalBroker`), :mod:`.state` (``broker.json`` and port picking),
:mod:`.node` (config files and environment), :mod:`.process` (processes, liveness, the lock),
:mod:`.rabbitmq` (the installed package) and :mod:`.cli` (``python -m daemon.localbroker``).
"""

from __future__ import annotations

from .broker import LocalBroker
from .cli import main as main
from .rabbitmq import RABBITMQ_BIN as RABBITMQ_BIN
from .rabbitmq import LocalBrokerError, ensure_installed

__all__ = ["LocalBroker", "LocalBrokerError", "ensure_installed"]
