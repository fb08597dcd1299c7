"""Misspelt fields in a job entity are kept and the job starts, but the answer says "did you mean"."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import JOB, SHELL, cli

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.contracts import JobStatus, misspellings, one_edit_apart


def test_one_edit_is_an_insertion_a_deletion_a_substitution_or_a_swap() -> None:
    assert one_edit_apart("lable", "label")  # swap
    assert one_edit_apart("scirpt", "script")  # swap
    assert one_edit_apart("enviromentVariables", "environmentVariables")  # deletion
    assert one_edit_apart("labels", "label") and one_edit_apart("lobel", "label")
    for far in (
        ("label", "label"),
        ("lbael", "labels"),
        ("image", "name"),
        ("ab", "abcd"),
        ("scirtp", "script"),
    ):
        assert not one_edit_apart(*far), far


def test_only_near_misses_of_known_names_are_flagged() -> None:
    known = {"label", "script", "runner", "type"}
    given = ["label", "lable", "myOwnParameter", "typ", "runer", "scripts"]
    assert misspellings(given, known) == [("lable", "label"), ("runer", "runner"), ("scripts", "script")]


async def test_a_start_with_typos_runs_and_its_answer_names_each_one(
    jobd: Daemon, client: JobdClient, vhost_url: str, tmp_path: Path
) -> None:
    entity = {
        "type": JOB,
        "lable": "typo at the top",
        "myOwnAttribute": "a blueprint's own field: not flagged",
        "runner": {"type": SHELL, "script": "true", "scirpt": "x", "enviromentVariables": ["A=1"]},
    }
    answer = await client.start(entity)
    assert answer.ok and answer.warnings is not None, answer
    assert sorted(answer.warnings) == [
        "job.lable: unknown field; did you mean 'label'? (kept as it is)",
        "job.runner.enviromentVariables: unknown field; did you mean 'environmentVariables'? (kept as it is)",
        "job.runner.scirpt: unknown field; did you mean 'script'? (kept as it is)",
    ]
    assert (await client.handle(str(answer.uid)).wait(timeout=20)).status is JobStatus.COMPLETED
    clean = await client.start({"type": JOB, "label": "fine", "runner": {"type": SHELL, "script": "true"}})
    assert clean.ok and clean.warnings is None
    (tmp_path / "job.json").write_text(json.dumps(entity))
    code, out, err = await cli("submit", str(tmp_path / "job.json"), url=vhost_url, cwd=tmp_path)
    assert code == 0 and "  warning: job.lable: unknown field; did you mean 'label'?" in out, err
