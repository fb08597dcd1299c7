"""A fake Azure Resource Manager for Container Instances, over https, following ACI's REST format.

It answers what ``azure-mgmt-containerinstance`` sends (see ``shared/reference``): ``PUT`` a group (201,
``Azure-AsyncOperation`` to poll), ``GET`` it with its instance view, ``DELETE`` it (202 and polling;
204 when it is not there), ``POST .../stop``, ``.../containers/{c}/logs``, the operation status URL, ARM
error bodies, 401 for unknown bearer tokens, and faults injected on demand (429 with ``Retry-After``,
quota errors). Nothing depends on the clock: a container's state advances with the GETs of its group
(Waiting for ``waiting_gets``, Running for ``running_gets``, then Terminated) or on an explicit
:meth:`FakeArm.finish`. What a container does is chosen by its image, through :attr:`FakeArm.images`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["API_VERSION", "FakeArm", "Fault", "Group", "Program", "Recorded"]

API_VERSION = "2023-05-01"
_PROVIDER = "providers/Microsoft.ContainerInstance"
_GROUP = "/subscriptions/{sub}/resourceGroups/{rg}/" + _PROVIDER + "/containerGroups/{name}"
_STAMP = "2024-01-01T00:00:00Z"
_JSON: web.RequestKey[Any] = web.RequestKey("json", object)


@dataclass
class Program:
    """What a container does once started: its log, its exit code, and how long each state lasts."""

    exit_code: int = 0
    logs: str = ""
    waiting_gets: int = 1
    running_gets: int = 2
    #: Stay Running until :meth:`FakeArm.finish`.
    hold: bool = False
    #: (code, message): the deployment fails, the container never starts.
    provision_error: tuple[str, str] | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class Fault:
    """Answer the next ``times`` matching requests with an ARM error instead."""

    method: str
    status: int
    code: str
    message: str
    times: int = 1
    retry_after: str | None = None
    path_suffix: str = ""


@dataclass
class Group:
    name: str
    resource_group: str
    body: dict[str, Any]
    program: Program
    gets: int = 0
    finished_with: int | None = None
    stopped: bool = False
    deleting: bool = False


@dataclass
class _Operation:
    kind: str  # create | delete
    group: Group
    polls: int = 0


@dataclass
class FakeArm:
    subscription: str
    #: Bearer tokens the fake accepts (the fake identity endpoints add the ones they issue).
    tokens: set[str] = field(default_factory=set)
    images: dict[str, Program] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    base_url: str = ""
    #: How many times a group was created (a PUT for a name that did not exist).
    creations: int = 0
    _operations: dict[str, _Operation] = field(default_factory=dict)

    # -- controls for tests ----------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def finish(self, name: str, exit_code: int = 0) -> None:
        self.groups[name].finished_with = exit_code

    def received(self, method: str, suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        group = _GROUP
        app.router.add_put(group, self._put)
        app.router.add_get(group, self._get)
        app.router.add_delete(group, self._delete)
        app.router.add_post(group + "/stop", self._stop)
        app.router.add_get(group + "/containers/{container}/logs", self._logs)
        app.router.add_get(
            "/subscriptions/{sub}/resourceGroups/{rg}/" + _PROVIDER + "/containerGroups", self._list
        )
        app.router.add_get(
            "/subscriptions/{sub}/" + _PROVIDER + "/locations/{loc}/operations/{op}", self._operation
        )
        return app

    # -- plumbing ----------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        request[_JSON] = body
        if request.query.get("api-version") != API_VERSION:
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in self.tokens:
            return _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if request.match_info.get("sub") not in (None, self.subscription):
            return _error(
                404,
                "SubscriptionNotFound",
                f"The subscription '{request.match_info['sub']}' could not be found.",
            )
        for fault in self.faults:
            if (
                fault.times > 0
                and fault.method == request.method
                and request.path.endswith(fault.path_suffix)
            ):
                fault.times -= 1
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return _error(fault.status, fault.code, fault.message, headers)
        result: web.StreamResponse = await handler(request)
        return result

    def _operation_url(self, kind: str, group: Group) -> str:
        op = str(uuid.uuid4())
        self._operations[op] = _Operation(kind, group)
        location = group.body.get("location", "norwayeast")
        return (
            f"{self.base_url}/subscriptions/{self.subscription}/{_PROVIDER}/locations/{location}"
            f"/operations/{op}?api-version={API_VERSION}"
        )

    def _find(self, request: web.Request) -> Group | None:
        group = self.groups.get(request.match_info["name"])
        if group is None or group.resource_group != request.match_info["rg"]:
            return None
        return group

    # -- the container group -------------------------------------------------------------------------

    async def _put(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return _error(415, "UnsupportedMediaType", "The content media type is not supported.")
        body = request[_JSON]
        problem = _invalid(body)
        if problem is not None:
            return _error(400, "InvalidRequestContent", problem)
        name = request.match_info["name"]
        existing = self._find(request)
        image = body["properties"]["containers"][0]["properties"]["image"]
        program = self.images.get(image, Program())
        if existing is not None:
            existing.body = body
            return web.json_response(self._view(existing), status=200)
        group = Group(name, request.match_info["rg"], body, program)
        self.groups[name] = group
        self.creations += 1
        headers = {"Azure-AsyncOperation": self._operation_url("create", group)}
        return web.json_response(self._view(group, fresh=True), status=201, headers=headers)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        group = self._find(request)
        if group is None:
            return _not_found(request.match_info["name"])
        group.gets += 1
        return web.json_response(self._view(group))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        rg = request.match_info["rg"]
        views = [self._view(g) for g in self.groups.values() if g.resource_group == rg]
        return web.json_response({"value": views})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        group = self._find(request)
        if group is None:
            return web.Response(status=204)
        group.deleting = True
        headers = {"Azure-AsyncOperation": self._operation_url("delete", group)}
        return web.Response(status=202, headers=headers)

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        group = self._find(request)
        if group is None:
            return _not_found(request.match_info["name"])
        group.stopped = True
        return web.Response(status=204)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        group = self._find(request)
        if group is None:
            return _not_found(request.match_info["name"])
        names = [c["name"] for c in group.body["properties"]["containers"]]
        container = request.match_info["container"]
        if container not in names:
            return _error(404, "ContainerNotFound", f"The container '{container}' is not found.")
        if self._state(group)[0] == "Waiting":
            return _error(
                400, "ContainerGroupDeploymentNotReady", f"The container group '{group.name}' is not ready."
            )
        lines = group.program.logs.splitlines(keepends=True)
        tail = request.query.get("tail")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        return web.json_response({"content": "".join(lines)})

    async def _operation(self, request: web.Request) -> web.StreamResponse:
        op = self._operations.get(request.match_info["op"])
        if op is None:
            return _error(404, "OperationNotFound", "The operation is not found.")
        op.polls += 1
        body: dict[str, Any] = {"id": request.path, "name": request.match_info["op"], "startTime": _STAMP}
        if op.polls < 2:
            body["status"] = "InProgress" if op.kind == "delete" else "Pending"
        elif op.kind == "create" and op.group.program.provision_error is not None:
            code, message = op.group.program.provision_error
            body.update(status="Failed", error={"code": code, "message": message})
        else:
            body["status"] = "Succeeded"
            if op.kind == "delete" and self.groups.get(op.group.name) is op.group:
                del self.groups[op.group.name]
        return web.json_response(body)

    # -- what a GET shows ----------------------------------------------------------------------------

    def _state(self, group: Group) -> tuple[str, int | None]:
        program = group.program
        if program.provision_error is not None:
            return "Waiting", None
        if group.finished_with is not None:
            return "Terminated", group.finished_with
        if group.stopped:
            return "Terminated", 137
        if group.gets <= program.waiting_gets:
            return "Waiting", None
        if program.hold or group.gets <= program.waiting_gets + program.running_gets:
            return "Running", None
        return "Terminated", program.exit_code

    def _view(self, group: Group, *, fresh: bool = False) -> dict[str, Any]:
        """The group as ARM shows it: read-only fields added, secrets left out."""
        props = group.body["properties"]
        state, exit_code = self._state(group)
        failed = group.program.provision_error is not None
        provisioning = "Pending" if fresh else ("Failed" if failed else "Succeeded")
        if group.deleting:
            provisioning = "Deleting"
        containers = []
        for c in props["containers"]:
            cp = dict(c["properties"])
            cp["environmentVariables"] = [
                {k: v for k, v in e.items() if k != "secureValue"} for e in cp.get("environmentVariables", [])
            ]
            if not fresh:
                current: dict[str, Any] = {"state": state, "startTime": _STAMP}
                if state == "Waiting":
                    current["detailStatus"] = "ImagePullBackOff" if failed else "ContainerCreating"
                if state == "Terminated":
                    current.update(exitCode=exit_code, finishTime=_STAMP, detailStatus="Completed")
                events = []
                if failed and group.program.provision_error is not None:
                    events.append(
                        {
                            "count": 1,
                            "name": "Failed",
                            "type": "Warning",
                            "message": group.program.provision_error[1],
                        }
                    )
                cp["instanceView"] = {"restartCount": 0, "currentState": current, "events": events}
            containers.append({"name": c["name"], "properties": cp})
        view_props: dict[str, Any] = {
            **{
                k: v
                for k, v in props.items()
                if k not in ("containers", "imageRegistryCredentials", "diagnostics")
            },
            "provisioningState": provisioning,
            "containers": containers,
            "sku": "Standard",
        }
        if "imageRegistryCredentials" in props:
            view_props["imageRegistryCredentials"] = [
                {k: v for k, v in c.items() if k != "password"} for c in props["imageRegistryCredentials"]
            ]
        if "diagnostics" in props:
            la = props["diagnostics"].get("logAnalytics", {})
            view_props["diagnostics"] = {"logAnalytics": {k: v for k, v in la.items() if k != "workspaceKey"}}
        if not fresh:
            group_state = {"Waiting": "Pending", "Running": "Running"}.get(state, "Succeeded")
            if failed or (state == "Terminated" and exit_code != 0):
                group_state = "Failed"
            view_props["instanceView"] = {"events": [], "state": "Stopped" if group.stopped else group_state}
        return {
            "id": _GROUP.format(sub=self.subscription, rg=group.resource_group, name=group.name),
            "name": group.name,
            "type": "Microsoft.ContainerInstance/containerGroups",
            "location": group.body.get("location"),
            "tags": group.body.get("tags", {}),
            "properties": view_props,
        }


def _invalid(body: Any) -> str | None:
    """Why ARM would refuse this group body (the fields ACI requires), or None."""
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        return "The request content is not a container group."
    props = body["properties"]
    if not body.get("location"):
        return "The 'location' property is required."
    if props.get("osType") not in ("Linux", "Windows"):
        return "The 'osType' property is required."
    containers = props.get("containers")
    if not isinstance(containers, list) or not containers:
        return "At least one container is required."
    for c in containers:
        cp = c.get("properties", {})
        requests = cp.get("resources", {}).get("requests", {})
        if not c.get("name") or not cp.get("image") or "cpu" not in requests or "memoryInGB" not in requests:
            return "Each container needs name, image and resources.requests.cpu/memoryInGB."
        for env in cp.get("environmentVariables", []):
            if "name" not in env or ("value" in env) == ("secureValue" in env):
                return "Each environment variable needs a name and exactly one of value or secureValue."
    return None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def _not_found(name: str) -> web.Response:
    return _error(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' was not found.",
    )
