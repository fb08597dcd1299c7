"""An httpx client for DMSS's documents and blobs API, translating its errors at this boundary.

Callers see :class:`~daemon.contracts.DmssError` (DMSS refused: 401/403, 404, 400/422; retrying will not
help) or :class:`~daemon.contracts.DmssUnavailable` (unreachable, 5xx, 429: retry later), never an
httpx exception. Every request sends the caller's token as both ``Access-Key`` and ``Authorization:
Bearer``, as dm-job did; no message built here ever contains it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from daemon.contracts import DmssError, DmssUnavailable, ErrorCode, trace_headers

__all__ = ["DmssClient", "complete_address", "data_source_of", "strip_scheme"]

_SCHEME = "dmss://"


def strip_scheme(address: str) -> str:
    """``dmss://DS/$id.attr`` -> ``DS/$id.attr`` (DMSS takes both; the path form is unambiguous)."""
    return address[len(_SCHEME) :] if address.startswith(_SCHEME) else address


def data_source_of(address: str) -> str:
    return strip_scheme(address).split("/", 1)[0]


def complete_address(answered_uid: str, near: str) -> str:
    """DMSS answers a POST with ``dmss://DS/$id`` (newer) or a bare id (older): make it an address."""
    if answered_uid.startswith(_SCHEME):
        return answered_uid
    uid = answered_uid.lstrip("$")
    return f"{_SCHEME}{data_source_of(near)}/${uid}"


def _path(address: str) -> str:
    return quote(strip_scheme(address), safe="/$.[]~^")


def _reason(response: httpx.Response) -> tuple[str, str]:
    """DMSS's error body (``{status, type, message}``, or ``{detail}`` for 401/422) as (type, text)."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200]
    if not isinstance(body, dict):
        return "", str(body)[:200]
    kind = str(body.get("type") or "")
    text = body.get("message") or body.get("detail") or ""
    if not isinstance(text, str):
        text = json.dumps(text)[:300]
    return kind, text


class DmssClient:
    """One connection pool to one DMSS; the token travels per call, since every job has its own."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/api/", timeout=timeout, verify=verify, transport=transport
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, address: str, token: str | None, *, depth: int = 1) -> Any:
        """The document at ``address``; ``depth=1`` resolves the addressed reference."""
        response = await self._send(
            "GET", f"documents/{_path(address)}", token, f"read {address}", params={"depth": depth}
        )
        return response.json()

    async def update(self, address: str, token: str | None, data: Any, *, partial: bool = True) -> Any:
        """PUT ``data`` at ``address`` (only the given attributes with ``partial``); the updated document."""
        response = await self._send(
            "PUT",
            f"documents/{_path(address)}",
            token,
            f"update {address}",
            params={"partial_update": "true"} if partial else None,
            data={"data": json.dumps(data)},
        )
        body = response.json()
        return body.get("data") if isinstance(body, dict) else body

    async def add(self, address: str, token: str | None, document: Any) -> str:
        """POST ``document`` to ``address`` (append to a list, or set a complex attribute): its address."""
        response = await self._send(
            "POST",
            f"documents/{_path(address)}",
            token,
            f"add to {address}",
            data={"document": json.dumps(document)},
        )
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("uid"), str):
            raise DmssError(f"DMSS answered adding to {address} without a uid", status=response.status_code)
        return complete_address(body["uid"], address)

    async def put_blob(
        self, data_source: str, blob_id: str, token: str | None, content: bytes, media_type: str
    ) -> None:
        await self._send(
            "PUT",
            f"blobs/{quote(data_source, safe='')}/{quote(blob_id, safe='')}",
            token,
            f"store blob {blob_id} in {data_source}",
            files={"file": (blob_id, content, media_type)},
        )

    async def _send(
        self,
        method: str,
        url: str,
        token: str | None,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> httpx.Response:
        headers = trace_headers()
        if token:
            headers.update({"Access-Key": token, "Authorization": f"Bearer {token}"})
        try:
            response = await self._http.request(
                method, url, params=params, data=data, files=files, headers=headers
            )
        except httpx.TimeoutException:
            raise DmssUnavailable(f"DMSS at {self.base_url} did not answer in time ({what})") from None
        except httpx.TransportError as exc:
            reason = type(exc).__name__
            raise DmssUnavailable(f"DMSS at {self.base_url} is unreachable ({what}): {reason}") from None
        if response.is_success:
            return response
        raise self._error(response, what, token)

    @staticmethod
    def _error(response: httpx.Response, what: str, token: str | None) -> DmssError | DmssUnavailable:
        status = response.status_code
        kind, text = _reason(response)
        if token:
            text = text.replace(token, "***")
        detail = f"DMSS could not {what}: {status} {kind}".rstrip() + (f": {text}" if text else "")
        if status >= 500 or status == 429:
            return DmssUnavailable(detail, status=status)
        if status in (401, 403) or kind == "MissingPrivilegeException":
            return DmssError(detail, code=ErrorCode.DMSS_UNAUTHORIZED, status=status)
        if status == 404 or kind == "NotFoundException":
            return DmssError(detail, code=ErrorCode.DMSS_NOT_FOUND, status=status)
        return DmssError(detail, code=ErrorCode.DMSS_INVALID, status=status)
