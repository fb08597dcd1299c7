"""Debian's ``rabbitmq-server`` package: where its programs are, and the error when a node misbehaves."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CTL",
    "DIAGNOSTICS",
    "EPMD",
    "QUEUES",
    "RABBITMQ_BIN",
    "SERVER",
    "LocalBrokerError",
    "ensure_installed",
]

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER = RABBITMQ_BIN / "rabbitmq-server"
DIAGNOSTICS = RABBITMQ_BIN / "rabbitmq-diagnostics"
CTL = RABBITMQ_BIN / "rabbitmqctl"
QUEUES = RABBITMQ_BIN / "rabbitmq-queues"
EPMD = "epmd"
_INSTALL_HINT = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server"
    " (or run scripts/setup)"
)


class LocalBrokerError(RuntimeError):
    """The private node could not be started or stopped; the message points at its logs."""


def ensure_installed() -> None:
    """Fail early with the install command, instead of a FileNotFoundError deep in a subprocess."""
    if not SERVER.exists():
        raise RuntimeError(f"RabbitMQ is not installed ({SERVER} is missing): run {_INSTALL_HINT}")
