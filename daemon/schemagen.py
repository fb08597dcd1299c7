"""Generate ``schemas/`` from the wire models: one JSON Schema per message and an AsyncAPI 3.0 document.

Everything here is pure (no disk, no clock, no environment), so ``scripts/gen-schemas``, which writes
the files, and the drift test, which compares them, share one code path: :func:`render_all`.
Only the contracts are imported: the published interface is the models, never the daemon's internals.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from daemon import __version__
from daemon.contracts import (
    CLOUDEVENTS_CONTENT_TYPE,
    COMMAND_BINDINGS,
    COMMAND_MODELS,
    COMMAND_QUEUE,
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    JSON_CONTENT_TYPE,
    Answer,
    CloudEvent,
    JobStatus,
    ResultAnswer,
    ScheduleCloudEvent,
    StartCommand,
    routing_word,
)

__all__ = [
    "AMQP_BINDING_VERSION",
    "ASYNCAPI_FILE",
    "DEFAULT_DELIVERY_LIMIT",
    "GENERATED_GLOB",
    "SCHEMA_ID_BASE",
    "MessageSpec",
    "asyncapi_document",
    "drift",
    "dump",
    "message_schema",
    "message_specs",
    "render_all",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: A URN, not a URL: the schemas are not served anywhere, and a URN does not pretend they are.
SCHEMA_ID_BASE = "urn:dm-jobd:schemas:"
ASYNCAPI_FILE = "asyncapi.json"
#: What the generator owns in ``schemas/``; anything else there (README.md) is left alone.
GENERATED_GLOB = "*.json"

#: Mirrors the default of ``DM_JOBD_DELIVERY_LIMIT`` (daemon.config); a test keeps the two equal.
DEFAULT_DELIVERY_LIMIT = 5
AMQP_BINDING_VERSION = "0.3.0"

Mode = Literal["validation", "serialization"]


@dataclass(frozen=True)
class MessageSpec:
    """One generated schema file: which model, in which direction (commands are read, the rest written)."""

    filename: str
    model: type[BaseModel]
    mode: Mode
    title: str


def message_specs() -> tuple[MessageSpec, ...]:
    """Every message of the wire contract; commands follow ``COMMAND_MODELS`` so a new one is not missed."""
    commands = tuple(
        MessageSpec(f"{name}.json", model, "validation", f"dm-jobd {name} command body")
        for name, model in COMMAND_MODELS.items()
    )
    return (
        *commands,
        MessageSpec("answer.json", Answer, "serialization", "dm-jobd answer to a command"),
        MessageSpec("result-answer.json", ResultAnswer, "serialization", "dm-jobd answer to job.result"),
        MessageSpec("event.json", CloudEvent, "serialization", "dm-jobd job event (CloudEvents 1.0)"),
        MessageSpec(
            "schedule-event.json",
            ScheduleCloudEvent,
            "serialization",
            "dm-jobd schedule event (CloudEvents 1.0)",
        ),
    )


# Cross-field rules a model enforces in a validator, which pydantic cannot put into its JSON Schema.
# The test checks each rule against the model on the same bodies, so a rule cannot quietly drift.
_EXTRA_RULES: dict[type[BaseModel], dict[str, Any]] = {
    StartCommand: {
        "$comment": "StartCommand's validator: exactly one of 'job' (inline entity) or 'address'",
        "oneOf": [
            {"required": ["job"], "properties": {"job": {"type": "object"}}},
            {"required": ["address"], "properties": {"address": {"type": "string"}}},
        ],
    },
}


def _model_schema(spec: MessageSpec) -> dict[str, Any]:
    """The model's schema as pydantic makes it, camelCase names, plus the rules it cannot express."""
    schema = spec.model.model_json_schema(by_alias=True, mode=spec.mode)
    schema.update(copy.deepcopy(_EXTRA_RULES.get(spec.model, {})))
    return schema


