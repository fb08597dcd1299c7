"""``broker.json``: the node name and ports of one base folder, picked once and kept across restarts."""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from .rabbitmq import LocalBrokerError

__all__ = ["CTL_RANGE", "STATE_FILE", "State", "StateFile", "pick_ports", "port_free", "saved_name"]

STATE_FILE = "broker.json"
CTL_RANGE = 10  # ports for concurrent CLI invocations (each CLI call is a hidden Erlang node)
# Ports RabbitMQ/Erlang use by default: never hand them out, a system node may want them later.
_RESERVED = frozenset({4369, 5671, 5672, 15672, 15692, 25672, 35672})


@dataclass
class State:
    """What must stay the same across restarts of one node: its name (mnesia data) and its ports."""

    name: str
    amqp: int
    dist: int
    epmd: int
    ctl_dist_min: int
    ctl_dist_max: int
    management: int | None = None

    def ports(self) -> set[int]:
        ports = {self.amqp, self.dist, self.epmd, *range(self.ctl_dist_min, self.ctl_dist_max + 1)}
        if self.management is not None:
            ports.add(self.management)
        return ports


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, so an outgoing connection never grabs a saved port."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low <= 12000:  # unusual kernel setting: fall back to the high end of the space
        return 61000, 65535 - CTL_RANGE
    return max(10000, low - 16384), low - CTL_RANGE


def port_free(port: int) -> bool:
    """Bindable on loopback; SO_REUSEADDR like Erlang's listeners, so TIME_WAIT leftovers don't count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int, taken: set[int], *, consecutive: bool = False) -> list[int]:
    """Random free ports (``count`` consecutive ones when asked) outside ``taken``."""
    low, high = _port_range()
    for _ in range(2000):
        if consecutive:
            start = low + secrets.randbelow(high - low)
            ports = list(range(start, start + count))
        else:
            ports = [low + secrets.randbelow(high - low) for _ in range(count)]
        if len(set(ports)) != count or any(p in taken or p in _RESERVED for p in ports):
            continue
        if all(port_free(p) for p in ports):
            return ports
    raise LocalBrokerError(f"no free loopback ports found in {low}-{high}")


def saved_name(base: Path) -> str | None:
    """The node name saved in ``base``, if any (scripts shouldn't have to repeat --name)."""
    try:
        name = json.loads((base / STATE_FILE).read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


class StateFile:
    """The state file of one base folder, for a node of the given name and options."""

    def __init__(
        self, base: Path, name: str, *, port: int | None, management: bool, epmd: int | None = None
    ) -> None:
        self._base = base
        self._name = name
        self._explicit_port = port
        self._management = management
        self._explicit_epmd = epmd

    @property
    def path(self) -> Path:
        return self._base / STATE_FILE

    def read(self) -> State | None:
        try:
            state = State(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        ports = [state.amqp, state.dist, state.epmd, state.ctl_dist_min, state.ctl_dist_max]
        if not isinstance(state.name, str) or not all(isinstance(p, int) for p in ports):
            return None
        return state

    def resolve(self) -> State:
        """Reuse the saved name and ports so the mnesia data (keyed by node name) stays valid.

        A fresh folder's state file is created exclusively, so two processes starting on the same
        new folder agree on one set of ports.
        """
        for _ in range(5):
            state = self.read()
            if state is None:
                state = self._fresh()
                if self.write(state, exclusive=True):
                    return state
                continue
            if state.name != self._name:
                raise ValueError(
                    f"{self._base} holds the broker {state.name!r}, not {self._name!r}: use another folder"
                )
            changed = False
            if self._explicit_port is not None and state.amqp != self._explicit_port:
                state.amqp, changed = self._explicit_port, True
            if self._explicit_epmd is not None and state.epmd != self._explicit_epmd:
                state.epmd, changed = self._explicit_epmd, True
            if self._management and state.management is None:
                state.management, changed = pick_ports(1, state.ports())[0], True
            if changed:
                self.write(state)
            return state
        raise LocalBrokerError(f"cannot read or create {self.path}")

    def _fresh(self) -> State:
        taken = {p for p in (self._explicit_port, self._explicit_epmd) if p is not None}
        amqp, dist, epmd = pick_ports(3, taken)
        if self._explicit_port is not None:
            amqp = self._explicit_port
        if self._explicit_epmd is not None:  # shared with the other nodes of a cluster
            epmd = self._explicit_epmd
        taken |= {amqp, dist, epmd}
        ctl = pick_ports(CTL_RANGE, taken, consecutive=True)
        state = State(self._name, amqp, dist, epmd, ctl[0], ctl[-1])
        if self._management:
            state.management = pick_ports(1, state.ports())[0]
        return state

    def write(self, state: State, *, exclusive: bool = False) -> bool:
        """Atomic write; ``exclusive`` returns False instead when the file appeared meanwhile."""
        tmp = self._base / f".{STATE_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        try:
            if exclusive:
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    return False
            else:
                tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def repick_busy_ports(self, state: State, *, keep_ports: bool) -> None:
        """Move off ports something else took while the node was down (the saved ones are preferred)."""
        candidates = {"amqp": state.amqp, "dist": state.dist}
        if self._management and state.management is not None:
            candidates["management"] = state.management
        busy = [field for field, port in candidates.items() if not port_free(port)]
        ctl_busy = not all(port_free(p) for p in range(state.ctl_dist_min, state.ctl_dist_max + 1))
        if not busy and not ctl_busy:
            return
        if keep_ports or (self._explicit_port is not None and "amqp" in busy):
            what = ", ".join(busy + (["ctl dist range"] if ctl_busy else []))
            raise LocalBrokerError(f"ports of broker {state.name!r} in {self._base} are taken ({what})")
        taken = state.ports()
        for field in busy:
            setattr(state, field, pick_ports(1, taken)[0])
            taken.add(getattr(state, field))
        if ctl_busy:
            ctl = pick_ports(CTL_RANGE, taken, consecutive=True)
            state.ctl_dist_min, state.ctl_dist_max = ctl[0], ctl[-1]
        self.write(state)
