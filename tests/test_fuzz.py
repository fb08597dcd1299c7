"""Property-based fuzzing of the command wire: every command and AMQP property, against the real daemon.

Properties, checked over a few hundred generated messages plus explicit hostile cases:

1. every message with a ``reply_to`` we can read (an exclusive classic queue of the test's own, or the
   direct reply-to pseudo-queue) gets exactly one answer, ``{ok, error: {code, message} | null, ...}``,
   whose ``error.code`` is a documented one and the one its content calls for (``bad_json``,
   ``invalid``, ``unknown_command``, ``too_large``, ``unknown_runner``, ``unknown_job``...) at the FIRST
   delivery: never ``internal``;
2. nothing is requeued: the daemon never logs "command crashed" (its JSON log lines, through conftest's
   ``log_lines``). Dead letters cannot tell: the dead-letter queue is a quorum queue too, so the
   ``x-delivery-count`` they carry counts their deliveries from it, always 0 at first;
3. the daemon keeps serving: good no-op starts interleaved with the fuzz, and one at the end, complete,
   and its connection to the broker stays the one it had (a reply to a queue that does not exist is
   that command's problem alone).

How hypothesis is driven (the choice this module makes): the daemon, the broker's virtual host and the
publishing channel are per test and live on pytest-asyncio's session loop, while ``@given`` wants to
own a synchronous test function and to re-run it per example (and shrink). So the messages are
*generated* up front by hypothesis in a synchronous ``@given`` collector (``derandomize=True``, no
example database, the generate phase only: the same list on every run of a checkout, and in CI; it
changes when the daemon's source does, because hypothesis mixes in constants it finds there), then
published, in order, on one long-lived confirming channel of one connection; answers are matched by
correlation id.
Nothing is shrunk: instead, every violation is reported with its generator class (``label``), its AMQP
properties and its body, grouped by class, so one run says everything that is wrong.

Forged direct reply-to addresses (``amq.rabbitmq.reply-to.<garbage>``): RabbitMQ closes the whole
connection (541 INTERNAL_ERROR) of whoever publishes to one, so they are kept out of the generators and
tested on their own in ``test_forged_direct_reply_to_address_does_not_hurt_other_work``; scripts/fuzz
mixes a few in (its smoke test is the last test here).
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import math
import os
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from helpers import JOB, NOOP, REVERSE, SHELL, poll_until
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from daemon.app import Daemon
from daemon.bus.amqp import AmqpBus
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import COMMAND_MODELS, ErrorCode
from daemon.localbroker import LocalBroker

COMMANDS = "dm-job.commands"
EVENTS = "dm-job.events"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
RECURRING_JOB = "dmss://WorkflowDS/Blueprints/RecurringJob"
RECURRING_HANDLER = "dmss://WorkflowDS/Blueprints/RecurringJobHandler"
CRON_JOB = "dmss://WorkflowDS/Blueprints/CronJob"
KINDS = list(COMMAND_MODELS)
WEIGHTED_KINDS = [*KINDS, *["job.start"] * 6, *["job.progress"] * 2]  # the commands with most to get wrong
CODES = {code.value for code in ErrorCode}
OK = "ok"  # in an expected set: a successful answer

#: Placeholders the generators put where a real uid belongs; replaced before publishing.
NOOP_UID = "@@noop-uid@@"
SCHEDULE_UID = "@@schedule-uid@@"

GENERATED = 400  # hypothesis examples; generating them takes ~2 s, sending and checking ~5 s
GOOD_EVERY = 40  # a good no-op start after every this many messages
ANSWER_TIMEOUT = 40.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Overrides conftest's: the shell runner stays OFF here, so no fuzzed script ever runs."""
    return Settings(
        state_dir=tmp_path / "state", enable_shell=False, poll_min_seconds=0.02, poll_max_seconds=0.5
    )


# -- what is sent -------------------------------------------------------------------------------------


@dataclass
class Probe:
    """One message as published, and (optionally) the answer codes its content calls for."""

    label: str  #: the generator class, for grouping failures
    body: bytes
    routing_key: str
    exchange: str = COMMANDS  #: COMMANDS, or "" (the default exchange, straight to the queue)
    type: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    persistent: bool = False
    reply: str = "own"  #: own (our exclusive queue), direct (direct reply-to), missing, none
    reply_name: str | None = None  #: for ``missing``: a queue name that does not exist ("" for none)
    message_id: str | None = "unique"  #: "unique", None, or a suffix after a unique prefix
    correlation: str = ""  #: a suffix after the unique prefix the answer is matched by
    expect: frozenset[str] | None = None  #: None: computed from the content by ``expected_codes``

    def describe(self, limit: int = 160) -> str:
        body = self.body[:limit]
        more = f"...({len(self.body)} bytes)" if len(self.body) > limit else ""
        where = f"{self.exchange or '(default)'}/{self.routing_key}"
        return (
            f"[{self.label}] {where} type={self.type!r} reply={self.reply} "
            f"content_type={self.content_type!r} content_encoding={self.content_encoding!r} "
            f"body={body!r}{more}"
        )


