"""W3C Trace Context (``traceparent``, ``tracestate``): how a command's trace reaches everything it causes.

A command that carries a ``traceparent`` AMQP header continues that trace; a ``job.start`` without one
begins a new trace. The job keeps its trace for life: its answer, every event (AMQP headers and the
CloudEvents distributed-tracing extension), its environment (``TRACEPARENT``) and the daemon's HTTP
calls for it (DMSS, ARM, Radix) all carry it. No tracing library is needed for any of this.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["Trace", "current_trace", "trace_headers"]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_TRACESTATE_MAX = 512


@dataclass(frozen=True, slots=True)
class Trace:
    """One span's context: ``traceparent`` names the trace and the span; ``tracestate`` is vendor data."""

    traceparent: str
    tracestate: str | None = None

    @classmethod
    def parse(cls, traceparent: object, tracestate: object = None) -> Trace | None:
        """The context a message carries, or None when it carries none or an invalid one (then ignored,
        as the W3C spec says: a new trace is better than a broken one)."""
        if not isinstance(traceparent, str):
            return None
        match = _TRACEPARENT.match(traceparent.strip())
        if match is None:
            return None
        version, trace_id, span_id, _flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(span_id) == {"0"}:
            return None
        state = tracestate if isinstance(tracestate, str) else None
        if state is not None and (
            len(state) > _TRACESTATE_MAX or not state.isascii() or not state.isprintable()
        ):
            state = None
        return cls(match.group(0)[:55], state or None)

    @classmethod
    def new(cls) -> Trace:
        """A new trace, sampled (flags ``01``): nothing upstream decided otherwise."""
        return cls(f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    @property
    def span_id(self) -> str:
        return self.traceparent[36:52]

    @property
    def flags(self) -> str:
        return self.traceparent[53:55]

    def child(self) -> Trace:
        """A span of ours inside this trace: same trace id and flags, a new span id."""
        return Trace(f"00-{self.trace_id}-{secrets.token_hex(8)}-{self.flags}", self.tracestate)

    def headers(self) -> dict[str, str]:
        """As AMQP or HTTP headers."""
        out = {"traceparent": self.traceparent}
        if self.tracestate:
            out["tracestate"] = self.tracestate
        return out

    def environment(self) -> dict[str, str]:
        """As a job's environment variables (the names OpenTelemetry's SDKs read)."""
        out = {"TRACEPARENT": self.traceparent}
        if self.tracestate:
            out["TRACESTATE"] = self.tracestate
        return out


#: The trace of the work under way in this task: set by the daemon around each command and in each
#: job's watcher, read by the HTTP clients (DMSS, ARM, Radix) for their ``traceparent`` header.
#: A context variable, because that is what follows a unit of work through awaits and into the
#: tasks it creates, without threading an argument through every call on the way.
current_trace: ContextVar[Trace | None] = ContextVar("dm_jobd_current_trace", default=None)


def trace_headers() -> dict[str, str]:
    """The current trace as HTTP headers (none outside a traced unit of work)."""
    trace = current_trace.get()
    return trace.headers() if trace is not None else {}
