"""Replicas know each other through the shared store's heartbeats; ``health`` speaks for this host's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import cli
from pydantic import SecretStr

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.presence import StoreMismatch
from daemon.store.records import ReplicaRecord


def replica_settings(settings: Settings, postgres_url: str, name: str) -> Settings:
    return settings.model_copy(
        update={
            "store": SecretStr(postgres_url),
            "state_dir": settings.state_dir.parent / name,
            "replica_heartbeat_seconds": 0.2,
        }
    )


async def test_every_replica_lists_every_replica_from_the_shared_store(
    settings: Settings, vhost_url: str, postgres_url: str
) -> None:
    a_settings = replica_settings(settings, postgres_url, "a")
    b_settings = replica_settings(settings, postgres_url, "b")
    async with Daemon(a_settings, vhost_url) as a, await JobdClient.connect(vhost_url) as client:
        async with Daemon(b_settings, vhost_url) as b:
            dead = ReplicaRecord(
                "gone-1", "old-host", 1, "0.0.1", a.clock.now(), a.clock.now() - timedelta(minutes=5)
            )
            await a.store.heartbeat(dead)  # a replica SIGKILLed long ago: listed, and not alive
            answers = [await client.replicas() for _ in range(6)]  # whichever replica consumes each
            for answer in answers:
                views = {v.id: v for v in answer.replicas or []}
                assert set(views) == {a.presence.id, b.presence.id, "gone-1"}
                assert views[a.presence.id].alive and views[b.presence.id].alive and not views["gone-1"].alive
                assert sum(v.answering for v in views.values()) == 1
        listed = {v.id for v in (await client.replicas()).replicas or []}
        assert b.presence.id not in listed, "a replica that stops leaves the table"


async def test_health_reports_this_hosts_replica_and_a_stale_one_fails(
    jobd: Daemon, settings: Settings, vhost_url: str, tmp_path: Path
) -> None:
    env = {"DM_JOBD_STATE_DIR": str(settings.state_dir)}
    code, out, err = await cli("health", url=vhost_url, cwd=tmp_path, extra_env=env)
    assert code == 0 and out.startswith(f"replica {jobd.presence.id}: ok: broker connected"), err
    code, out, _ = await cli("health", "--json", url=vhost_url, cwd=tmp_path, extra_env=env)
    body = json.loads(out)
    assert body["ok"] and body["replica"] == jobd.presence.id and body["store"] and body["consuming"]

    stale_dir = tmp_path / "stale"
    (stale_dir / "health").mkdir(parents=True)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    stale = {
        "replica": "x",
        "at": long_ago.isoformat(),
        "every": 5,
        "broker": True,
        "store": True,
        "consuming": True,
    }
    (stale_dir / "health" / "x.json").write_text(json.dumps(stale))
    code, out, _ = await cli(
        "health", url=vhost_url, cwd=tmp_path, extra_env={"DM_JOBD_STATE_DIR": str(stale_dir)}
    )
    assert code == 1 and "STALE" in out


async def test_a_daemon_with_another_store_on_the_same_queue_refuses_to_consume(
    jobd: Daemon, settings: Settings, vhost_url: str, tmp_path: Path
) -> None:
    """Two daemons on one broker with their own SQLite files: the second would answer from its own."""
    other = settings.model_copy(update={"state_dir": tmp_path / "other"})
    with pytest.raises(StoreMismatch) as refused:
        async with Daemon(other, vhost_url):
            pass
    message = str(refused.value)
    assert f"sqlite:{other.store_path}" in message and f"sqlite:{settings.store_path}" in message
    assert jobd.presence.id in message, "and which replica uses the other store"
    env = {"DM_JOBD_STATE_DIR": str(tmp_path / "third"), "DM_JOBD_LOG_FORMAT": "json"}
    code, _, err = await cli("run", url=vhost_url, cwd=tmp_path, extra_env=env)
    assert code == 2 and "the daemons already consuming the command queue use" in err
    async with await JobdClient.connect(vhost_url) as client:
        assert (await client.replicas()).replicas is not None, "the first daemon serves on"
