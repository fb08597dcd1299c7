"""A fake DMSS on a real local HTTP port, following ../shared/reference/dmss.md.

Documents under ``/api/documents/{address}``: GET (``depth``), PUT (form field ``data``,
``partial_update``), POST (form field ``document``: append to a list or set an attribute; answers
``{"uid": "dmss://DS/$id"}``), DELETE; ``/api/documents-existence``; blobs; ``/api/healthcheck``.
Auth: ``Access-Key`` wins over ``Authorization: Bearer``; 401 answers ``{"detail"}``. Errors:
``{"status", "type", "message", "debug", "data"}``; 422 for request validation.

Addresses: ``[dmss://]DS/$id[.attr|[i]]...``; only stored (root) documents have ``$id`` addresses, as in
DMSS: an item appended to a list is answered with its path (``dmss://DS/$root.schedule.runs[0]``). GET
resolves the addressed reference at depth >= 1 and nested references only at depth >= 2 (one level per
extra depth); reference addresses must be absolute here. ``outage = True`` answers 503 to everything.

What DMSS refuses, this refuses, answered as DMSS answers (from DMSS's update and add use cases):

- a PUT whose ``data`` object has no ``type``, partial or not: DMSS reads ``data["type"]`` and the
  KeyError is answered 500 with the generic ApplicationException body (``data: {}``);
- a PUT to a document or attribute that does not exist: 400 ValidationException;
- a POST, or a PUT that replaces, of a document with no ``type`` or with attributes its blueprint
  does not have (for the blueprints listed in :data:`BLUEPRINTS`): 400 ValidationException;
- attributes that are not in the blueprint are not stored by a partial update (DMSS saves blueprint
  attributes only);
- a request its endpoint's model refuses (a missing or non-JSON form field, ``depth`` out of range, no
  blob ``file``): 422 with DMSS's RequestValidationError body (``data.detail``);
- a GET of a data source without a path: 500. An empty ``Access-Key`` counts as absent, and a blob
  PUT answers plain text ``OK``, as DMSS does.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

REFERENCE = "dmss://system/SIMOS/Reference"
_ENTITY = ("type", "_id", "_meta_")
_JOB = (
    *_ENTITY,
    "uid",
    "name",
    "description",
    "label",
    "triggeredBy",
    "status",
    "applicationInput",
    "started",
    "ended",
    "outputTarget",
    "result",
    "runner",
    "referenceTarget",
)
#: The attributes of the blueprints the tests write (dm-job's WorkflowDS blueprints, SIMOS's Blob).
BLUEPRINTS: dict[str, tuple[str, ...]] = {
    "dmss://WorkflowDS/Blueprints/Job": _JOB,
    "dmss://WorkflowDS/Blueprints/RecurringJob": (*_JOB, "schedule"),
    "dmss://WorkflowDS/Blueprints/CronJob": (*_ENTITY, "cron", "startDate", "endDate", "runs"),
    "dmss://system/SIMOS/Blob": (*_ENTITY, "name", "description", "label", "_blob_id", "size"),
}
#: DMSS's answer to an exception it did not expect (a KeyError, say).
UNHANDLED = {
    "status": 500,
    "type": "ApplicationException",
    "message": "The requested operation failed",
    "debug": "An unknown and unhandled exception occurred in the API",
    "data": {},
}
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")


def _unknown_attributes(document: dict[str, Any]) -> list[str]:
    """Attributes of ``document`` its blueprint does not have (none known for other blueprints)."""
    known = BLUEPRINTS.get(str(document.get("type")))
    return sorted(set(document) - set(known)) if known is not None else []


def _invalid_request(loc: list[str], msg: str) -> web.Response:
    """DMSS's answer to a request its endpoint's model refuses (FastAPI's RequestValidationError)."""
    body = {
        "status": 422,
        "type": "RequestValidationError",
        "message": "The received values are invalid",
        "debug": "The received values are invalid according to the endpoints model definition",
        "data": {"detail": [{"loc": loc, "msg": msg, "type": "value_error"}], "body": None},
    }
    return web.json_response(body, status=422)


class _InvalidRequest(Exception):
    def __init__(self, loc: list[str], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


class _Unhandled(Exception):
    """What DMSS would raise without meaning to (a KeyError in a use case): answered as a bare 500."""


class DmssProblem(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass
class Seen:
    method: str
    path: str
    status: int
    access_key: str | None
    traceparent: str | None = None


@dataclass
class FakeDmss:
    tokens: set[str] = field(default_factory=lambda: {"good-token"})
    #: data source -> root id -> document
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    outage: bool = False
    #: Answer every PUT with DMSS's bare 500, as a DMSS failing on that write would.
    failing_puts: bool = False
    seen: list[Seen] = field(default_factory=list)
    #: Every status written to a document (by its ``_id``), in order.
    statuses: dict[str, list[str]] = field(default_factory=dict)
    url: str = ""
    _runner: web.AppRunner | None = None

    # -- test helpers ------------------------------------------------------------------------------

    def add(self, data_source: str, document: dict[str, Any]) -> str:
        """Store a root document; returns its address ``dmss://DS/$id``."""
        doc = copy.deepcopy(document)
        doc_id = doc.setdefault("_id", uuid.uuid4().hex)
        self.data.setdefault(data_source, {})[doc_id] = doc
        return f"dmss://{data_source}/${doc_id}"

    def read(self, address: str) -> Any:
        """The stored value at ``address`` (raw, references unresolved)."""
        _, _, node = self._locate(address)
        return copy.deepcopy(node)

    def requests(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/healthcheck", self._health)
        app.router.add_route("*", "/api/documents/{address:.+}", self._documents)
        app.router.add_get("/api/documents-existence/{address:.+}", self._exists)
        app.router.add_route("*", "/api/blobs/{ds}/{blob}", self._blob)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing ----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        key = request.headers.get("Access-Key")
        try:
            if self.outage:
                raise DmssProblem(503, "ApplicationException", "DMSS is unavailable")
            if request.path != "/api/healthcheck":
                self._authorize(request)
            response: web.StreamResponse = await handler(request)
        except _Unhandled:
            response = web.json_response(UNHANDLED, status=500)
        except _InvalidRequest as exc:
            response = _invalid_request(exc.loc, exc.msg)
        except DmssProblem as exc:
            if exc.status == 401:
                response = web.json_response({"detail": exc.message}, status=401)
            else:
                body = {
                    "status": exc.status,
                    "type": exc.kind,
                    "message": exc.message,
                    "debug": "",
                    "data": None,
                }
                response = web.json_response(body, status=exc.status)
        self.seen.append(
            Seen(request.method, request.path, response.status, key, request.headers.get("traceparent"))
        )
        return response

    def _authorize(self, request: web.Request) -> None:
        key = request.headers.get("Access-Key")
        if key:  # Access-Key wins over Authorization; an empty one counts as absent
            if key not in self.tokens:
                raise DmssProblem(401, "", "Token validation failed")
            return
        bearer = request.headers.get("Authorization", "")
        if not bearer.startswith("Bearer ") or bearer[7:] not in self.tokens:
            raise DmssProblem(401, "", "Not authenticated")

    def _split(self, address: str) -> tuple[str, str | None, list[str | int]]:
        address = address.removeprefix("dmss://")
        data_source, _, rest = address.partition("/")
        if not rest:
            return data_source, None, []
        if not rest.startswith("$"):
            raise DmssProblem(
                404, "NotFoundException", f"'{address}' was not found (only $id addresses here)"
            )
        match = re.match(r"\$([\w-]+)", rest)
        if match is None:
            raise DmssProblem(400, "BadRequestException", f"'{address}' is not a valid address")
        steps: list[str | int] = []
        pos = match.end()
        while pos < len(rest):
            step = _STEP.match(rest, pos)
            if step is None:
                raise DmssProblem(400, "BadRequestException", f"'{address}' is not a valid address")
            steps.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
            pos = step.end()
        return data_source, match.group(1), steps

    def _locate(self, address: str) -> tuple[Any, str | int | None, Any]:
        """(container, key, node) for ``address``; the node is None for a missing last attribute."""
        data_source, doc_id, steps = self._split(address)
        if data_source not in self.data:
            raise DmssProblem(404, "NotFoundException", f"data source '{data_source}' was not found")
        if doc_id is None:
            return self.data[data_source], None, self.data[data_source]
        node = self.data[data_source].get(doc_id)
        if node is None:
            raise DmssProblem(404, "NotFoundException", f"document '${doc_id}' was not found")
        container: Any = None
        key: str | int | None = None
        for i, step in enumerate(steps):
            if isinstance(node, dict) and node.get("type") == REFERENCE and isinstance(step, str):
                node = self._target(node)  # addresses walk through references, as DMSS's do
            last = i == len(steps) - 1
            if isinstance(step, int) and isinstance(node, list) and step < len(node):
                container, key, node = node, step, node[step]
            elif isinstance(step, str) and isinstance(node, dict) and (step in node or last):
                container, key, node = node, step, node.get(step)
            else:
                raise DmssProblem(404, "NotFoundException", f"'{address}' was not found")
        return container, key, node

    def _target(self, reference: dict[str, Any]) -> Any:
        address = str(reference.get("address", ""))
        if address.startswith(("~", "^")):
            raise DmssProblem(400, "BadRequestException", "relative references are not supported by the fake")
        return self._locate(address)[2]

    def _expand(self, node: Any, depth: int) -> Any:
        if isinstance(node, dict):
            if node.get("type") == REFERENCE and depth >= 1:
                return self._expand(self._target(node), depth - 1)
            return {k: self._expand(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [self._expand(v, depth) for v in node]
        return node

    # -- handlers ----------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _documents(self, request: web.Request) -> web.StreamResponse:
        address = request.match_info["address"]
        if request.method == "GET":
            depth = request.query.get("depth", "0")
            if not depth.isdigit() or not 0 <= int(depth) <= 999:
                return _invalid_request(["query", "depth"], "Input should be less than 1000")
            data_source, doc_id, _steps = self._split(address)
            if doc_id is None:
                raise _Unhandled("a GET of a data source without a path")
            _, _, node = self._locate(address)
            if node is None:
                raise DmssProblem(
                    404, "NotFoundException", f"Failed to get document referenced with '{address}'"
                )
            if isinstance(node, dict) and node.get("type") == REFERENCE and int(depth) >= 1:
                node = self._target(node)  # depth 1 resolves the addressed reference
            return web.json_response(self._expand(copy.deepcopy(node), int(depth) - 1))
        if request.method == "PUT":
            if self.failing_puts:
                raise _Unhandled("a DMSS failing on this write")
            data = await self._form_json(request, "data")
            try:
                container, key, node = self._locate(address)
            except DmssProblem as exc:
                if exc.status != 404:
                    raise
                node = None
            if node is None:
                raise DmssProblem(
                    400,
                    "ValidationException",
                    f"Can not update document with address '{address}', since that document does not exist",
                )
            if isinstance(data, dict) and "type" not in data:
                raise _Unhandled("KeyError: 'type'")  # DMSS's update use case reads data["type"]
            if request.query.get("partial_update", "").lower() in ("true", "1", "yes", "on"):
                if not isinstance(node, dict) or not isinstance(data, dict):
                    raise DmssProblem(400, "ValidationException", "a partial update needs an object")
                known = BLUEPRINTS.get(str(data["type"]))
                node.update({k: v for k, v in data.items() if known is None or k in known})
                if "status" in data and "_id" in node:
                    self.statuses.setdefault(str(node["_id"]), []).append(str(data["status"]))
            elif isinstance(data, dict) and _unknown_attributes(data):
                raise DmssProblem(
                    400,
                    "ValidationException",
                    f"Attributes '{_unknown_attributes(data)}' are not specified in the blueprint "
                    f"'{data['type']}'",
                )
            elif container is None or key is None:
                raise DmssProblem(400, "BadRequestException", "cannot replace a data source")
            else:
                container[key] = data
                node = data
            return web.json_response({"data": node})
        if request.method == "POST":
            document = await self._form_json(request, "document")
            if not isinstance(document, dict) or not isinstance(document.get("type"), str):
                raise DmssProblem(400, "ValidationException", "Every entity must have a 'type' attribute")
            unknown = _unknown_attributes(document)
            if unknown:
                raise DmssProblem(
                    400,
                    "ValidationException",
                    f"Attributes '{unknown}' are not specified in the blueprint '{document['type']}'",
                )
            container, key, node = self._locate(address)
            doc_id = document.setdefault("_id", uuid.uuid4().hex)
            data_source = address.removeprefix("dmss://").split("/", 1)[0]
            where = address if address.startswith("dmss://") else f"dmss://{address}"
            if isinstance(node, list):  # DMSS answers an appended item with its path, not an id
                node.append(document)
                return web.json_response({"uid": f"{where}[{len(node) - 1}]"})
            if key is None:  # the data source itself: a new root document
                self.data[data_source][doc_id] = document
                return web.json_response({"uid": doc_id})
            container[key] = document
            return web.json_response({"uid": where})
        if request.method == "DELETE":
            container, key, _node = self._locate(address)
            if container is None or key is None:
                raise DmssProblem(400, "BadRequestException", "cannot delete a data source")
            del container[key]
            return web.Response(text="OK")
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "POST", "DELETE"])

    async def _exists(self, request: web.Request) -> web.Response:
        try:
            self._locate(request.match_info["address"])
        except DmssProblem:
            return web.json_response(False)
        return web.json_response(True)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["ds"], request.match_info["blob"])
        if request.method == "PUT":
            form = await request.post()
            upload = form.get("file")
            if not isinstance(upload, web.FileField):
                return _invalid_request(["body", "file"], "Field required")
            self.blobs[key] = upload.file.read()
            return web.Response(text="OK")  # plain text, as DMSS answers
        if key not in self.blobs:
            raise DmssProblem(404, "NotFoundException", f"blob '{key[1]}' was not found")
        return web.Response(body=self.blobs[key])

    @staticmethod
    async def _form_json(request: web.Request, name: str) -> Any:
        form = await request.post()
        raw = form.get(name)
        if not isinstance(raw, str):
            raise _InvalidRequest(["body", name], "Field required")
        try:
            return json.loads(raw)
        except ValueError:
            raise _InvalidRequest(["body", name], "JSON decode error") from None
