"""The Docker Engine boundary: the only module that imports aiodocker, and where its errors get words.

aiodocker (and aiohttp under it, which builds its TLS contexts as it is imported) is imported on the
first call to the engine, in a worker thread: about 0.15 s a daemon that runs no container job never
pays, and that start-up does not wait for. aiodocker raises ``DockerError(status, message)`` for
everything; callers here get :class:`EngineError` with a sentence a job's message can carry ("cannot
reach the Docker engine at unix:///...", "image x is not on the engine and pulling it failed: ..."),
or ``None`` for "no such container".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import tarfile
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiodocker

__all__ = ["Engine", "EngineError", "NameClash", "parse_auths"]

_CONNECT_TIMEOUT = 10.0
#: Any one engine call; pulls and archive copies get longer.
_CALL_TIMEOUT = 60.0
_PULL_TIMEOUT = 1800.0


class EngineError(Exception):
    """An engine operation failed; the message says what and why, without secrets."""


class NameClash(EngineError):
    """A container of the requested name already exists and belongs to something else."""


def parse_auths(text: str | None) -> dict[str, dict[str, str]]:
    """Registry credentials from ``DM_JOBD_DOCKER_AUTH``: ``{"<registry>": {"username", "password"}}``.

    Docker's ``config.json`` shape (``{"auths": {"<registry>": {"auth": base64("user:password")}}}``)
    is read too, so an existing file's content can be passed as is.
    """
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"DM_JOBD_DOCKER_AUTH is not JSON: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("auths"), dict):
        data = data["auths"]
    if not isinstance(data, dict):
        raise ValueError('DM_JOBD_DOCKER_AUTH must map registries to {"username", "password"}')
    auths: dict[str, dict[str, str]] = {}
    for registry, entry in data.items():
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            entry = {"username": user, "password": password}
        if not (isinstance(entry, dict) and {"username", "password"} <= entry.keys()):
            raise ValueError(f"DM_JOBD_DOCKER_AUTH: registry {registry!r} needs username and password")
        auths[str(registry)] = {"username": str(entry["username"]), "password": str(entry["password"])}
    return auths


def _import_client() -> None:
    import aiodocker  # noqa: F401  (into sys.modules, off the event loop)


class Engine:
    """One Docker engine, reached lazily (creating the runner never needs the engine to be up)."""

    def __init__(self, url: str, auths: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.url = url
        self._auths = dict(auths or {})
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        """The client; only within a call (:meth:`_call`, :meth:`events`), which opens it."""
        if self._docker is None:
            raise RuntimeError("the Docker client is opened by the first engine call")
        return self._docker

    async def _open(self) -> None:
        if self._docker is None:
            await asyncio.to_thread(_import_client)
            import aiodocker
            import aiohttp

            timeout = aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT)
            self._docker = self._docker or aiodocker.Docker(url=self.url, timeout=timeout)

    @contextlib.asynccontextmanager
    async def _call(self, what: str, timeout: float = _CALL_TIMEOUT) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(timeout):
                await self._open()
                yield
        except TimeoutError:
            raise EngineError(f"{what}: the Docker engine at {self.url} did not answer in time") from None
        except Exception as exc:
            import aiohttp
            from aiodocker.exceptions import DockerError

            if isinstance(exc, DockerError):
                if exc.status == 900:
                    raise EngineError(f"cannot reach the Docker engine at {self.url} ({what})") from None
                raise EngineError(f"{what}: {exc.message}") from None
            if isinstance(exc, aiohttp.ClientError):
                raise EngineError(f"{what}: lost the Docker engine at {self.url}: {exc}") from None
            raise

    async def ping(self) -> None:
        async with self._call("ping"):
            await self.docker.version()

    async def inspect(self, container: str) -> dict[str, Any] | None:
        """The container's inspect document, or None when there is no such container."""
        try:
            async with self._call(f"inspecting container {container}"):
                return await self.docker.containers.container(container).show()
        except EngineError as exc:
            if "No such container" in str(exc):
                return None
            raise

    async def find(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Containers carrying every label given, running or not, as the list endpoint reports them."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        async with self._call("listing containers"):
            found = await self.docker.containers.list(all=True, filters=json.dumps(filters))
        return [dict(c._container) for c in found]

    async def ensure_image(self, image: str, registry: str | None) -> None:
        """Pull ``image`` when the engine lacks it, with the registry's credentials from configuration."""
        try:
            async with self._call(f"inspecting image {image}"):
                await self.docker.images.inspect(image)
            return
        except EngineError as exc:
            if "No such image" not in str(exc):
                raise
        auth = self._auths.get(registry or "") if registry else None
        try:
            async with self._call(f"pulling {image}", _PULL_TIMEOUT):
                await self.docker.images.pull(image, auth=dict(auth) if auth else None)
        except EngineError as exc:
            raise EngineError(
                f"image {image} is not on the engine and pulling it failed: {exc}".replace(
                    f"pulling {image}: ", ""
                )
            ) from None

    async def create(self, config: Mapping[str, Any], name: str) -> str:
        try:
            async with self._call(f"creating container {name}"):
                container = await self.docker.containers.create(dict(config), name=name)
        except EngineError as exc:
            if "Conflict" in str(exc) or "already in use" in str(exc):
                raise NameClash(f"a container named {name!r} already exists") from None
            raise
        return str(container.id)

    async def make_dir(self, container: str, path: str) -> None:
        """Create the folder ``path`` (world-writable) in a created container, whatever its image holds."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(path.strip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(info)
        async with self._call(f"preparing {path} in container {container}"):
            await self.docker.containers.container(container).put_archive("/", buf.getvalue())  # type: ignore[no-untyped-call]

    async def start(self, container: str) -> None:
        async with self._call("starting the container"):
            await self.docker.containers.container(container).start()

    async def logs(self, container: str, *, stderr: bool = True, tail: int | None = None) -> str:
        """What the container wrote: stdout (and stderr), the last ``tail`` lines or all of it."""
        params: dict[str, Any] = {} if tail is None else {"tail": str(tail)}
        async with self._call(f"reading the logs of container {container}"):
            chunks = await self.docker.containers.container(container).log(
                stdout=True, stderr=stderr, **params
            )
        return "".join(chunks)

    async def read_file(self, container: str, path: str) -> bytes | None:
        """The regular file at ``path`` in the container (running or exited), or None when absent."""
        try:
            async with self._call(f"copying {path} out of container {container}", _PULL_TIMEOUT):
                tar = await self.docker.containers.container(container).get_archive(path)
        except EngineError as exc:
            if "Could not find the file" in str(exc) or "No such container" in str(exc):
                return None
            raise
        with tar:
            for member in tar.getmembers():
                if member.isfile():
                    data = tar.extractfile(member)
                    return data.read() if data is not None else None
        return None

    async def remove(self, container: str) -> None:
        """Kill (if running) and remove; a container already gone is fine."""
        try:
            async with self._call(f"removing container {container}"):
                await self.docker.containers.container(container).delete(force=True)
        except EngineError as exc:
            if "No such container" not in str(exc) and "is already in progress" not in str(exc):
                raise

    async def events(self, filters: Mapping[str, list[str]], since: float) -> AsyncIterator[dict[str, Any]]:
        """The engine's event stream from ``since`` (unix time) on; ends or raises when it drops."""
        await self._open()
        from aiodocker.events import DockerEvents
        from aiodocker.exceptions import DockerError

        stream = DockerEvents(self.docker)  # type: ignore[no-untyped-call]
        subscriber = stream.subscribe(create_task=False)  # type: ignore[no-untyped-call]
        task = asyncio.ensure_future(stream.run(filters=json.dumps(filters), since=f"{since:.9f}"))
        try:
            while True:
                event = await subscriber.get()
                if event is None:
                    break
                yield event
            await task  # raises what ended the stream
        except DockerError as exc:
            raise EngineError(f"following the Docker engine's events: {exc.message}") from None
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def close(self) -> None:
        docker, self._docker = self._docker, None
        if docker is not None:
            await docker.close()
