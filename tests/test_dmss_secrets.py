"""DMSS tokens reach DMSS and the job, and nowhere else: not logs, events, answers or error messages."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from conftest import DMSS_TOKEN
from fake_dmss import FakeDmss
from helpers import JOB, REVERSE, ended, events_until

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import DmssError, DmssUnavailable, ErrorCode
from daemon.dmss.client import DmssClient, complete_address

WRONG = "wrong-tok-77aa55cc-secret"


async def test_the_dmss_token_never_leaves_dmss_and_the_job(
    dmss_settings: Settings, vhost_url: str, fake_dmss: FakeDmss, log_lines: io.StringIO
) -> None:
    source = fake_dmss.add(
        "DS", {"type": "dmss://system/SIMOS/NamedEntity", "name": "in", "description": "cba"}
    )
    link = {"type": "dmss://system/SIMOS/Reference", "referenceType": "link", "address": source}
    results = fake_dmss.add("DS", {"type": "dmss://system/SIMOS/Package", "name": "r", "content": []})
    job = {
        "type": JOB,
        "applicationInput": link,
        "runner": {"type": REVERSE},
        "outputTarget": f"{results}.content",
    }
    address = fake_dmss.add("DS", job)
    async with Daemon(dmss_settings, vhost_url), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            answers = [await client.start(address=address, token=DMSS_TOKEN)]
            seen = await events_until(events, ended(str(answers[0].uid)))
        answers.append(await client.status(str(answers[0].uid)))
        answers.append(await client.result(str(answers[0].uid)))
        refused = [await client.call("job.start", {"address": address, "token": WRONG})]
        fake_dmss.outage = True
        refused.append(await client.call("job.start", {"address": address, "token": DMSS_TOKEN}))
    assert getattr(answers[-1], "result", None) == "abc"
    assert [r["error"]["code"] for r in refused] == ["dmss_unauthorized", "dmss_unavailable"]
    assert any(s.access_key == DMSS_TOKEN for s in fake_dmss.seen), "the token reached DMSS"
    texts = [a.model_dump_json() for a in answers] + [e.model_dump_json() for e in seen]
    texts += [json.dumps(r) for r in refused]
    logs = log_lines.getvalue()
    assert "job accepted" in logs, "the logs were captured"
    for text in [*texts, logs]:
        assert DMSS_TOKEN not in text and WRONG not in text


async def test_the_client_translates_dmss_errors_without_the_token() -> None:
    """An error body that echoes the token (a careless server) is scrubbed at the client's boundary."""

    def echo(request: httpx.Request) -> httpx.Response:
        key = request.headers["Access-Key"]
        if request.url.path.endswith("/gone"):
            return httpx.Response(404, json={"status": 404, "type": "NotFoundException", "message": "no"})
        return httpx.Response(403, json={"status": 403, "type": "MissingPrivilegeException", "message": key})

    dmss = DmssClient("http://dmss.invalid", transport=httpx.MockTransport(echo))
    try:
        with pytest.raises(DmssError) as refused:
            await dmss.get("dmss://DS/$1", DMSS_TOKEN)
        assert refused.value.code is ErrorCode.DMSS_UNAUTHORIZED and DMSS_TOKEN not in refused.value.message
        with pytest.raises(DmssError) as missing:
            await dmss.get("dmss://DS/gone", DMSS_TOKEN)
        assert missing.value.code is ErrorCode.DMSS_NOT_FOUND and missing.value.status == 404
    finally:
        await dmss.close()


async def test_an_unreachable_dmss_is_unavailable_not_refused(fake_dmss: FakeDmss) -> None:
    url = fake_dmss.url
    await fake_dmss.stop()  # connection refused from now on
    dmss = DmssClient(url)
    try:
        with pytest.raises(DmssUnavailable) as down:
            await dmss.update("dmss://DS/$1", DMSS_TOKEN, {"status": "running"})
        assert "unreachable" in down.value.message and not down.value.bad_input
    finally:
        await dmss.close()


def test_a_post_answer_becomes_a_complete_address() -> None:
    assert complete_address("dmss://DS/$abc", "dmss://DS/$x.schedule.runs") == "dmss://DS/$abc"
    assert complete_address("abc", "dmss://DS/$x.schedule.runs") == "dmss://DS/$abc"
