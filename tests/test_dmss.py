"""Jobs by DMSS address against a fake DMSS and the real broker: start, write-back, results, dm-job's
two integration scenarios, and a DMSS outage that delays write-backs without losing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import DMSS_TOKEN
from fake_dmss import FakeDmss
from helpers import JOB, REVERSE, SHELL, ended, events_until, poll_until

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus

DS = "DemoDS"
RECURRING = "dmss://WorkflowDS/Blueprints/RecurringJob"
HANDLER = "dmss://WorkflowDS/Blueprints/RecurringJobHandler"


def input_entity(dmss: FakeDmss) -> str:
    """dm-job's example input: a named entity whose description, reversed, is ``ThisIsBackwards``."""
    return dmss.add(
        DS, {"type": "dmss://system/SIMOS/NamedEntity", "name": "input", "description": "sdrawkcaBsIsihT"}
    )


def link(address: str) -> dict[str, Any]:
    return {"type": "dmss://system/SIMOS/Reference", "referenceType": "link", "address": address}


def reverse_by_reference(input_address: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": JOB,
        "label": "Example reverse job",
        "status": "not started",
        "applicationInput": link(input_address),
        "runner": {"type": REVERSE},
        **extra,
    }


async def entity_where(dmss: FakeDmss, address: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        entity: dict[str, Any] = dmss.read(address)
        return entity if entity.get("status") == status else None

    return await poll_until(check, what=f"{address} to show {status!r} in DMSS")


async def test_a_reverse_job_started_by_address_completes_and_stores_its_result(
    dmss_client: JobdClient, fake_dmss: FakeDmss
) -> None:
    """dm-job's first scenario: a ReverseDescription job by address; its result is ThisIsBackwards."""
    results = fake_dmss.add(DS, {"type": "dmss://system/SIMOS/Package", "name": "results", "content": []})
    address = fake_dmss.add(
        DS, reverse_by_reference(input_entity(fake_dmss), outputTarget=f"{results}.content")
    )
    async with dmss_client.events() as events:
        answer = await dmss_client.start(address=address, token=DMSS_TOKEN)
        assert answer.ok and answer.status is JobStatus.STARTING, answer
        uid = str(answer.uid)
        await events_until(events, ended(uid))
    assert (await dmss_client.result(uid)).result == "ThisIsBackwards"
    entity = await entity_where(fake_dmss, address, "completed")
    assert entity["started"] and entity["ended"] and entity["uid"] == uid, "as dm-job wrote them"
    assert entity["runner"] == {"type": REVERSE}, "the entity keeps what the daemon does not own"
    assert not {"log", "token", "handle", "percentage", "message"} & set(entity), "no internal fields"
    assert all(s.status < 400 for s in fake_dmss.seen), "DMSS refused nothing"

    async def stored() -> list[Any] | None:
        content: list[Any] = fake_dmss.read(f"{results}.content")
        return content or None

    (blob,) = await poll_until(stored, what="the result at outputTarget")
    assert blob["type"] == "dmss://system/SIMOS/Blob" and blob["_blob_id"] == uid
    assert fake_dmss.blobs[(DS, uid)] == b"ThisIsBackwards"
    assert all(s.access_key == DMSS_TOKEN for s in fake_dmss.seen), "every request carried the token"
    reads = [s.path for s in fake_dmss.requests("GET")]
    assert reads[-1].endswith(".applicationInput"), "the runner read its input through DMSS"


async def test_the_entity_shows_each_status_of_a_job_started_by_address(
    dmss_client: JobdClient, fake_dmss: FakeDmss, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    script = f'echo "$JOB_DMSS_ID"; while [ ! -e {gate} ]; do sleep 0.05; done; echo done'
    address = fake_dmss.add(DS, {"type": JOB, "label": "gated", "runner": {"type": SHELL, "script": script}})
    answer = await dmss_client.start(address=address, token=DMSS_TOKEN)
    running = await entity_where(fake_dmss, address, "running")
    assert running["started"] and "ended" not in running
    gate.touch()
    done = await entity_where(fake_dmss, address, "completed")
    assert done["ended"] and done["uid"] == str(answer.uid)
    status = await dmss_client.status(str(answer.uid))
    assert status.status is JobStatus.COMPLETED and status.job is not None
    assert status.job.logs == [address, "done"], "the job knew its address"
    history = fake_dmss.statuses[address.rsplit("$", 1)[1]]
    assert history[-1] == "completed" and "running" in history
    order = ["starting", "running", "completed"]
    assert [order.index(s) for s in history] == sorted(order.index(s) for s in history), history


async def test_errors_from_dmss_come_back_as_clear_answers(
    dmss_client: JobdClient, fake_dmss: FakeDmss
) -> None:
    address = fake_dmss.add(DS, reverse_by_reference(input_entity(fake_dmss)))
    not_a_job = input_entity(fake_dmss)
    cases = [
        ({"address": address, "token": "wrong"}, "dmss_unauthorized", "401"),
        ({"address": f"dmss://{DS}/$nothing-here", "token": DMSS_TOKEN}, "dmss_not_found", "404"),
        ({"address": f"dmss://{DS}/$abc..x", "token": DMSS_TOKEN}, "dmss_invalid", "400"),
        ({"address": not_a_job, "token": DMSS_TOKEN}, "invalid", "not a dmss://WorkflowDS/Blueprints/Job"),
    ]
    for body, code, says in cases:
        answer = await dmss_client.call("job.start", body)
        assert not answer["ok"] and answer["error"]["code"] == code, (body, answer)
        assert says in answer["error"]["message"], answer
    fake_dmss.outage = True
    answer = await dmss_client.call("job.start", {"address": address, "token": DMSS_TOKEN})
    assert answer["error"]["code"] == "dmss_unavailable" and "503" in answer["error"]["message"], answer


async def test_a_dmss_outage_delays_the_write_back_and_loses_nothing(
    dmss_settings: Settings, vhost_url: str, fake_dmss: FakeDmss, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    script = f"while [ ! -e {gate} ]; do sleep 0.05; done; echo finished"
    address = fake_dmss.add(DS, {"type": JOB, "label": "outage", "runner": {"type": SHELL, "script": script}})
    async with Daemon(dmss_settings, vhost_url), await JobdClient.connect(vhost_url, timeout=20) as client:
        async with client.events() as events:
            uid = str((await client.start(address=address, token=DMSS_TOKEN)).uid)
            fake_dmss.outage = True
            gate.touch()
            seen = await events_until(events, ended(uid))
        assert seen[-1].data.status is JobStatus.COMPLETED, "events flow while DMSS is down"
        assert (await client.status(uid)).status is JobStatus.COMPLETED

        async def retried() -> bool | None:
            refused = [s for s in fake_dmss.requests("PUT") if s.status == 503]
            return True if len(refused) >= 2 else None

        await poll_until(retried, what="the write-back to be retried")
        assert fake_dmss.read(address).get("status") != "completed"
    # the daemon stops with the write-back still pending; the next one makes it from its store
    fake_dmss.outage = False
    async with Daemon(dmss_settings, vhost_url):
        entity = await entity_where(fake_dmss, address, "completed")
    assert entity["uid"] == uid and entity["ended"]


async def test_a_recurring_job_by_address_records_its_first_run_under_schedule_runs(
    dmss_client: JobdClient, fake_dmss: FakeDmss
) -> None:
    """dm-job's second scenario: a RecurringJob by address; its first run, appended to schedule.runs
    and started by that new address, completes with ThisIsBackwards."""
    recurring = {
        "type": RECURRING,
        "label": "reverse, again and again",
        "status": "not started",
        "applicationInput": reverse_by_reference(input_entity(fake_dmss)),
        "runner": {"type": HANDLER},
        "schedule": {"type": "dmss://WorkflowDS/Blueprints/CronJob", "cron": "1/1 * * * *", "runs": []},
    }
    address = fake_dmss.add(DS, recurring)
    answer = await dmss_client.start(address=address, token=DMSS_TOKEN)
    assert answer.ok and answer.status is JobStatus.REGISTERED, answer
    uid = str(answer.uid)
    await entity_where(fake_dmss, address, "registered")
    fired = await dmss_client.schedule("trigger", uid)
    assert fired.ok, fired

    async def first_run() -> dict[str, Any] | None:
        runs: list[dict[str, Any]] = fake_dmss.read(f"{address}.schedule.runs")
        return runs[0] if runs and runs[0].get("status") == "completed" else None

    run = await poll_until(first_run, what="the first run, under schedule.runs, to complete")
    assert run["type"] == JOB and run["started"] and run["ended"]
    assert run["triggeredBy"] == f"Schedule ({uid})", "as dm-job wrote it"
    shown = await dmss_client.schedule("show", uid)
    assert shown.schedule is not None
    first = shown.schedule.runs[0].uid
    assert run["uid"] == first, "dm-job's own test reads runs[0]['uid']"
    status = await dmss_client.status(first)
    assert status.job is not None and status.job.triggered_by == f"Schedule ({uid})"
    assert (await dmss_client.result(first)).result == "ThisIsBackwards"
    await dmss_client.stop(uid)
    await entity_where(fake_dmss, address, "removed")


async def test_a_write_back_dmss_keeps_failing_is_given_up_and_shown_on_the_job(
    dmss_settings: Settings, vhost_url: str, fake_dmss: FakeDmss, log_lines: Any
) -> None:
    """The same 500 again and again is not an outage: given up at the limit, logged once, on the job."""
    settings = dmss_settings.model_copy(update={"dmss_retry_limit": 3})
    address = fake_dmss.add(
        DS, {"type": JOB, "label": "refused", "runner": {"type": SHELL, "script": "true"}}
    )
    fake_dmss.failing_puts = True
    async with Daemon(settings, vhost_url), await JobdClient.connect(vhost_url, timeout=20) as client:
        async with client.events() as events:
            uid = str((await client.start(address=address, token=DMSS_TOKEN)).uid)

            def noted(event: Any) -> bool:
                return event.subject == uid and event.data.writeback is not None

            seen = await events_until(events, noted)
        note = seen[-1].data.writeback or ""
        assert f"not written to {address}" in note and "500" in note, note
        status = await client.status(uid)
        assert status.status is JobStatus.COMPLETED and status.job is not None
        assert status.job.writeback == note
    puts = fake_dmss.requests("PUT")
    assert 3 <= len(puts) <= 6 and all(s.status == 500 for s in puts), puts
    given_up = [line for line in log_lines.getvalue().splitlines() if "DMSS write-back given up" in line]
    assert len(given_up) == 1, given_up
