"""Pytest fixtures for the Azure tests: import them into a test module to use them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from . import FakeAzure, serve_fake_azure

__all__ = ["ListLog", "fake_azure"]

#: azure-identity reads these from the process environment; none may leak in from the machine.
_IDENTITY_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
)


@pytest.fixture
async def fake_azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAzure]:
    """ARM and identity fakes; the process environment names the fake managed identity endpoint."""
    for name in _IDENTITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    async with serve_fake_azure(tmp_path / "fake-azure-tls") as azure:
        for name, value in azure.identity_env().items():
            monkeypatch.setenv(name, value)
        yield azure


class ListLog:
    """A Log that keeps what it is told, so tests can read warnings."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._add("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, kw)

    def text(self) -> str:
        return repr(self.records)
