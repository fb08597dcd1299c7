"""Fake token issuers: App Service managed identity (plain http) and Entra ID's token endpoint (https).

The real azure-identity code talks to these: ``ManagedIdentityCredential`` (through
DefaultAzureCredential) reads ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` and GETs a token;
``ClientSecretCredential`` POSTs the client-credentials form to ``{authority}/{tenant}/oauth2/v2.0/token``.
Every token issued is added to the fake ARM's accepted set.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from .arm import Recorded

__all__ = ["FakeIdentity"]


@dataclass
class FakeIdentity:
    tokens: set[str]
    identity_header: str = field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_secret: str = field(default_factory=lambda: "sp-" + uuid.uuid4().hex)
    requests: list[Recorded] = field(default_factory=list)
    #: Answer managed-identity requests with 400 (an identity that is not assigned).
    refuse: bool = False

    def managed_identity_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/msi/token", self._managed_identity)
        return app

    def entra_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._client_credentials)
        return app

    def _issue(self) -> str:
        token = "tok-" + uuid.uuid4().hex
        self.tokens.add(token)
        return token

    async def _managed_identity(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded("GET", request.path, dict(request.query), dict(request.headers)))
        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return web.json_response({"error": "invalid_header"}, status=401)
        if request.query.get("api-version") != "2019-08-01" or not request.query.get("resource"):
            return web.json_response({"error": "invalid_request"}, status=400)
        if self.refuse:
            return web.json_response(
                {"statusCode": 400, "message": "No managed identity endpoint found."}, status=400
            )
        return web.json_response(
            {
                "access_token": self._issue(),
                "expires_on": str(int(time.time()) + 3600),
                "resource": request.query["resource"],
                "token_type": "Bearer",
            }
        )

    async def _client_credentials(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post())
        self.requests.append(Recorded("POST", request.path, dict(request.query), dict(request.headers), form))
        if form.get("grant_type") != "client_credentials" or not form.get("scope"):
            return web.json_response({"error": "invalid_request"}, status=400)
        if (
            request.match_info["tenant"] != self.tenant
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
                status=401,
            )
        return web.json_response({"token_type": "Bearer", "expires_in": 3600, "access_token": self._issue()})
