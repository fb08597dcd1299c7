"""What a node runs with: its config files and the environment its server and CLI tools share."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .state import State

__all__ = ["PID_FILE", "enabled_plugins", "home_of", "node_env", "write_config"]

#: Written by the node itself.
PID_FILE = "rabbitmq.pid"


def home_of(base: Path, home: Path | None) -> Path:
    """HOME of a node's server and CLI: its own, or one shared by the nodes of a cluster (one cookie)."""
    return home if home is not None else base / "home"


def write_config(base: Path, state: State, *, management: bool, home: Path | None = None) -> None:
    """Rewritten on every start so a change of options (management) takes effect."""
    home = home_of(base, home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("mnesia", "log"):
        (base / sub).mkdir(exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        # Written before the first start: if the server and a CLI call both created one, they'd differ.
        # Exclusive, so nodes of a cluster starting together on one HOME keep the first one's cookie.
        with contextlib.suppress(FileExistsError):
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(32)))
    conf = [
        "# Written by daemon.localbroker on every start; edits are lost.",
        "log.console = false",
        "log.file.level = info",
        # A developer's node may run for weeks: keep its log bounded.
        "log.file.rotation.size = 10485760",
        "log.file.rotation.count = 3",
    ]
    plugins = "[]."
    if management and state.management is not None:
        conf += [f"management.tcp.port = {state.management}", "management.tcp.ip = 127.0.0.1"]
        # What `rabbitmq-plugins enable --offline rabbitmq_management` writes, without a 1 s CLI boot.
        plugins = "[rabbitmq_management]."
    (base / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
    (base / "advanced.config").write_text("[].\n")
    (base / "enabled_plugins").write_text(plugins + "\n")


def enabled_plugins(base: Path) -> str:
    try:
        return (base / "enabled_plugins").read_text()
    except OSError:
        return ""


def node_env(base: Path, state: State, home: Path | None = None) -> dict[str, str]:
    """The environment of server and CLI alike: they must agree on HOME (cookie), name and epmd."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("NOTIFY_SOCKET", "CONF_ENV_FILE")
    }
    s, b = state, base
    loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
    env.update(
        HOME=str(home_of(b, home)),
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        RABBITMQ_NODENAME=f"{s.name}@localhost",
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(s.amqp),
        RABBITMQ_DIST_PORT=str(s.dist),
        RABBITMQ_CTL_DIST_PORT_MIN=str(s.ctl_dist_min),
        RABBITMQ_CTL_DIST_PORT_MAX=str(s.ctl_dist_max),
        RABBITMQ_MNESIA_BASE=str(b / "mnesia"),
        RABBITMQ_LOG_BASE=str(b / "log"),
        RABBITMQ_CONFIG_FILE=str(b / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(b / "advanced.config"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(b / "enabled_plugins"),
        RABBITMQ_PID_FILE=str(b / PID_FILE),
        RABBITMQ_CONF_ENV_FILE=str(b / "rabbitmq-env.conf.absent"),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback,
        RABBITMQ_CTL_ERL_ARGS=loopback,
        ERL_EPMD_PORT=str(s.epmd),
        ERL_EPMD_ADDRESS="127.0.0.1",
        ERL_CRASH_DUMP=str(b / "erl_crash.dump"),
    )
    return env
