"""What a daemon loads at start: runners that are off import nothing heavy."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

SCRIPT = """
import json, sys
import structlog
from pathlib import Path
from daemon.jobs.registry import Registry
registry = Registry.load(state_dir=Path(sys.argv[1]), environ={}, log=structlog.get_logger())
print(json.dumps({"azure_sdk": "azure.mgmt.containerinstance" in sys.modules}))
"""


async def test_the_azure_sdk_is_not_imported_while_the_azure_runners_are_off(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "DM_JOBD_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, str(tmp_path), env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert json.loads(out.splitlines()[-1]) == {"azure_sdk": False}