def dumps(payload: Any, *, ascii_only: bool = True) -> bytes:
    """JSON as a peer might send it; NaN/Infinity pass (Python's json reads them), surrogates too."""
    return json.dumps(payload, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


def noop_job(label: str = "fuzz") -> dict[str, Any]:
    return {"type": JOB, "label": label, "runner": {"type": NOOP}}


def recurring_job(cron: str = "0 0 1 1 *", **schedule: Any) -> dict[str, Any]:
    return {
        "type": RECURRING_JOB,
        "label": "fuzz schedule",
        "runner": {"type": RECURRING_HANDLER},
        "schedule": {"type": CRON_JOB, "cron": cron, **schedule},
        "applicationInput": noop_job("fuzz repeated"),
    }


def nested(depth: int, leaf: Any = 0, *, as_dict: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


def deep_bytes(depth: int, *, as_dict: bool = False) -> bytes:
    """Nesting built as bytes: json.dumps itself would hit the recursion limit first."""
    if as_dict:
        return b'{"a":' * depth + b"0" + b"}" * depth
    return b"[" * depth + b"0" + b"]" * depth


# -- the oracle: which codes a message's content calls for ----------------------------------------------


def _walk(value: Any) -> tuple[bool, int]:
    """Whether any string (key or value) holds a lone surrogate, and the nesting depth; no recursion."""
    surrogate, depth, stack = False, 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        depth = max(depth, level)
        if isinstance(item, str):
            surrogate = surrogate or any("\ud800" <= ch <= "\udfff" for ch in item)
        elif isinstance(item, dict):
            stack.extend((k, level) for k in item)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return surrogate, depth


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _start_codes(payload: dict[str, Any]) -> set[str]:
    if payload.get("address") is not None:
        return {"dmss_not_configured"}
    job = payload["job"]
    runner = job.get("runner") or {}
    runner_type = runner.get("type")
    codes: set[str]
    if job.get("type") == RECURRING_JOB or runner_type == RECURRING_HANDLER:
        codes = {OK, "invalid", "unknown_runner", "runner_disabled"}  # the schedule and the repeated job
    elif runner_type in (NOOP, REVERSE):
        codes = {OK}
    elif runner_type == SHELL:
        codes = {"runner_disabled", "invalid"}
    else:
        codes = {"unknown_runner"}
    if "environmentVariables" in runner:
        codes.add("invalid")
    if _non_finite(payload.get("timeLimitSeconds")):
        codes |= {OK, "invalid"}  # an infinite limit is no limit, or refused; never a crash
    if payload.get("schedule") is not None or payload.get("scheduledFor") is not None:
        codes |= {OK, "invalid", "unknown_job"}  # a forged scheduler run
    return codes


def _uid_codes(kind: str, role: str | None) -> set[str]:
    if role is None:
        return {"unknown_job"}
    if kind.startswith("schedule."):
        return {OK, "invalid"} if role == "schedule" else {"unknown_job"}
    if kind == "job.result":
        return {OK, "not_finished"}
    if kind == "job.progress":
        return {OK, "invalid"}  # a finished job may refuse a report
    return {OK}


def classify(kind: str, body: bytes, known: dict[str, str], limit: int) -> tuple[set[str], str]:
    """The codes the content of one message calls for (one command kind), and why."""
    if len(body) > limit:
        return {"too_large"}, "too large"
    model = COMMAND_MODELS.get(kind)
    if model is None:
        return {"unknown_command"}, f"unknown command {kind!r}"
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"bad_json"}, "not JSON"
    except (ValueError, RecursionError) as exc:  # 5000-digit integers, nesting past the parser's depth
        return {"bad_json", "invalid"}, f"JSON Python cannot read: {type(exc).__name__}"
    lenient: set[str] = set()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # JSON in UTF-16/32, or raw surrogate bytes: Python's json reads them
        lenient.add("bad_json")
    surrogate, depth = _walk(payload)
    if surrogate:
        return {"bad_json", "invalid"}, "a lone surrogate"
    if not isinstance(payload, dict):
        return {"invalid"} | lenient, f"not an object: {type(payload).__name__}"
    if depth > 64:
        lenient |= {"bad_json", "invalid"}  # a daemon may refuse deep nesting
    try:
        command = model.model_validate(payload)
    except ValidationError:
        return {"invalid"} | lenient, "wrong shape"
    except Exception as exc:  # the model itself could not cope: refusing it is right, crashing is not
        return {"invalid", "bad_json"}, f"model error {type(exc).__name__}"
    if kind == "job.start":
        return _start_codes(payload) | lenient, "a start"
    if kind == "schedule.list":
        return {OK} | lenient, "schedule.list"
    uid = getattr(command, "uid", None)
    return _uid_codes(
        kind, known.get(str(uid))
    ) | lenient, f"{kind} of a {known.get(str(uid), 'unknown')} uid"


def expected_codes(probe: Probe, known: dict[str, str], limit: int) -> tuple[frozenset[str], str]:
    """What the daemon may answer. The ``type`` property names the command and mirrors the routing key;
    where a message's two disagree, either reading is accepted."""
    if probe.expect is not None:
        return probe.expect, "explicit"
    kinds = {probe.type or probe.routing_key}
    if probe.exchange == COMMANDS and probe.type and probe.type != probe.routing_key:
        kinds.add(probe.routing_key)
    codes: set[str] = set()
    reasons = []
    for kind in sorted(kinds):
        more, why = classify(kind, probe.body, known, limit)
        codes |= more
        reasons.append(why)
    return frozenset(codes), "; ".join(reasons)


# -- generators -----------------------------------------------------------------------------------------

# Surrogates are excluded here (hypothesis's default); they get a strategy of their own below.
small_texts = st.text(max_size=12)
texts = st.one_of(
    st.text(max_size=24),
    st.text(
        st.characters(codec="utf-8", categories=["Lu", "Ll", "Lo", "Nd", "Zs", "Cc", "Cf", "So", "Mn"]),
        max_size=40,
    ),
    st.sampled_from(
        ["", " ", "\x00", "null", "💥", "\u202e\u0644", "\ufeff", "a\nb", "${HOME}", "'; DROP TABLE jobs;--"]
    ),
    st.integers(1000, 300_000).map(lambda n: "x" * n),  # huge strings (a few overflow the size limit)
)
surrogates = st.characters(categories=["Cs"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**300, -(10**400), 2**63, -(2**63) - 1, 10**4000]),  # big, but readable by Python
    st.floats(),  # NaN and Infinity included: Python's json writes and reads them
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(small_texts, inner, max_size=4),
    max_leaves=8,
)
uids = st.one_of(
    st.just(NOOP_UID),
    st.just(NOOP_UID),
    st.just(SCHEDULE_UID),
    st.uuids().map(str),
    texts.filter(lambda t: len(t) > 0),
)
runner_types = st.one_of(
    st.sampled_from(
        [NOOP, NOOP, NOOP, REVERSE, SHELL, RECURRING_HANDLER, "dmss://No/Such", "dm-jobd://noop", ""]
    ),
    small_texts,
)
crons = st.one_of(
    st.sampled_from(
        [
            "0 0 1 1 *",
            "*/10 * * * * *",
            "@daily",
            "@yearly",
            "0 0 30 2 *",  # never fires
            "0 0 31 2 *",
            "0 0 31 2 mon",
            "0 0 29 2 *",
            "*/0 * * * *",
            "61 * * * *",
            "* * * *",
            "* * * * * * *",
            "L W # ? *",
            "",
        ]
    ),
    small_texts,
)
dates = st.one_of(
    st.sampled_from(
        [
            "2023-12-21T12:10:00.000+01:00",
            "2999-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "not a date",
            "",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(),
    small_texts,
)


# The base strategies give well-typed values mostly (so commands get past the models and reach the job
# service); ``mutated`` then breaks them: a field dropped, added or given a wrong type, a surrogate, depth.
def mostly(
    good: st.SearchStrategy[Any], wild: st.SearchStrategy[Any] = json_values
) -> st.SearchStrategy[Any]:
    return st.one_of(good, good, good, wild)


schedules = st.fixed_dictionaries(
    {"cron": mostly(crons)},
    optional={
        "type": st.just(CRON_JOB),
        "startDate": mostly(dates),
        "endDate": mostly(dates),
        "timeZone": mostly(st.sampled_from(["UTC", "Europe/Oslo", "Not/AZone", "", "../../etc/passwd"])),
        "overlap": mostly(st.sampled_from(["allow", "forbid", "replace", "sometimes"])),
        "catchUp": mostly(st.sampled_from(["none", "latest", "all", "most"])),
        "catchUpWindow": mostly(st.sampled_from(["PT5M", "P1000000D", "-PT1S", "5 minutes", 10**400])),
        "jitter": mostly(st.sampled_from(["PT30S", "30s", 0, -1, 1e308, "P999999999D", 10**400])),
        "runs": st.lists(json_values, max_size=2),
    },
)
env_lists = st.lists(st.sampled_from(["A=1", "PATH", "DMSS_TOKEN", "1BAD=x", "", "A B=c", "É=1"]), max_size=3)
runners = st.fixed_dictionaries(
    {"type": mostly(runner_types)},
    optional={"script": texts, "environmentVariables": mostly(env_lists), "image": json_values},
)
plain_jobs = st.fixed_dictionaries(
    {"type": mostly(st.sampled_from([JOB, JOB, JOB, RECURRING_JOB])), "runner": mostly(runners)},
    optional={
        "label": mostly(texts),
        "status": mostly(st.sampled_from(["not started", "running", "bogus"])),
        "triggeredBy": mostly(texts),
        "applicationInput": json_values,
        "outputTarget": mostly(texts),
        "somethingDmssKeeps": json_values,
        "result": json_values,
    },
)
recurring_jobs = st.fixed_dictionaries(
    {
        "type": st.just(RECURRING_JOB),
        "runner": st.just({"type": RECURRING_HANDLER}),
        "schedule": mostly(schedules),
        "applicationInput": st.one_of(st.just(noop_job("repeated")), plain_jobs, json_values),
    },
    optional={"label": mostly(texts)},
)
statuses = st.sampled_from(
    [
        "registered",
        "not started",
        "starting",
        "running",
        "failed",
        "completed",
        "removed",
        "unknown",
        "Done",
        "",
    ]
)
BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "job.start": st.one_of(
        st.fixed_dictionaries(
            {"job": st.one_of(plain_jobs, plain_jobs, recurring_jobs)},
            optional={
                "timeLimitSeconds": mostly(
                    st.floats(min_value=0.01, max_value=1e6), st.floats() | st.integers() | small_texts
                ),
                "schedule": uids,
                "scheduledFor": dates,
            },
        ),
        st.fixed_dictionaries({"job": st.just(noop_job())}),
        st.fixed_dictionaries({"job": st.just(recurring_job())}),
        st.fixed_dictionaries(
            {"address": st.sampled_from(["dmss://DS/$1", "dmss://x", "http://x"]) | texts},
            optional={"token": texts},
        ),
    ),
    "job.progress": st.fixed_dictionaries(
        {"uid": uids},
        optional={
            "status": mostly(statuses),
            "percentage": mostly(st.floats(0, 100), st.floats() | st.integers() | small_texts),
            "logs": mostly(st.lists(texts, max_size=4)),
        },
    ),
    "schedule.list": st.just({}),
}
for _kind in KINDS:
    BODIES.setdefault(_kind, st.fixed_dictionaries({"uid": uids}))


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> tuple[str, Any]:
    """A command body of ``kind``, then maybe one mutation: drop, add or retype a field (top or nested)."""
    body = copy.deepcopy(draw(BODIES[kind]))  # ``st.just`` hands out one object: never mutate it
    op = draw(st.sampled_from(["as is"] * 4 + ["drop", "extra", "retype", "surrogate", "deep", "wrap"]))
    target: dict[str, Any] = body
    if body.get("job") and isinstance(body["job"], dict) and draw(st.booleans()):
        target = body["job"]
        if isinstance(target.get("runner"), dict) and draw(st.booleans()):
            target = target["runner"]
    keys = sorted(target)
    if op == "drop" and keys:
        del target[draw(st.sampled_from(keys))]
    elif op == "extra":
        target[draw(small_texts)] = draw(json_values)
    elif op == "retype" and keys:
        target[draw(st.sampled_from(keys))] = draw(json_values)
    elif op == "surrogate":
        lone = draw(surrogates)
        where = draw(st.sampled_from(["value", "key", "label"]))
        if where == "value" and keys:
            target[draw(st.sampled_from(keys))] = f"a{lone}b"
        elif where == "key":
            target[f"k{lone}"] = 1
        else:
            target["label"] = lone
    elif op == "deep":
        target[draw(st.sampled_from([*keys, "applicationInput"]))] = nested(
            draw(st.integers(20, 400)), as_dict=draw(st.booleans())
        )
    elif op == "wrap":
        return op, draw(st.sampled_from([[body], body.get("uid", "x"), None, 5, True]))
    return op, body


@st.composite
def addressing(draw: st.DrawFn, kind: str) -> tuple[str, str, str | None]:
    """(exchange, routing key, ``type`` property) for a command of ``kind``."""
    word = draw(st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-_0123456789"), min_size=1, max_size=10))
    how = draw(
        st.sampled_from(
            ["key+type"] * 6 + ["key", "queue+type", "type wins", "mismatch", "queue", "junk type"]
        )
    )
    if how == "key":
        return COMMANDS, kind, None
    if how == "queue+type":
        return "", COMMANDS, kind
    if how == "type wins":
        return COMMANDS, draw(st.sampled_from(["job.", "schedule."])) + word, kind
    if how == "mismatch":
        return COMMANDS, draw(st.sampled_from(KINDS)), kind
    if how == "queue":
        return "", COMMANDS, None
    if how == "junk type":
        return COMMANDS, kind, short(draw(texts))
    return COMMANDS, kind, kind


def short(text: str, size: int = 255) -> str:
    """At most ``size`` bytes of UTF-8 (an AMQP short string)."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore")


@st.composite
def properties(draw: st.DrawFn) -> dict[str, Any]:
    reply = draw(st.sampled_from(["own"] * 10 + ["direct"] * 2 + ["missing"] * 3 + ["none"] * 3))
    missing = short(draw(st.sampled_from(["no-such-queue", "", "amq.gen-not-a-queue", "🙈"]) | texts))
    if missing.startswith(DIRECT_REPLY_TO):
        missing = "x" + missing[:200]
    return {
        "content_type": draw(
            st.sampled_from([None, "application/json", "text/plain", "application/json; charset=utf-16", ""])
            | texts.map(short)
        ),
        "content_encoding": draw(
            st.sampled_from([None, "utf-8", "gzip", "identity", "base64"]) | texts.map(short)
        ),
        "persistent": draw(st.booleans()),
        "reply": reply,
        "reply_name": f"fuzz.{missing}"[:255] if missing else "",
        "message_id": draw(st.sampled_from(["unique", "unique", None]) | texts.map(lambda t: short(t, 200))),
        "correlation": short(draw(st.just("") | texts), 200),
    }


@st.composite
def structured_probes(draw: st.DrawFn) -> Probe:
    kind = draw(st.sampled_from(WEIGHTED_KINDS))
    op, payload = draw(mutated(kind))
    exchange, routing_key, type_ = draw(addressing(kind))
    body = dumps(payload, ascii_only=draw(st.booleans()))
    return Probe(f"{kind} {op}", body, routing_key, exchange, type_, **draw(properties()))


@st.composite
def raw_probes(draw: st.DrawFn) -> Probe:
    kind = draw(st.sampled_from([*KINDS, "job.explode", "schedule.x"]))
    how = draw(st.sampled_from(["binary", "text", "truncated", "flipped", "fragment"]))
    if how == "binary":
        body = draw(st.binary(max_size=300))
    elif how == "text":
        body = draw(st.text(max_size=200)).encode()
    elif how in ("truncated", "flipped"):
        _, payload = draw(mutated(kind if kind in BODIES else "job.status"))
        whole = dumps(payload)
        cut = draw(st.integers(0, max(0, len(whole) - 1)))
        if how == "truncated":
            body = whole[:cut]
        else:
            body = whole[:cut] + bytes([draw(st.integers(0, 255))]) + whole[cut + 1 :]
    else:
        body = draw(
            st.sampled_from(
                [
                    b"",
                    b" ",
                    b"null",
                    b"[]",
                    b"true",
                    b"0",
                    b'"x"',
                    b"{",
                    b"}",
                    b'{"uid"}',
                    b'{"uid":}',
                    b'{"uid": "a",}',
                    b"{'uid': 'a'}",
                    b'{"uid": "a"} trailing',
                    b'{"uid": NaN}',
                    b'\xef\xbb\xbf{"uid": "a"}',
                    '{"uid": "a"}'.encode("utf-16"),
                    '{"uid": "a"}'.encode("utf-32"),
                    b'{"uid": "\xed\xa0\x80"}',
                    b'{"uid": "\xc0\xaf"}',
                    b'{"uid": "a", "uid": 5}',
                    b'{"uid": "\\u0000"}',
                    b"\x00" * 64,
                ]
            )
        )
    exchange, routing_key, type_ = draw(addressing(kind))
    return Probe(f"raw {how}", body, routing_key, exchange, type_, **draw(properties()))


@st.composite
def hostile_probes(draw: st.DrawFn) -> Probe:
    """The classes of the issue, at generated sizes and places."""
    kind = draw(st.sampled_from(KINDS))
    how = draw(st.sampled_from(["deep", "big int", "surrogate", "too large", "many fields"]))
    expect: frozenset[str] | None = frozenset({"bad_json", "invalid"})
    if how == "deep":
        depth = draw(st.sampled_from([1000, 1001, 5000, 100_000]))
        inner = deep_bytes(depth, as_dict=draw(st.booleans()))
        body = draw(
            st.sampled_from([inner, b'{"uid": "x", "deep": ' + inner + b"}", b'{"job": ' + inner + b"}"])
        )
    elif how == "big int":
        digits = b"9" * draw(st.integers(4301, 20_000))
        field = draw(st.sampled_from(["uid", "percentage", "timeLimitSeconds", "job"]))
        body = b'{"' + field.encode() + b'": ' + draw(st.sampled_from([b"", b"-"])) + digits + b"}"
    elif how == "surrogate":
        lone = draw(surrogates)
        payload = {"uid": f"{draw(small_texts)}{lone}"} if kind != "job.start" else {"job": noop_job(lone)}
        body = dumps(payload, ascii_only=draw(st.booleans()))  # escaped, or raw (CESU-8) bytes
    elif how == "too large":
        expect = frozenset({"too_large"})
        body = b'{"uid": "' + b"y" * ((1 << 20) + draw(st.integers(0, 4096))) + b'"}'
    else:
        count = draw(st.integers(1000, 30_000))
        body = dumps({"uid": "x", **{f"f{i}": i for i in range(count)}})
        expect = frozenset({"invalid"})
    return Probe(f"hostile {how}", body, kind, COMMANDS, kind, expect=expect, **draw(properties()))


def generate(strategy: st.SearchStrategy[Probe], count: int) -> list[Probe]:
    """``count`` examples of ``strategy``, the same on every run (see the module docstring)."""
    found: list[Probe] = []

    @hypothesis_settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(probe: Probe) -> None:
        found.append(probe)

    collect()
    return found


def explicit_cases() -> list[Probe]:
    """The issue's hostile cases, each with the answer it must get at the first delivery."""
    bad, invalid, refused = (
        frozenset({"bad_json"}),
        frozenset({"invalid"}),
        frozenset({"bad_json", "invalid"}),
    )
    future = "2999-01-01T00:00:00Z"
    cases: list[tuple[str, str, bytes, frozenset[str]]] = [
        ("not JSON", "job.status", b"{not json", bad),
        ("not UTF-8", "job.status", b"\xff\xfe\x00", bad),
        ("empty body", "job.status", b"", bad),
        ("not an object: array", "job.status", b"[1, 2]", invalid),
        ("not an object: null", "job.stop", b"null", invalid),
        ("not an object: string", "job.start", b'"job"', invalid),
        ("unknown field", "job.status", b'{"uid": "x", "bogus": 1}', invalid),
        ("unknown field in start", "job.start", dumps({"job": noop_job(), "jobb": 1}), invalid),
        ("wrong type uid", "job.stop", b'{"uid": 5}', invalid),
        ("empty uid", "job.result", b'{"uid": ""}', invalid),
        ("missing uid", "schedule.show", b"{}", invalid),
        ("job and address", "job.start", dumps({"job": noop_job(), "address": "dmss://ds/x"}), invalid),
        ("neither job nor address", "job.start", b"{}", invalid),
        ("job without runner", "job.start", dumps({"job": {"type": JOB}}), invalid),
        ("runner type empty", "job.start", dumps({"job": {"type": JOB, "runner": {"type": ""}}}), invalid),
        (
            "unknown runner",
            "job.start",
            dumps({"job": {"type": JOB, "runner": {"type": "dmss://No/Such"}}}),
            frozenset({"unknown_runner"}),
        ),
        ("unknown job", "job.status", dumps({"uid": str(uuid.uuid4())}), frozenset({"unknown_job"})),
        ("unknown schedule", "schedule.pause", dumps({"uid": str(uuid.uuid4())}), frozenset({"unknown_job"})),
        ("percentage NaN", "job.progress", b'{"uid": "x", "percentage": NaN}', invalid),
        ("percentage 1e400", "job.progress", b'{"uid": "x", "percentage": 1e400}', invalid),
        ("percentage 500", "job.progress", b'{"uid": "x", "percentage": 500}', invalid),
        ("unknown command", "job.explode", b"{}", frozenset({"unknown_command"})),
        ("unknown schedule command", "schedule.explode", b'{"uid": "x"}', frozenset({"unknown_command"})),
        ("too large", "job.status", b'{"uid": "' + b"x" * (2 << 20) + b'"}', frozenset({"too_large"})),
        ("too large and not JSON", "job.status", b"\xff" * ((1 << 20) + 1), frozenset({"too_large"})),
        ("nested 1000 deep", "job.status", deep_bytes(1000), refused),
        ("nested 1000 deep object", "job.status", deep_bytes(1000, as_dict=True), refused),
        (
            "nested 1000 deep in a field",
            "job.status",
            b'{"uid": "x", "a": ' + deep_bytes(1000) + b"}",
            refused,
        ),
        (
            "nested 1000 deep in applicationInput",
            "job.start",
            b'{"job": {"type": "'
            + JOB.encode()
            + b'", "runner": {"type": "'
            + NOOP.encode()
            + b'"}, "applicationInput": '
            + deep_bytes(1000)
            + b"}}",
            refused,
        ),
        ("nested 200000 deep", "job.status", deep_bytes(200_000), refused),
        ("5000-digit integer", "job.status", b'{"uid": ' + b"9" * 5000 + b"}", refused),
        (
            "5000-digit integer in percentage",
            "job.progress",
            b'{"uid": "x", "percentage": ' + b"1" * 5000 + b"}",
            refused,
        ),
        (
            "5000-digit integer in applicationInput",
            "job.start",
            b'{"job": {"type": "'
            + JOB.encode()
            + b'", "runner": {"type": "'
            + NOOP.encode()
            + b'"}, "applicationInput": -'
            + b"7" * 5000
            + b"}}",
            refused,
        ),
        ("lone surrogate escaped", "job.status", b'{"uid": "\\ud800"}', refused),
        ("lone low surrogate escaped", "job.stop", b'{"uid": "a\\udfffb"}', refused),
        ("lone surrogate in a label", "job.start", dumps({"job": noop_job("\ud800")}), refused),
        ("lone surrogate in a key", "job.start", dumps({"job": {**noop_job(), "\udc00": 1}}), refused),
        (
            "lone surrogate in a log line",
            "job.progress",
            dumps({"uid": "x", "logs": ["ok", "\ud83d"]}),
            refused,
        ),
        ("lone surrogate as raw bytes", "job.status", b'{"uid": "\xed\xa0\x80"}', refused),
        (
            "cron never fires: 0 0 30 2 * from a future startDate",
            "job.start",
            dumps({"job": recurring_job("0 0 30 2 *", startDate=future)}),
            invalid,
        ),
        ("cron never fires: 0 0 30 2 *", "job.start", dumps({"job": recurring_job("0 0 30 2 *")}), invalid),
        (
            "cron never fires: 0 0 31 4 * from a future startDate",
            "job.start",
            dumps({"job": recurring_job("0 0 31 4 *", startDate=future)}),
            invalid,
        ),
        (
            "cron past datetime's range: startDate 9999-12-31",
            "job.start",
            dumps({"job": recurring_job("0 0 1 1 *", startDate="9999-12-31T23:59:59Z")}),
            invalid,
        ),
        (
            "cron: endDate before startDate",
            "job.start",
            dumps({"job": recurring_job("0 0 * * *", startDate=future, endDate="2030-01-01T00:00:00Z")}),
            invalid,
        ),
        (
            "cron: unknown time zone",
            "job.start",
            dumps({"job": recurring_job("0 0 * * *", timeZone="Not/AZone")}),
            invalid,
        ),
        ("cron: garbage", "job.start", dumps({"job": recurring_job("every day at noon")}), invalid),
        ("cron: not a string", "job.start", dumps({"job": recurring_job(5)}), invalid),  # type: ignore[arg-type]
        (
            "cron: bad startDate",
            "job.start",
            dumps({"job": recurring_job("0 0 * * *", startDate="2024-02-30")}),
            invalid,
        ),
        (
            "cron: bad jitter",
            "job.start",
            dumps({"job": recurring_job("0 0 * * *", jitter="forever")}),
            invalid,
        ),
        (
            "cron: jitter 10**400",
            "job.start",
            dumps({"job": recurring_job("0 0 * * *", jitter=10**400)}),
            invalid,
        ),
        (
            "cron: catchUpWindow -10**400",
            "job.start",
            dumps({"job": recurring_job("0 0 * * *", catchUpWindow=-(10**400))}),
            invalid,
        ),
        (
            "timeLimitSeconds 10**400",
            "job.start",
            dumps({"job": noop_job(), "timeLimitSeconds": 10**400}),
            invalid,
        ),
        (
            "20000 unknown fields",
            "job.status",
            dumps({"uid": "x", **{f"f{i}": i for i in range(20_000)}}),
            invalid,
        ),
    ]
    probes = [
        Probe(f"explicit {label}", body, kind, COMMANDS, kind, expect=expect)
        for label, kind, body, expect in cases
    ]
    # the same cases without the type property, and straight to the queue (type only)
    probes += [
        Probe("explicit not JSON, no type", b"{not json", "job.status", COMMANDS, None, expect=bad),
        Probe(
            "explicit lone surrogate, to the queue",
            b'{"uid": "\\ud800"}',
            COMMANDS,
            "",
            "job.status",
            expect=refused,
        ),
        Probe(
            "explicit to the queue, no type",
            b'{"uid": "x"}',
            COMMANDS,
            "",
            None,
            expect=frozenset({"unknown_command"}),
        ),
        Probe(
            "explicit nested 1000, direct reply-to",
            deep_bytes(1000),
            "job.status",
            reply="direct",
            type="job.status",
            expect=refused,
        ),
        Probe(
            "explicit big int, direct reply-to",
            b'{"uid": ' + b"9" * 5000 + b"}",
            "job.stop",
            reply="direct",
            type="job.stop",
            expect=refused,
        ),
    ]
    return probes


@pytest.fixture(scope="module")
def fuzz_probes() -> list[Probe]:
    generated = generate(structured_probes(), GENERATED * 6 // 10)
    generated += generate(raw_probes(), GENERATED * 2 // 10)
    generated += generate(hostile_probes(), GENERATED * 2 // 10)
    explicit = explicit_cases()
    # interleave: the explicit cases spread through the generated ones
    step = max(1, len(generated) // max(1, len(explicit)))
    out: list[Probe] = []
    for i, probe in enumerate(generated):
        out.append(probe)
        if i % step == 0 and explicit:
            out.append(explicit.pop(0))
    return out + explicit


# -- the wire ------------------------------------------------------------------------------------------


@dataclass
class Answer:
    body: bytes
    arrived: float


@dataclass
class Wire:
    """One connection of the test's own: a confirming channel with an exclusive reply queue, a channel on
    direct reply-to, and an events queue for completions."""

    channel: aio_pika.abc.AbstractChannel
    direct: aio_pika.abc.AbstractChannel
    replies: aio_pika.abc.AbstractQueue
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)

    async def on_answer(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        loop = asyncio.get_running_loop()
        self.answers.setdefault(message.correlation_id or "", []).append(Answer(message.body, loop.time()))

    async def on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        key = message.routing_key or ""
        if key.startswith("job.completed."):
            self.completed.add(key.removeprefix("job.completed."))

    async def publish(self, probe: Probe, index: int, substitute: Callable[[bytes], bytes]) -> str:
        """Publish ``probe``; returns the correlation id its answer will carry."""
        correlation = short(f"fz{index:05d}.{probe.correlation}")
        if probe.message_id is None:
            message_id = None
        elif probe.message_id == "unique":
            message_id = f"m{index:05d}.{uuid.uuid4().hex}"
        else:
            message_id = short(f"m{index:05d}.{probe.message_id}")
        reply_to = {
            "own": self.replies.name,
            "direct": DIRECT_REPLY_TO,
            "missing": probe.reply_name,
            "none": None,
        }[probe.reply]
        channel = self.direct if probe.reply == "direct" else self.channel
        message = aio_pika.Message(
            substitute(probe.body),
            type=probe.type,
            content_type=probe.content_type,
            content_encoding=probe.content_encoding,
            message_id=message_id,
            correlation_id=correlation if probe.reply in ("own", "direct") else (probe.correlation or None),
            reply_to=reply_to,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if probe.persistent else None,
        )
        exchange = (
            await channel.get_exchange(COMMANDS, ensure=False) if probe.exchange else channel.default_exchange
        )
        await exchange.publish(message, routing_key=probe.routing_key, mandatory=False)
        return correlation

    async def call(self, kind: str, payload: dict[str, Any], *, timeout: float = 20) -> dict[str, Any]:
        correlation = f"call.{uuid.uuid4().hex}"
        exchange = await self.channel.get_exchange(COMMANDS, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                dumps(payload),
                type=kind,
                message_id=uuid.uuid4().hex,
                correlation_id=correlation,
                reply_to=self.replies.name,
            ),
            routing_key=kind,
        )

        async def got() -> list[Answer] | None:
            return self.answers.get(correlation)

        answer = await poll_until(got, timeout=timeout, what=f"the answer to {kind}")
        return dict(json.loads(answer[0].body))


@pytest.fixture
async def wire(jobd: Daemon, vhost_url: str) -> AsyncIterator[Wire]:
    connection = await aio_pika.connect(vhost_url, client_properties={"connection_name": "dm-jobd fuzz"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        direct = await connection.channel(publisher_confirms=False)
        replies = await channel.declare_queue(exclusive=True)
        w = Wire(channel, direct, replies)
        await replies.consume(w.on_answer, no_ack=True)
        direct_queue = await direct.get_queue(DIRECT_REPLY_TO, ensure=False)
        await direct_queue.consume(w.on_answer, no_ack=True)
        events = await channel.declare_queue(exclusive=True)
        await events.bind(await channel.get_exchange(EVENTS), "job.completed.*")
        await events.consume(w.on_event, no_ack=True)
        yield w


# -- the broker's view: is the daemon's consuming connection the one it had? ----------------------------


def vhost_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


async def command_consumers(broker: LocalBroker, vhost: str) -> set[str]:
    """Names of the connections consuming ``dm-job.commands`` (they name the client's port: a reconnect
    shows as a new name)."""
    assert broker.management_url is not None
    async with httpx.AsyncClient(base_url=broker.management_url, auth=("guest", "guest")) as http:

        async def consumers() -> set[str] | None:
            response = await http.get(f"api/consumers/{vhost}")
            response.raise_for_status()
            ours = [c for c in response.json() if c.get("queue", {}).get("name") == COMMANDS]
            # a consumer's channel_details is [] until the broker's next statistics round: ask again
            if not ours or not all(isinstance(c.get("channel_details"), dict) for c in ours):
                return None
            return {c["channel_details"]["connection_name"] for c in ours}

        return await poll_until(consumers, timeout=15, every=0.1, what="a consumer on dm-job.commands")


def crashes(log_lines: io.StringIO) -> list[dict[str, Any]]:
    found = []
    for line in log_lines.getvalue().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "command crashed":
            found.append(entry)
    return found


def report(title: str, problems: list[tuple[str, str]], limit: int = 60) -> str:
    """Problems grouped by generator class, the first example of each in full."""
    by_class: dict[str, list[str]] = {}
    for label, text in problems:
        by_class.setdefault(label, []).append(text)
    lines = [f"{title}: {len(problems)} problem(s) in {len(by_class)} class(es)"]
    for label, texts_ in sorted(by_class.items(), key=lambda kv: -len(kv[1]))[:limit]:
        lines.append(f"  {label} x{len(texts_)}: {texts_[0]}")
    return "\n".join(lines)


# -- the tests -----------------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], *, timeout: float, what: str) -> bool:
    """Whether ``condition`` came true before the deadline (the caller reports what did not)."""

    async def check() -> bool | None:
        return True if condition() else None

    try:
        await poll_until(check, timeout=timeout, every=0.05, what=what)
    except AssertionError:
        return False
    return True


async def test_fuzzed_commands_are_answered_refused_cleanly_and_never_stop_the_daemon(
    log_lines: io.StringIO,
    jobd: Daemon,
    wire: Wire,
    broker: LocalBroker,
    vhost_url: str,
    fuzz_probes: list[Probe],
) -> None:
    loop = asyncio.get_running_loop()
    vhost = vhost_of(vhost_url)
    consumers_before = await command_consumers(broker, vhost)

    # real uids for the generators' placeholders: a finished no-op job and a registered schedule
    noop = await wire.call("job.start", {"job": noop_job("fuzz known")})
    schedule = await wire.call("job.start", {"job": recurring_job()})
    assert noop["ok"] and schedule["ok"], (noop, schedule)
    assert await until(lambda: noop["uid"] in wire.completed, timeout=20, what="the known job")
    known = {noop["uid"]: "job", schedule["uid"]: "schedule"}

    def substitute(body: bytes) -> bytes:
        for placeholder, uid in ((NOOP_UID, noop["uid"]), (SCHEDULE_UID, schedule["uid"])):
            body = body.replace(placeholder.encode(), uid.encode())
        return body

    limit = jobd.settings.max_body_bytes
    expected: dict[str, tuple[Probe, frozenset[str], str]] = {}  # correlation id -> probe, codes, why
    by_index: dict[int, Probe] = {}
    good: dict[str, int] = {}  # correlation id -> index, for the good starts

    async def send(probe: Probe) -> str:
        index = len(by_index) + 1
        by_index[index] = probe
        correlation = await wire.publish(probe, index, substitute)
        if probe.reply in ("own", "direct"):
            codes, why = expected_codes(replace(probe, body=substitute(probe.body)), known, limit)
            expected[correlation] = (probe, codes, why)
        return correlation

    async def send_good() -> str:
        label = f"good {len(by_index) + 1}"
        probe = Probe("good no-op start", dumps({"job": noop_job(label)}), "job.start", type="job.start")
        correlation = await send(probe)
        good[correlation] = len(by_index)
        return correlation

    started = loop.time()
    for i, probe in enumerate(fuzz_probes, 1):
        await send(probe)
        if i % GOOD_EVERY == 0:
            await send_good()
    publish_seconds = loop.time() - started
    all_in_time = await until(
        lambda: all(c in wire.answers for c in expected), timeout=ANSWER_TIMEOUT, what="every answer"
    )
    # the daemon keeps serving: a good start at the end completes too
    final = await send_good()
    await until(lambda: final in wire.answers, timeout=20, what="the last good start's answer")
    good_uids: dict[str, str] = {}
    for correlation in good:
        for answer in wire.answers.get(correlation, [])[:1]:
            parsed = json.loads(answer.body)
            if parsed.get("ok") and parsed.get("uid"):
                good_uids[correlation] = parsed["uid"]
    await until(lambda: set(good_uids.values()) <= wire.completed, timeout=20, what="the good jobs")

    problems: list[tuple[str, str]] = []
    codes_seen: Counter[str] = Counter()
    for correlation, (probe, codes, why) in expected.items():
        answers = wire.answers.get(correlation, [])
        if not answers:
            problems.append((probe.label, f"NO ANSWER (expected {sorted(codes)}: {why}): {probe.describe()}"))
            continue
        if len(answers) > 1:
            problems.append((probe.label, f"{len(answers)} answers (redelivered): {probe.describe()}"))
        try:
            answer = json.loads(answers[0].body)
        except ValueError:
            problems.append((probe.label, f"answer not JSON {answers[0].body[:200]!r}: {probe.describe()}"))
            continue
        error = answer.get("error") if isinstance(answer, dict) else None
        got = OK if answer.get("ok") is True and error is None else (error or {}).get("code")
        codes_seen[str(got)] += 1
        if got != OK and not (isinstance(error, dict) and error.get("message")):
            problems.append((probe.label, f"error answer without error.message {answer}: {probe.describe()}"))
        if got != OK and got not in CODES:
            problems.append((probe.label, f"undocumented code {got!r}: {probe.describe()}"))
        elif got not in codes:
            message = str((error or {}).get("message", answer.get("message")))[:300]
            problems.append(
                (
                    probe.label,
                    f"answered {got!r} ({message}); expected {sorted(codes)} ({why}): {probe.describe()}",
                )
            )
    for correlation, index in good.items():
        uid = good_uids.get(correlation)
        if uid is None:
            problems.append(("good no-op start", f"message {index} got no ok answer"))
        elif uid not in wire.completed:
            problems.append(("good no-op start", f"job {uid} (message {index}) did not complete"))

    crashed = crashes(log_lines)
    attempts: dict[str, list[dict[str, Any]]] = {}
    for entry in crashed:
        attempts.setdefault(str(entry.get("message_id")), []).append(entry)
    for message_id, entries in attempts.items():
        crashed_probe = by_index.get(int(message_id[1:6])) if message_id[1:6].isdigit() else None
        label = f"crashed: {crashed_probe.label if crashed_probe else entries[0].get('command')}"
        where = crashed_probe.describe() if crashed_probe else f"message_id={message_id!r}"
        problems.append((label, f"{entries[0].get('error')} ({len(entries)} attempt(s)): {where}"))

    consumers_after = await command_consumers(broker, vhost)
    if consumers_after != consumers_before:
        problems.append(
            ("daemon connection", f"the consumer's connection: {consumers_before} -> {consumers_after}")
        )

    summary = (
        f"{len(by_index)} messages ({len(expected)} with a readable reply_to, {len(good)} good starts) "
        f"published in {publish_seconds:.1f} s; all answered in time: {all_in_time}; "
        f"codes: {dict(codes_seen)}; crashes logged: {len(crashed)}"
    )
    print(summary)
    assert not problems, report(summary, problems)


FORGED = "amq.rabbitmq.reply-to.g2dkABFyYWJiaXRAbm93aGVyZQAAAAAAAAAAAA==.x"


async def test_forged_direct_reply_to_address_does_not_hurt_other_work(
    log_lines: io.StringIO, jobd: Daemon, wire: Wire, client: JobdClient, broker: LocalBroker, vhost_url: str
) -> None:
    """A reply_to that looks like a direct reply-to address but names no channel: the broker refuses the
    publish of that answer; that must stay that command's problem (DESIGN: an answer can never hurt other
    work), never the consumer's channel or connection."""
    vhost = vhost_of(vhost_url)
    before = await command_consumers(broker, vhost)
    async with client.events() as events:
        started = await client.start(noop_job("before the forged reply"))
        assert started.ok and started.uid
        uid = started.uid
        for forged in (FORGED, "amq.rabbitmq.reply-to.", "amq.rabbitmq.reply-to.x.y"):
            await wire.channel.default_exchange.publish(
                aio_pika.Message(
                    dumps({"uid": uid}),
                    type="job.status",
                    message_id=uuid.uuid4().hex,
                    correlation_id="forged",
                    reply_to=forged,
                ),
                routing_key=COMMANDS,
            )
        # a good status right behind it, from a real client, is answered
        status = await asyncio.wait_for(client.status(uid), 20)
        assert status.ok and status.uid == uid, status
        after = await client.start(noop_job("after the forged reply"))
        assert after.ok and after.uid
        done: set[str] = set()
        while {uid, after.uid} - done:
            event = await events.next(timeout=20)
            if event.data.status.value == "completed":
                done.add(event.subject)
    assert (await wire.call("job.status", {"uid": after.uid}))["status"] == "completed"
    # the daemon's consuming connection is the one it had (a closed one would come back under a new name)
    assert await command_consumers(broker, vhost) == before
    assert isinstance(jobd.bus, AmqpBus) and not jobd.bus.connection.is_closed
    assert not crashes(log_lines)


FUZZ_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz"


async def test_fuzz_script_runs_end_to_end_and_finds_nothing(vhost_url: str) -> None:
    """scripts/fuzz, small, against a vhost of the session broker: it works, and its verdict holds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FUZZ_SCRIPT),
        "--messages",
        "300",
        "--seed",
        "7",
        "--forged-share",
        "0.01",
        "--drain-seconds",
        "30",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "DM_JOBD_AMQP_URL": vhost_url},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 180)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    assert proc.returncode in (0, 1), err.decode(errors="replace")[-4000:]
    report = json.loads(out)
    assert report["sent"] == 300 and report["good_sent"] == 3 and report["broker"] == "DM_JOBD_AMQP_URL"
    assert report["with_reply_sent"] > 100 and report["forged_reply_to"] > 0
    assert report["ok"] and proc.returncode == 0, json.dumps(report, indent=2)