def message_schema(spec: MessageSpec) -> dict[str, Any]:
    """A standalone draft 2020-12 schema for one message, with a stable ``$id`` and ``title``."""
    return {
        **_model_schema(spec),
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_ID_BASE + spec.filename,
        "title": spec.title,
    }


def _rewrite_refs(node: Any, old_prefix: str, new_prefix: str) -> Any:
    """A copy of ``node`` whose local ``$ref``s point at ``new_prefix`` instead of ``old_prefix``."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(old_prefix):
                out[key] = new_prefix + value[len(old_prefix) :]
            else:
                out[key] = _rewrite_refs(value, old_prefix, new_prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, old_prefix, new_prefix) for item in node]
    return node


def _put_component(components: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """Add a shared schema once; two different schemas under one name would make refs lie, so refuse."""
    existing = components.setdefault(name, schema)
    if existing != schema:
        raise ValueError(
            f"two messages define different schemas named {name!r} (validation vs serialization mode?); "
            "give the models distinct names or teach daemon/schemagen.py to tell them apart"
        )


def _component_schemas(specs: tuple[MessageSpec, ...]) -> dict[str, Any]:
    """Every message schema and its ``$defs`` hoisted to ``components.schemas``, refs rewritten to match."""
    components: dict[str, Any] = {}
    for spec in specs:
        schema = _rewrite_refs(_model_schema(spec), "#/$defs/", "#/components/schemas/")
        for name, definition in schema.pop("$defs", {}).items():
            _put_component(components, name, definition)
        _put_component(components, spec.model.__name__, schema)
    return components


def _camel(routing_key: str) -> str:
    """``job.start`` -> ``jobStart``: a message key that reads like the routing key."""
    first, *rest = routing_key.replace("-", ".").split(".")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _exchange_binding(name: str, kind: str, extensions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An AMQP channel binding for a durable exchange; ``x-`` extensions carry what 0.3.0 has no field for."""
    return {
        "is": "routingKey",
        "exchange": {"name": name, "type": kind, "durable": True, "autoDelete": False, "vhost": "/"},
        "bindingVersion": AMQP_BINDING_VERSION,
        **(extensions or {}),
    }


_COMMAND_SUMMARIES: dict[str, str] = {
    "job.start": "Start a job: the job entity inline, or a DMSS address plus the caller's token.",
    "job.stop": "Stop a job.",
    "job.status": "Ask for a job's status.",
    "job.result": "Fetch a finished job's result.",
    "job.progress": "A running job reports its status, percentage and log lines.",
    "schedule.list": "List every recurring job's schedule.",
    "schedule.show": "Show one schedule (by the recurring job's uid), with its recent runs.",
    "schedule.pause": "Pause a schedule: it stops firing until resumed.",
    "schedule.resume": "Resume a paused schedule from now (what fell due while paused is skipped).",
    "schedule.trigger": "Fire a schedule now, through its overlap policy.",
    "job.list": "List jobs, newest first, filtered by status, runner type, label, schedule, time; paged.",
    "job.logs": "A job's kept log lines from an offset.",
    "job.rerun": "Start a new job from an ended job's entity, linked to it (rerunOf).",
    "runner.list": "The runner types the answering daemon loaded, and why any is off.",
    "replica.list": "The daemons using the store, from their heartbeats.",
}

_COMMAND_DESCRIPTION = (
    "AMQP properties: `type` repeats the routing key (so a message published straight to the queue "
    "still says what it is); `message_id` is the idempotency key (the same start delivered twice starts "
    "one job and the second answer repeats the first); `reply_to` and `correlation_id` ask for an answer. "
    "Unknown fields are refused with an `invalid` error, so a typo surfaces."
)


#: The W3C Trace Context AMQP headers (https://www.w3.org/TR/trace-context/).
_TRACE_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "traceparent": {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "On a command: the trace it continues (a start without one begins a new "
            "trace). On an answer and on every event of a job: the job's trace; the job's environment "
            "has it as TRACEPARENT, and the daemon's HTTP calls for the job send it.",
        },
        "tracestate": {"type": "string", "maxLength": 512, "description": "Vendor trace state, passed on"},
    },
}


