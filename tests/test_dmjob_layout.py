"""dm-job's layout, end to end: a ``job_handler_plugins`` package of handler folders (tests/dmjob_layout/)
named in ``DM_JOBD_PLUGIN_DIRS`` loads whole, and its handlers run through the daemon against the fake
DMSS: absolute imports between folders, ``services.dmss``, ``services.job_service`` backed by the
daemon's own start and stop, ``restful.exceptions``, ``Job.set_job_status``; DMSS ends up holding what
dm-job would have written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DMSS_TOKEN
from dockerd import LocalDockerd
from fake_dmss import FakeDmss
from fake_radix import FakeRadixScheduler
from helpers import JOB, ended, events_until, poll_until

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus

LAYOUT = Path(__file__).parent / "dmjob_layout" / "job_handler_plugins"
DS = "DemoDS"
WF = "dmss://WorkflowDS/Blueprints/"


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    """A copy of the package (handlers write their results next to themselves)."""
    target = tmp_path / "src" / "job_handler_plugins"
    shutil.copytree(LAYOUT, target, ignore=shutil.ignore_patterns("results", "__pycache__"))
    return target


@pytest.fixture
async def layout_jobd(dmss_settings: Settings, plugins_dir: Path, vhost_url: str) -> AsyncIterator[Daemon]:
    settings = dmss_settings.model_copy(update={"plugin_dirs": [plugins_dir]})
    async with Daemon(settings, vhost_url) as daemon:
        yield daemon


@pytest.fixture
async def layout_client(layout_jobd: Daemon, vhost_url: str) -> AsyncIterator[JobdClient]:
    async with await JobdClient.connect(vhost_url, timeout=20) as client:
        yield client


async def _ended(client: JobdClient, uid: str) -> Any:
    async def check() -> Any:
        answer = await client.status(uid)
        return answer if answer.status is not None and answer.status.is_terminal else None

    return await poll_until(check, what=f"job {uid} to end")


def test_the_package_loads_whole_under_its_own_name(layout_jobd: Daemon, plugins_dir: Path) -> None:
    assert layout_jobd.registry is not None
    origins = {e.type: e.origin for e in layout_jobd.registry.entries()}
    for folder, kind in (
        ("reverse_description", "ReverseDescription"),
        ("staged_shell", "StagedShell"),
        ("spawner", "Spawner"),
        ("radix_requests", "RadixRequests"),
        ("docker_container", "DockerSdkContainer"),
    ):
        assert origins[WF + kind] == f"handler folder {plugins_dir / folder}"
    assert layout_jobd.registry.skipped == []


async def test_dmjobs_reverse_scenario_by_address_leaves_dmss_holding_what_dm_job_wrote(
    layout_client: JobdClient, fake_dmss: FakeDmss
) -> None:
    source = fake_dmss.add(
        DS, {"type": "dmss://system/SIMOS/NamedEntity", "name": "in", "description": "olleh"}
    )
    link = {"type": "dmss://system/SIMOS/Reference", "referenceType": "link", "address": source}
    address = fake_dmss.add(
        DS,
        {
            "type": JOB,
            "label": "reverse",
            "status": "not started",
            "applicationInput": link,
            "runner": {"type": WF + "ReverseDescription"},
        },
    )
    answer = await layout_client.start(address=address, token=DMSS_TOKEN)
    uid = str(answer.uid)
    assert (await _ended(layout_client, uid)).status is JobStatus.COMPLETED
    assert (await layout_client.result(uid)).result == "hello"

    async def written() -> dict[str, Any] | None:
        entity: dict[str, Any] = fake_dmss.read(address)
        return entity if entity.get("status") == "completed" else None

    entity = await poll_until(written, what="DMSS to hold the completed job")
    assert entity["uid"] == uid and entity["started"] and entity["ended"]
    assert all(s.status < 400 for s in fake_dmss.seen), "DMSS refused nothing"


async def test_absolute_imports_and_restful_exceptions_behave_as_under_dm_job(
    layout_client: JobdClient,
) -> None:
    good = await layout_client.start(
        {
            "type": JOB,
            "label": "steps",
            "runner": {"type": WF + "StagedShell", "steps": ["echo one", "echo two"]},
        }
    )
    done = await _ended(layout_client, str(good.uid))
    assert done.status is JobStatus.COMPLETED and done.job.logs == ["one", "two", "2 steps done"], done
    bad = await layout_client.start(
        {"type": JOB, "label": "no steps", "runner": {"type": WF + "StagedShell"}}
    )
    failed = await _ended(layout_client, str(bad.uid))
    assert failed.status is JobStatus.FAILED
    assert "a staged shell job needs runner.steps" in (failed.job.message or ""), failed


async def test_register_job_and_remove_job_are_the_daemons_own_start_and_stop(
    layout_client: JobdClient, fake_dmss: FakeDmss, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    child = fake_dmss.add(
        DS,
        {
            "type": JOB,
            "label": "child",
            "runner": {
                "type": "dmss://WorkflowDS/Blueprints/Shell",
                "script": f"while [ ! -e {gate} ]; do sleep 0.05; done",
            },
        },
    )
    link = {"type": "dmss://system/SIMOS/Reference", "referenceType": "link", "address": child}
    parent = await layout_client.start(
        {"type": JOB, "label": "parent", "applicationInput": link, "runner": {"type": WF + "Spawner"}},
        token=DMSS_TOKEN,
    )

    async def spawned() -> str | None:
        answer = await layout_client.status(str(parent.uid))
        logs = answer.job.logs if answer.job is not None else []
        return logs[-1].split()[-1] if logs and logs[-1].startswith("spawned ") else None

    child_uid = await poll_until(spawned, what="the handler to register its job")

    async def child_running() -> bool | None:
        return True if (await layout_client.status(child_uid)).status is JobStatus.RUNNING else None

    await poll_until(child_running, what="the registered job to run")
    assert fake_dmss.read(child)["uid"] == child_uid, "started by address, written back"
    stopped = await layout_client.stop(str(parent.uid))
    assert stopped.ok and stopped.status is JobStatus.REMOVED
    assert (await _ended(layout_client, child_uid)).status is JobStatus.REMOVED, "remove_job stopped it"


async def test_a_radix_job_through_requests_waits_while_radix_says_waiting(layout_client: JobdClient) -> None:
    """dm-job's radix handler maps Waiting to unknown: not an end, so the job goes on to completed."""
    async with FakeRadixScheduler() as radix:
        job = {
            "type": JOB,
            "label": "radix",
            "runner": {"type": WF + "RadixRequests", "jobName": "127.0.0.1", "schedulerPort": radix.port},
        }
        async with layout_client.events() as events:  # subscribed first: no status can slip past
            answer = await layout_client.start(job)
            seen = await events_until(events, ended(str(answer.uid)))
    shown = [e.data.status for e in seen if not e.type.endswith(".progress")]
    assert JobStatus.UNKNOWN in shown and shown[-1] is JobStatus.COMPLETED, shown


async def test_a_docker_sdk_handler_runs_its_container_on_the_private_engine(
    docker_engine: LocalDockerd, dmss_settings: Settings, plugins_dir: Path, vhost_url: str
) -> None:
    settings = dmss_settings.model_copy(update={"plugin_dirs": [plugins_dir]})
    environ = {**os.environ, "DOCKER_HOST": docker_engine.url}  # read back through dm-job's config
    job = {
        "type": JOB,
        "label": "docker sdk",
        "runner": {
            "type": WF + "DockerSdkContainer",
            "name": "sdk",
            "image": {"registryName": "localhost", "imageName": "busybox", "version": "local"},
            "customCommand": ["sh", "-c", "echo from the container"],
        },
    }
    async with Daemon(settings, vhost_url, environ=environ), await JobdClient.connect(vhost_url) as client:
        answer = await client.start(job)
        done = await _ended(client, str(answer.uid))
    assert done.status is JobStatus.COMPLETED, done
    assert "from the container" in done.job.logs, done.job.logs
