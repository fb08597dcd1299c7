"""The dispatcher without a broker: its command table, and what the body parser refuses."""

from __future__ import annotations

from typing import Any, cast

import pytest
import structlog

from daemon.contracts import COMMAND_MODELS, BadCommand, ErrorCode
from daemon.jobs.dispatch import MAX_DEPTH, Dispatcher, parse_body


def test_every_command_has_exactly_one_handler() -> None:
    nothing = cast(Any, None)  # the table is built from bound methods; nothing is called here
    dispatcher = Dispatcher(
        nothing, nothing, nothing, nothing, log=structlog.get_logger(), max_body_bytes=1, delivery_limit=1
    )
    assert dispatcher.commands == frozenset(COMMAND_MODELS)


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (b"not json", ErrorCode.BAD_JSON, "not JSON"),
        (b"[" * 5000 + b"]" * 5000, ErrorCode.INVALID, f"deeper than {MAX_DEPTH}"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), ErrorCode.INVALID, f"deeper than {MAX_DEPTH}"),
        (b'{"n": ' + b"9" * 5000 + b"}", ErrorCode.BAD_JSON, "4300 digits"),
        (b'{"s": "\\udc80"}', ErrorCode.BAD_JSON, "lone surrogate"),
        (b'{"\\ud800": 1}', ErrorCode.BAD_JSON, "lone surrogate"),
        (b"\xff\xfe", ErrorCode.BAD_JSON, "not JSON"),
    ],
)
def test_content_that_once_crashed_the_parser_is_refused_with_its_code(
    body: bytes, code: ErrorCode, says: str
) -> None:
    with pytest.raises(BadCommand) as refused:
        parse_body(body)
    assert refused.value.code is code and says in refused.value.message


def test_valid_unicode_and_nesting_within_the_limit_pass() -> None:
    nested: Any = "leaf"
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert parse_body(b'{"emoji": "\\ud83d\\ude00", "text": "h\xc3\xa9"}') == {"emoji": "😀", "text": "hé"}
    assert parse_body(repr(nested).replace("'", '"').encode()) == nested