def _messages(specs: tuple[MessageSpec, ...]) -> dict[str, Any]:
    """``components.messages``: a message per command, the two answers and the two kinds of event."""
    by_model = {spec.model: spec.model.__name__ for spec in specs}
    messages: dict[str, Any] = {}
    for name, model in COMMAND_MODELS.items():
        messages[_camel(name)] = {
            "name": name,
            "title": f"{name} command",
            "summary": _COMMAND_SUMMARIES.get(name, f"The {name} command."),
            "description": _COMMAND_DESCRIPTION,
            "contentType": JSON_CONTENT_TYPE,
            "payload": _ref("components", "schemas", by_model[model]),
            "correlationId": _ref("components", "correlationIds", "amqpCorrelationId"),
            "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP_BINDING_VERSION}},
        }
    messages["answer"] = {
        "name": "answer",
        "title": "Answer",
        "summary": "The answer to any command that had reply_to: ok, uid, status, message, error.",
        "description": "`error` (`code`, `message`) is set exactly when `ok` is false.",
        "contentType": JSON_CONTENT_TYPE,
        "payload": _ref("components", "schemas", by_model[Answer]),
        "correlationId": _ref("components", "correlationIds", "amqpCorrelationId"),
    }
    messages["resultAnswer"] = {
        "name": "result-answer",
        "title": "Result answer",
        "summary": "The answer to job.result: an answer plus the result and its media type.",
        "description": 'Text inline; bytes that are not UTF-8 as `{"base64": ...}`.',
        "contentType": JSON_CONTENT_TYPE,
        "payload": _ref("components", "schemas", by_model[ResultAnswer]),
        "correlationId": _ref("components", "correlationIds", "amqpCorrelationId"),
    }
    messages["jobEvent"] = {
        "name": "job-event",
        "title": "Job status event",
        "summary": "One event per status change of a job, CloudEvents 1.0 in structured JSON mode.",
        "description": (
            "`type` is `dm-job.job.<status>`, the status spelled as in the routing key "
            "(`dm-job.job.not-started`); `subject` is the job uid; `id` is unique per event "
            "(deduplicate on it). `data` never carries a token or secret."
        ),
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "payload": _ref("components", "schemas", by_model[CloudEvent]),
    }
    messages["progressEvent"] = {
        "name": "progress-event",
        "title": "Job progress event",
        "summary": "A running job's progress (percentage, last log lines), CloudEvents 1.0 structured.",
        "description": "`type` is `dm-job.job.progress`, `subject` the job uid.",
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "payload": _ref("components", "schemas", by_model[CloudEvent]),
    }
    messages["scheduleEvent"] = {
        "name": "schedule-event",
        "title": "Schedule event",
        "summary": "A schedule changed or fired, CloudEvents 1.0 in structured JSON mode.",
        "description": (
            "`type` is `dm-job.schedule.<event>` (registered, fired, skipped, missed, paused, resumed, "
            "retired, removed); `subject` is the recurring job's uid."
        ),
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "payload": _ref("components", "schemas", by_model[ScheduleCloudEvent]),
    }
    for message in messages.values():  # every message may carry, and every answer and event carries, a trace
        message["headers"] = _TRACE_HEADERS
    return messages


