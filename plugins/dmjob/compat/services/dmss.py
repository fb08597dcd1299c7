"""dm-job's ``services.dmss``: DMSS reads and writes for handler code, with the job's own token.

dm-job called DMSS with ``requests`` from the handler's thread, taking the token from the request in
hand; here a handler call is bound to its job, so the default token is that job's (``DMSS_TOKEN``).
The URL is dm-job's ``DMSS_URL``; ``DM_JOBD_DMSS_CA_BUNDLE`` names a CA bundle, as for the daemon.
Errors are raised as dm-job's were, by ``raise_for_status`` (``httpx.HTTPStatusError``).
"""

from __future__ import annotations

import json
from contextvars import ContextVar, Token
from typing import Any

import httpx
from config import _env

__all__ = [
    "add_document",
    "dmss_api",
    "get_access_token",
    "get_blueprint",
    "get_document",
    "get_personal_access_token",
    "update_document",
]

_TIMEOUT = 10.0
_token: ContextVar[str | None] = ContextVar("dmjob_compat_token", default=None)


def _use_token(token: str | None) -> Token[str | None]:
    """Bind the job's token for the call in progress (the adapter does this around handler calls)."""
    return _token.set(token)


def _reset_token(token: Token[str | None]) -> None:
    _token.reset(token)


def get_access_token() -> str:
    """The token of the job whose handler is running (dm-job took the request's); '' when none."""
    return _token.get() or _env().get("DMSS_TOKEN") or ""


def get_personal_access_token() -> str:
    return get_access_token()


def _client() -> httpx.Client:
    env = _env()
    base = (env.get("DMSS_URL") or env.get("DM_JOBD_DMSS_URL") or "http://dmss:5000").rstrip("/")
    ca_bundle = env.get("DM_JOBD_DMSS_CA_BUNDLE")
    return httpx.Client(base_url=f"{base}/api/", timeout=_TIMEOUT, verify=ca_bundle or True)


def _headers(token: str | None) -> dict[str, str]:
    key = token or get_access_token()
    return {"Authorization": f"Bearer {key}", "Access-Key": key} if key else {}


def _send(method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
    with _client() as client:
        response = client.request(method, path, headers=_headers(token), **kw)
    response.raise_for_status()
    return response


def _path(reference: str) -> str:
    return reference.removeprefix("dmss://")


def get_document(reference: str, depth: int = 0, token: str | None = None) -> dict[str, Any]:
    """The document at ``reference`` (``dmss://DS/$id...``), resolved to ``depth``."""
    body: dict[str, Any] = _send(
        "GET", f"documents/{_path(reference)}", token, params={"depth": depth}
    ).json()
    return body


def update_document(reference: str, document_json: str, token: str | None = None) -> dict[str, Any]:
    """Replace the document at ``reference`` with ``document_json`` (a JSON string), as dm-job did."""
    body: dict[str, Any] = _send(
        "PUT", f"documents/{_path(reference)}", token, data={"data": document_json}
    ).json()
    return body


def add_document(reference: str, document: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """Add ``document`` at ``reference`` (append to a list attribute); DMSS's ``{"uid": <address>}``."""
    body: dict[str, Any] = _send(
        "POST", f"documents/{_path(reference)}", token, data={"document": json.dumps(document)}
    ).json()
    return body


def get_blueprint(type_ref: str) -> dict[str, Any]:
    body: dict[str, Any] = _send("GET", f"blueprint/{_path(type_ref)}", None).json()
    return body


class _DmssApi:
    """The part of dm-job's generated DMSS client its handlers used: blobs by id."""

    def blob_get_by_id(self, data_source_id: str, blob_id: str) -> bytes:
        return _send("GET", f"blobs/{data_source_id}/{blob_id.lstrip('$')}", None).content

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(
            f"dmss_api.{name} (dm-job's generated DMSS client) is not provided; use get_document, "
            "update_document or add_document from services.dmss"
        )


dmss_api = _DmssApi()
