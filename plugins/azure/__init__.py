"""Azure Container Instances runners: AzureContainer, and Omnia classic (ACI in a private subnet).

One runner serves both: an Omnia classic job is the same container group with ``subnetIds`` and Log
Analytics diagnostics. The plugin is off, with the reason shown, when the configuration is missing or
wrong (``AZURE_JOB_SUBSCRIPTION`` not a GUID, ...): Azure jobs are then refused, other runners run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.contracts import RunnerContext, RunnerUnavailable

from .config import AzureConfig, ConfigError

if TYPE_CHECKING:
    from .runner import AzureError, AzureRunner

__all__ = ["AZURE_TYPE", "CLASSIC_TYPES", "PLUGIN", "TYPES", "AzureConfig", "AzureError", "AzureRunner"]

AZURE_TYPE = "dmss://WorkflowDS/Blueprints/AzureContainer"
#: dm-job's name for Omnia classic, and the WorkflowDS one.
CLASSIC_TYPES = (
    "dmss://DMT-Internal/DMT/AzureContainerInstanceJobClassic",
    "dmss://WorkflowDS/Blueprints/AzureContainerClassic",
)
TYPES = (AZURE_TYPE, *CLASSIC_TYPES)


class _Plugin:
    types: tuple[str, ...] = TYPES

    def create(self, ctx: RunnerContext) -> AzureRunner:
        try:
            cfg = AzureConfig.from_env(ctx.env, log_lines=ctx.settings.log_lines)
        except ConfigError as exc:
            raise RunnerUnavailable(f"the Azure runners are off: {exc}") from None
        ctx.log.info("Azure runners configured", config=repr(cfg))
        from .runner import AzureRunner  # the Azure SDK, loaded only when the runners are on

        return AzureRunner(cfg, log=ctx.log, state_dir=ctx.state_dir, classic_types=frozenset(CLASSIC_TYPES))


PLUGIN = _Plugin()


def __getattr__(name: str) -> object:
    """``AzureRunner`` and ``AzureError`` on first use: a daemon whose Azure runners are off never
    imports the Azure SDK (about 0.15 s of its start-up)."""
    if name in ("AzureError", "AzureRunner"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
