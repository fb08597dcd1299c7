"""The local container runner: dm-job's ``LocalContainer`` jobs as containers on a Docker engine.

The runner entity (dm-job's ``Container`` blueprint)::

    {"type": "dmss://WorkflowDS/Blueprints/LocalContainer",
     "image": {"registryName": "docker.io/library", "imageName": "busybox", "version": "1.36"},
     "customCommand": "sh -c 'echo hi > $DM_JOB_RESULT'",   # or a list; default: the image's CMD
     "computeResource": {"cpu": "0.5", "memory": "256Mi"},   # units: see plugins.container.spec
     "name": "my-job",                                     # optional; default dm-jobd-<job uid>
     "network": "host",                                    # optional Docker network (mode)
     "environmentVariables": ["NAME=value", "NAME"]}

The container gets dm-job's environment (``DMSS_TOKEN`` and the rest, in its environment only, never in
labels or logs), ``DM_JOB_UID`` and ``DM_JOB_RESULT=/dm-job/result``: a job that writes that file has
it as its result; otherwise the result is its standard output. Exit code 0 completes the job, anything
else fails it with the code and the last log lines. ``stop`` kills and removes the container. A finished
container's result, output and exit code are copied into the plugin's state folder, then the container
is removed (see :mod:`plugins.container.runner`).

Configuration (the daemon's environment):

- ``DM_JOBD_DOCKER_HOST``: the engine (``unix:///path``, ``tcp://host:2376``); default ``DOCKER_HOST``,
  else ``unix:///var/run/docker.sock``. The engine need not be up when the daemon starts.
- ``DM_JOBD_DOCKER_AUTH``: registry credentials for pulls, JSON ``{"<registry host>": {"username",
  "password"}}`` (or a Docker ``config.json``'s ``{"auths": ...}``).
- ``DM_JOBD_DOCKER_NETWORK``: the network for jobs whose runner names none.
"""

from __future__ import annotations

from collections.abc import Mapping

from daemon.contracts import RunnerContext, RunnerUnavailable

from .engine import Engine, EngineError, NameClash, parse_auths
from .runner import JOB_LABEL, OWNER_LABEL, ContainerRunner
from .spec import DEFAULT_RESULT_PATH, parse_cpu, parse_memory

__all__ = [
    "DEFAULT_RESULT_PATH",
    "JOB_LABEL",
    "OWNER_LABEL",
    "PLUGIN",
    "TYPES",
    "ContainerRunner",
    "EngineError",
    "NameClash",
    "docker_url",
    "parse_cpu",
    "parse_memory",
]

TYPES = ("dmss://WorkflowDS/Blueprints/LocalContainer",)
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def docker_url(environ: Mapping[str, str]) -> str:
    """Where the engine is: ``DM_JOBD_DOCKER_HOST``, else ``DOCKER_HOST``, else the standard socket."""
    return environ.get("DM_JOBD_DOCKER_HOST") or environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


class _Plugin:
    types: tuple[str, ...] = TYPES

    def create(self, ctx: RunnerContext) -> ContainerRunner:
        try:
            auths = parse_auths(ctx.env.get("DM_JOBD_DOCKER_AUTH"))
        except ValueError as exc:
            raise RunnerUnavailable(str(exc)) from None
        return ContainerRunner(
            Engine(docker_url(ctx.env), auths),
            ctx.state_dir,
            ctx.log,
            log_lines=ctx.settings.log_lines,
            default_network=ctx.env.get("DM_JOBD_DOCKER_NETWORK") or None,
        )


PLUGIN = _Plugin()