def _channels() -> dict[str, Any]:
    """The exchanges and routing keys, described with the AMQP 0.3.0 channel bindings."""
    queue = {
        "name": COMMAND_QUEUE,
        "description": (
            f"The daemon's queue. `x-delivery-limit` is DM_JOBD_DELIVERY_LIMIT (default "
            f"{DEFAULT_DELIVERY_LIMIT}); refused commands, and those past the limit, are dead-lettered to "
            f"`{DEAD_LETTER_EXCHANGE}`, kept in queue `{DEAD_LETTER_QUEUE}`."
        ),
        "durable": True,
        "exclusive": False,
        "autoDelete": False,
        "vhost": "/",
        "bindingKeys": list(COMMAND_BINDINGS),
        "arguments": {
            "x-queue-type": "quorum",
            "x-delivery-limit": DEFAULT_DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        },
        "deadLetterQueue": DEAD_LETTER_QUEUE,
    }
    return {
        "commands": {
            "address": "{command}",
            "title": "Commands",
            "description": (
                f"Topic exchange `{COMMANDS_EXCHANGE}`; the routing key names the command. "
                f"Queue `{COMMAND_QUEUE}` (quorum) takes them, bound with "
                + ", ".join(f"`{key}`" for key in COMMAND_BINDINGS)
                + "."
            ),
            "parameters": {
                "command": {
                    "description": "The command's name; the AMQP `type` property repeats it.",
                    "enum": list(COMMAND_MODELS),
                    "location": "$message.header#/type",
                }
            },
            "messages": {
                _camel(name): _ref("components", "messages", _camel(name)) for name in COMMAND_MODELS
            },
            "bindings": {"amqp": _exchange_binding(COMMANDS_EXCHANGE, "topic", {"x-queue": queue})},
        },
        "events": {
            "address": "job.{status}.{uid}",
            "title": "Job status events",
            "description": (
                f"Topic exchange `{EVENTS_EXCHANGE}`, one event per status change. Bind `job.*.<uid>` "
                "for one job, or `job.failed.*` for every failure."
            ),
            "parameters": {
                "status": {
                    "description": "The new status, spaces written as `-` (`not started` -> `not-started`).",
                    "enum": [routing_word(status) for status in JobStatus],
                },
                "uid": {"description": "The job uid.", "location": "$message.payload#/subject"},
            },
            "messages": {"jobEvent": _ref("components", "messages", "jobEvent")},
            "bindings": {"amqp": _exchange_binding(EVENTS_EXCHANGE, "topic")},
        },
        "progress": {
            "address": "progress.{uid}",
            "title": "Job progress events",
            "description": (
                f"Topic exchange `{EVENTS_EXCHANGE}`: progress reports have their own routing key, so "
                "`job.*.<uid>` bindings do not get them. Bind `progress.<uid>` for one job."
            ),
            "parameters": {"uid": {"description": "The job uid.", "location": "$message.payload#/subject"}},
            "messages": {"progressEvent": _ref("components", "messages", "progressEvent")},
            "bindings": {"amqp": _exchange_binding(EVENTS_EXCHANGE, "topic")},
        },
        "schedules": {
            "address": "schedule.{event}.{uid}",
            "title": "Schedule events",
            "description": (
                f"Topic exchange `{EVENTS_EXCHANGE}`: one event per schedule change or fire. Bind "
                "`schedule.*.<uid>` for one recurring job, `schedule.missed.*` for every missed fire. "
                "Each run's own job events carry the schedule's uid in `data.schedule`."
            ),
            "parameters": {
                "event": {
                    "description": "What happened.",
                    "enum": [
                        "registered",
                        "fired",
                        "skipped",
                        "missed",
                        "paused",
                        "resumed",
                        "retired",
                        "removed",
                    ],
                },
                "uid": {"description": "The recurring job's uid.", "location": "$message.payload#/subject"},
            },
            "messages": {"scheduleEvent": _ref("components", "messages", "scheduleEvent")},
            "bindings": {"amqp": _exchange_binding(EVENTS_EXCHANGE, "topic")},
        },
        "replies": {
            "address": None,
            "title": "Replies",
            "description": (
                "The requester's own queue, named by the command's `reply_to`: answers go to the default "
                "exchange with routing key `reply_to` and the command's `correlation_id`, published with "
                "mandatory off. RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`) works."
            ),
            "messages": {
                "answer": _ref("components", "messages", "answer"),
                "resultAnswer": _ref("components", "messages", "resultAnswer"),
            },
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": "", "type": "default", "vhost": "/"},
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        },
    }


