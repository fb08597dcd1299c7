"""schemas/ matches the models, and the generated schemas accept and refuse what the daemon does.

The drift check reads the committed files; the validation checks use ``render_all()`` so they say
something useful even while the files are stale. jsonschema is a test-only dependency: without it the
validation checks skip on a laptop and fail in CI.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.config import Settings
from daemon.contracts import (
    Answer,
    Base64Result,
    CloudEvent,
    ErrorCode,
    ErrorInfo,
    EventData,
    JobStatus,
    JobView,
    ProgressCommand,
    ResultAnswer,
    StartCommand,
    UidCommand,
)
from daemon.schemagen import ASYNCAPI_FILE, DEFAULT_DELIVERY_LIMIT, GENERATED_GLOB, drift, render_all

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
GEN = ROOT / "scripts" / "gen-schemas"

# The example job entity of the DM docs (seeds/dm-docs-jobs-concepts.md, "Job entity").
DOCS_JOB: dict[str, Any] = {
    "type": "dmss://WorkflowDS/Blueprints/Job",
    "label": "Fetch Signals from OmniaTS",
    "status": "not started",
    "outputTarget": "dmss://MSDS",
    "applicationInput": {
        "type": "dmss://system/SIMOS/Reference",
        "referenceType": "link",
        "address": "~.~.~.sce",
    },
    "runner": {
        "type": "JOBCORE:AzureContainer",
        "containerImage": "simpos-omniats",
        "environmentVariables": [
            "OMNIA_TIMESERIES_BASE_URL=https://api.gateway.equinor.com/plant/timeseries/v1.7",
            "OMNIA_TIMESERIES_TEST_CLIENT_ID=67d****",
        ],
    },
}

# The how-to page's local container job (seeds/dm-docs-jobs-howto.md): its own spellings kept.
HOWTO_JOB: dict[str, Any] = {
    "label": "Example local container job",
    "type": "dmss://WorkflowDS/Blueprints/Job",
    "status": "Not started",
    "triggeredBy": "author",
    "outputTarget": "dmss://DataSource/$456-456.result",
    "applicationInput": {
        "type": "dmss://system/SIMOS/Reference",
        "referenceType": "link",
        "address": "dmss://DataSource/$123-123",
    },
    "runner": {"type": "dmss://DataSource/apps/MySignalApp/models/SignalGeneratorJob"},
    "started": "Not started",
}

# The recurring job of the concepts page: a RecurringJob holding the job to repeat.
RECURRING_JOB: dict[str, Any] = {
    "type": "dmss://WorkflowDS/Blueprints/RecurringJob",
    "label": "Fetch Signals from OmniaTS",
    "status": "not started",
    "applicationInput": DOCS_JOB,
    "runner": {"type": "dmss://WorkflowDS/Blueprints/RecurringJobHandler"},
    "schedule": {"type": "dmss://WorkflowDS/Blueprints/CronJob", "cron": "30 */1 * * *", "runs": []},
}


def _jsonschema() -> ModuleType:
    if os.environ.get("CI"):
        return importlib.import_module("jsonschema")
    module: ModuleType = pytest.importorskip("jsonschema")
    return module


@cache
def _rendered() -> dict[str, str]:
    return render_all()


def _schema(filename: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_rendered()[filename])
    return loaded


def _errors(filename: str, body: Any) -> list[str]:
    jsonschema = _jsonschema()
    schema = _schema(filename)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [error.message for error in validator.iter_errors(body)]


def _walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _walk_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_refs(item)


def _resolve_pointer(document: Any, ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref!r} is not a reference inside the document"
    node = document
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


# --- drift -------------------------------------------------------------------------------------------


def test_schemas_folder_matches_the_models() -> None:
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMAS.glob(GENERATED_GLOB) if p.is_file()}
    problems = drift(_rendered(), on_disk)
    listing = ", ".join(f"{name} ({reason})" for name, reason in problems.items())
    assert not problems, f"schemas/ drifted from the models: {listing}; run scripts/gen-schemas"


def test_readme_names_every_generated_file() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    missing = [name for name in _rendered() if name not in readme]
    assert not missing, f"schemas/README.md does not mention {missing}"


def test_rendering_is_deterministic() -> None:
    assert render_all() == render_all()


def test_gen_script_writes_checks_and_prunes(tmp_path: Path) -> None:
    def gen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(GEN), "--out", str(tmp_path), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )

    assert gen("--check").returncode == 1
    assert gen().returncode == 0
    assert {p.name for p in tmp_path.iterdir()} == set(_rendered())
    assert gen("--check").returncode == 0

    (tmp_path / "job.start.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "old.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("kept\n", encoding="utf-8")
    checked = gen("--check")
    assert checked.returncode == 1
    assert "job.start.json: differs" in checked.stderr
    assert "old.json: stale" in checked.stderr
    assert "run scripts/gen-schemas" in checked.stderr
    assert (tmp_path / "job.start.json").read_text(encoding="utf-8") == "{}\n", "--check must not write"

    assert gen().returncode == 0
    assert gen("--check").returncode == 0
    assert not (tmp_path / "old.json").exists()
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "kept\n"


def test_delivery_limit_matches_the_settings_default() -> None:
    assert Settings.model_fields["delivery_limit"].default == DEFAULT_DELIVERY_LIMIT


# --- message schemas ---------------------------------------------------------------------------------


def _message_files() -> list[str]:
    return [name for name in _rendered() if name != ASYNCAPI_FILE]


def test_every_schema_has_id_title_and_dialect() -> None:
    ids = set()
    for filename in _message_files():
        schema = _schema(filename)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith(filename)
        assert schema["title"]
        ids.add(schema["$id"])
    assert len(ids) == len(_message_files())


def test_every_schema_is_a_valid_2020_12_schema() -> None:
    validator = _jsonschema().Draft202012Validator
    for filename in _message_files():
        validator.check_schema(_schema(filename))


@pytest.mark.parametrize("job", [DOCS_JOB, HOWTO_JOB, RECURRING_JOB], ids=["concepts", "howto", "recurring"])
def test_docs_job_entities_validate_as_start(job: dict[str, Any]) -> None:
    body = {"job": job}
    assert _errors("job.start.json", body) == []
    StartCommand.model_validate(body)


# Bodies where schema and model must give the same verdict: this pins the hand-written oneOf rule.
START_BODIES: list[tuple[str, dict[str, Any], bool]] = [
    ("inline", {"job": DOCS_JOB}, True),
    ("address", {"address": "dmss://DS/$123", "token": "secret"}, True),
    ("address-null-job", {"job": None, "address": "dmss://DS/$123"}, True),
    ("time-limit", {"job": DOCS_JOB, "timeLimitSeconds": 30}, True),
    ("unknown-field", {"job": DOCS_JOB, "priority": "high"}, False),
    ("typo", {"jobb": DOCS_JOB}, False),
    ("both", {"job": DOCS_JOB, "address": "dmss://DS/$123"}, False),
    ("neither", {}, False),
    ("both-null", {"job": None, "address": None}, False),
    ("not-dmss", {"address": "https://example.com/x"}, False),
    ("no-runner", {"job": {"type": "dmss://WorkflowDS/Blueprints/Job"}}, False),
    ("empty-runner-type", {"job": {**DOCS_JOB, "runner": {"type": ""}}}, False),
    ("zero-time-limit", {"job": DOCS_JOB, "timeLimitSeconds": 0}, False),
]


@pytest.mark.parametrize(
    ("body", "valid"), [(b, v) for _, b, v in START_BODIES], ids=[n for n, _, _ in START_BODIES]
)
def test_start_schema_agrees_with_the_model(body: dict[str, Any], valid: bool) -> None:
    errors = _errors("job.start.json", body)
    assert (errors == []) is valid, errors
    try:
        StartCommand.model_validate(body)
        model_valid = True
    except ValidationError:
        model_valid = False
    assert model_valid is valid


def test_unknown_field_in_start_is_refused() -> None:
    body = {"job": copy.deepcopy(DOCS_JOB), "replyTo": "me"}
    errors = _errors("job.start.json", body)
    assert any("replyTo" in message for message in errors), errors
    # Unknown fields inside the entity are the entity's own business: kept, not refused.
    body = {"job": {**DOCS_JOB, "somethingNew": {"a": 1}}}
    assert _errors("job.start.json", body) == []


@pytest.mark.parametrize("filename", ["job.stop.json", "job.status.json", "job.result.json"])
def test_uid_commands(filename: str) -> None:
    uid = "0b7c4d8e-6a2f-4c1e-9d3b-5f6e7a8b9c0d"
    assert _errors(filename, {"uid": uid}) == []
    UidCommand.model_validate({"uid": uid})
    assert _errors(filename, {"uid": ""})
    assert _errors(filename, {})
    assert _errors(filename, {"uid": uid, "force": True})


def test_progress_command() -> None:
    body = {"uid": "u1", "status": "not started", "percentage": 42.5, "logs": ["step 1", "step 2"]}
    assert _errors("job.progress.json", body) == []
    ProgressCommand.model_validate(body)
    assert _errors("job.progress.json", {"uid": "u1", "percentage": 101})
    assert _errors("job.progress.json", {"uid": "u1", "status": "not-started"})


def _wire(model: Answer | CloudEvent) -> Any:
    return json.loads(model.model_dump_json(by_alias=True))


def test_answers_the_daemon_sends_validate() -> None:
    started = Answer(ok=True, uid="u1", status=JobStatus.STARTING, message="started")
    failed = Answer(
        ok=False, message="no such job", error=ErrorInfo(code=ErrorCode.UNKNOWN_JOB, message="no job u9")
    )
    status = Answer(
        ok=True,
        uid="u1",
        status=JobStatus.RUNNING,
        job=JobView(
            uid="u1",
            status=JobStatus.RUNNING,
            runner_type="dmss://WorkflowDS/Blueprints/Shell",
            started=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            percentage=10,
            logs=["hello"],
        ),
    )
    for answer in (started, failed, status):
        assert _errors("answer.json", _wire(answer)) == []
    assert _errors("answer.json", {"ok": False, "error": {"code": "no_such_code", "message": "x"}})

    text = ResultAnswer(ok=True, uid="u1", status=JobStatus.COMPLETED, result="done", media_type="text/plain")
    raw = ResultAnswer(
        ok=True, uid="u1", status=JobStatus.COMPLETED, result=Base64Result(base64="AAE="), media_type="x/y"
    )
    for answer in (text, raw):
        wire = _wire(answer)
        assert "mediaType" in wire
        assert _errors("result-answer.json", wire) == []


def test_events_the_daemon_sends_validate() -> None:
    event = CloudEvent(
        id="e1",
        source="dm-jobd",
        type="dm-job.job.running",
        subject="u1",
        time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        data=EventData(
            uid="u1",
            status=JobStatus.RUNNING,
            previous_status=JobStatus.NOT_STARTED,
            runner_type="shell",
            logs=["a"],
        ),
    )
    wire = _wire(event)
    assert wire["specversion"] == "1.0"
    assert _errors("event.json", wire) == []
    assert _errors("event.json", {**wire, "specversion": "0.3"})
    assert _errors("event.json", {**wire, "data": {**wire["data"], "status": "done"}})


# --- AsyncAPI ----------------------------------------------------------------------------------------


def _asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_rendered()[ASYNCAPI_FILE])
    return document


def test_asyncapi_document_shape() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) >= {"commands", "events", "replies"}
    commands = doc["channels"]["commands"]["bindings"]["amqp"]
    assert commands["exchange"] == {
        "name": "dm-job.commands",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    queue = commands["x-queue"]
    assert queue["name"] == "dm-job.commands"
    assert queue["arguments"]["x-queue-type"] == "quorum"
    assert queue["arguments"]["x-dead-letter-exchange"] == "dm-job.dead-letter"
    assert doc["channels"]["commands"]["parameters"]["command"]["enum"] == [
        "job.start",
        "job.stop",
        "job.status",
        "job.result",
        "job.progress",
        "job.list",
        "job.logs",
        "job.rerun",
        "schedule.list",
        "schedule.show",
        "schedule.pause",
        "schedule.resume",
        "schedule.trigger",
        "runner.list",
        "replica.list",
    ]
    assert doc["channels"]["events"]["address"] == "job.{status}.{uid}"
    assert "not-started" in doc["channels"]["events"]["parameters"]["status"]["enum"]
    assert doc["components"]["messages"]["jobEvent"]["contentType"] == "application/cloudevents+json"
    assert {op["action"] for op in doc["operations"].values()} == {"send", "receive"}


def test_every_asyncapi_ref_resolves_inside_the_document() -> None:
    doc = _asyncapi()
    refs = sorted(set(_walk_refs(doc)))
    assert refs, "expected references in the AsyncAPI document"
    assert not [ref for ref in refs if "$defs" in ref], "pydantic $defs refs must be rewritten"
    for ref in refs:
        _resolve_pointer(doc, ref)  # raises KeyError or fails the assert when it does not resolve


def test_asyncapi_operation_messages_belong_to_their_channel() -> None:
    doc = _asyncapi()
    for name, operation in doc["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation.get("messages", []):
            assert message["$ref"].startswith(channel + "/messages/"), name
        reply = operation.get("reply")
        if reply:
            for message in reply["messages"]:
                assert message["$ref"].startswith(reply["channel"]["$ref"] + "/messages/"), name


def test_embedded_schemas_validate_like_the_files() -> None:
    """The AsyncAPI copies, with their rewritten refs, judge bodies as the standalone files do."""
    jsonschema = _jsonschema()
    doc = _asyncapi()

    def embedded(component: str) -> Any:
        root = {"$ref": f"#/components/schemas/{component}", "components": doc["components"]}
        return jsonschema.Draft202012Validator(root)

    start = embedded("StartCommand")
    for _, body, valid in START_BODIES:
        assert start.is_valid(body) is valid, body
    assert embedded("ResultAnswer").is_valid(_wire(ResultAnswer(ok=True, result=Base64Result(base64="AA=="))))
    assert not embedded("ProgressCommand").is_valid({"uid": "u1", "status": "done"})
