"""Tokens reach the job and nowhere else: not logs, events, answers or the error of a refused command."""

from __future__ import annotations

import io
import json

from helpers import ended, events_until, reverse_job, shell_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.logs import redact

TOKEN = "tok-9f8e7d6c5b4a-secret"


async def test_the_token_never_leaves_the_job(
    settings: Settings, vhost_url: str, log_lines: io.StringIO
) -> None:
    async with Daemon(settings, vhost_url), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            answers = [await client.start(reverse_job("abc"), token=TOKEN)]
            script = f'[ "$DMSS_TOKEN" = "{TOKEN[:4]}"{TOKEN[4:]} ] && echo has-token'
            answers.append(await client.start(shell_job(script), token=TOKEN))
            seen = []
            for answer in answers:
                seen += await events_until(events, ended(str(answer.uid)))
        answers += [await client.status(str(a.uid)) for a in answers]
        answers.append(await client.result(str(answers[0].uid)))
        refused = await client.call("job.start", {"job": {"type": "x"}, "token": TOKEN})
    assert seen[-1].data.logs == ["has-token"], "the job itself got the token"
    texts = (
        [a.model_dump_json() for a in answers] + [e.model_dump_json() for e in seen] + [json.dumps(refused)]
    )
    logs = log_lines.getvalue()
    assert "job accepted" in logs, "the logs were captured"
    for text in [*texts, logs]:
        assert TOKEN not in text


def test_redact_hides_secret_keys_and_url_passwords() -> None:
    event = {"event": "x", "token": "abc", "AZURE_SP_SECRET": "def", "url": "amqp://user:pw@host/", "n": 1}
    assert redact(None, "info", event) == {
        "event": "x",
        "token": "***",
        "AZURE_SP_SECRET": "***",
        "url": "amqp://user:***@host/",
        "n": 1,
    }