def _operations() -> dict[str, Any]:
    """What a client of the daemon does; the daemon does the mirror image."""
    replies = [_ref("channels", "replies", "messages", key) for key in ("answer", "resultAnswer")]
    return {
        "sendCommand": {
            "action": "send",
            "title": "Send a command",
            "summary": "Publish a command; with reply_to and correlation_id the daemon answers it.",
            "channel": _ref("channels", "commands"),
            "messages": [_ref("channels", "commands", "messages", _camel(name)) for name in COMMAND_MODELS],
            "reply": {
                "address": {
                    "description": "The command's AMQP reply_to property.",
                    "location": "$message.header#/reply_to",
                },
                "channel": _ref("channels", "replies"),
                "messages": replies,
            },
        },
        "receiveEvents": {
            "action": "receive",
            "title": "Receive job status events",
            "channel": _ref("channels", "events"),
            "messages": [_ref("channels", "events", "messages", "jobEvent")],
        },
        "receiveProgress": {
            "action": "receive",
            "title": "Receive job progress events",
            "channel": _ref("channels", "progress"),
            "messages": [_ref("channels", "progress", "messages", "progressEvent")],
        },
        "receiveScheduleEvents": {
            "action": "receive",
            "title": "Receive schedule events",
            "channel": _ref("channels", "schedules"),
            "messages": [_ref("channels", "schedules", "messages", "scheduleEvent")],
        },
        "receiveReplies": {
            "action": "receive",
            "title": "Receive answers",
            "summary": "Consume answers on the queue named in reply_to; match them by correlation_id.",
            "channel": _ref("channels", "replies"),
            "messages": replies,
        },
    }


def asyncapi_document() -> dict[str, Any]:
    """The whole interface as AsyncAPI 3.0.0, from a client's point of view, schemas embedded."""
    specs = message_specs()
    return {
        "asyncapi": "3.0.0",
        "id": "urn:dm-jobd",
        "info": {
            "title": "dm-jobd",
            "version": __version__,
            "description": (
                "Runs Data Modelling jobs for commands that arrive over RabbitMQ (AMQP 0-9-1, JSON bodies). "
                "This document describes a client (a DM backend): it sends commands, receives answers on "
                "its reply queue and subscribes to job events. The payload schemas are the same as the "
                "standalone files beside this one (`job.start.json`, ..., `event.json`)."
            ),
        },
        "defaultContentType": JSON_CONTENT_TYPE,
        "servers": {
            "broker": {
                "host": "{host}",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "The RabbitMQ broker the daemon uses (DM_JOBD_AMQP_URL).",
                "variables": {"host": {"default": "localhost:5672", "description": "Broker host and port."}},
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "schemas": _component_schemas(specs),
            "messages": _messages(specs),
            "correlationIds": {
                "amqpCorrelationId": {
                    "description": "The AMQP correlation_id property; an answer repeats its command's.",
                    "location": "$message.header#/correlation_id",
                }
            },
        },
    }


def dump(document: Any) -> str:
    """The one text form of every generated file, so a byte comparison is a fair drift check."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """File name -> file text for everything in ``schemas/`` that is generated."""
    files = {spec.filename: dump(message_schema(spec)) for spec in message_specs()}
    files[ASYNCAPI_FILE] = dump(asyncapi_document())
    return files


def drift(rendered: Mapping[str, str], on_disk: Mapping[str, str]) -> dict[str, str]:
    """What differs, by file name: ``missing``, ``differs``, or ``stale`` (on disk, no longer generated)."""
    problems: dict[str, str] = {}
    for name, text in rendered.items():
        if name not in on_disk:
            problems[name] = "missing"
        elif on_disk[name] != text:
            problems[name] = "differs"
    for name in on_disk:
        if name not in rendered:
            problems[name] = "stale"
    return dict(sorted(problems.items()))
