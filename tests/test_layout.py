"""The house rules, checked: what imports what. A rule broken here is broken for every reader after.

Each import check runs in a fresh interpreter, so what one module pulls in is not hidden by another.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def loaded_after(*modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``modules``."""
    code = f"import json, sys\nimport {', '.join(modules)}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_the_contracts_import_nothing_of_the_rest() -> None:
    ours = {m for m in loaded_after("daemon.contracts") if m.split(".")[0] in ("daemon", "plugins")}
    assert ours <= {"daemon"} | {m for m in ours if m.startswith("daemon.contracts")}, ours


def test_the_core_runs_without_the_amqp_library() -> None:
    """Dispatcher, job service, supervisor, scheduler and relays know only the bus's protocols."""
    loaded = loaded_after(
        "daemon.jobs.dispatch",
        "daemon.jobs.supervisor",
        "daemon.jobs.outbox",
        "daemon.scheduling.scheduler",
        "daemon.dmss.writeback",
        "daemon.bus.memory",
    )
    assert not {"aio_pika", "aiormq", "daemon.bus.amqp"} & loaded


def test_only_the_amqp_module_imports_the_amqp_library() -> None:
    users = [
        str(p.relative_to(ROOT))
        for p in sources("daemon", "plugins")
        if {"aio_pika", "aiormq"} & {name.split(".")[0] for name in imports_of(p)}
    ]
    assert users == ["daemon/bus/amqp.py"]


def test_plugins_import_only_the_contracts_of_the_daemon() -> None:
    reaching = {
        str(p.relative_to(ROOT)): sorted(ours)
        for p in sources("plugins")
        if (ours := {n for n in imports_of(p) if n.split(".")[0] == "daemon"} - {"daemon.contracts"})
    }
    assert not reaching


def test_schema_generation_is_not_on_the_runtime_path() -> None:
    assert "daemon.schemagen" not in loaded_after("daemon.app", "daemon.cli", "daemon.client")


async def test_the_store_records_its_schema_version_and_refuses_a_newer_one(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    from daemon.store.records import StoreTooNew
    from daemon.store.sqlite import SCHEMA_VERSION, SqliteStore

    path = tmp_path / "jobd.sqlite3"
    store = SqliteStore(path)
    await store.open()
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer = SqliteStore(path)
    with pytest.raises(StoreTooNew, match="newer dm-jobd"):
        await newer.open()
    await newer.close()
