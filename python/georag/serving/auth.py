"""An optional API key for `georag serve`, as OpenAI-compatible servers (vLLM's --api-key) take one.

Every route but the health probes and the map page's own files needs ``Authorization: Bearer <key>``; the
key is compared in constant time, and a missing or wrong one gets 401 with no detail (nothing that helps
guess it). Put TLS in front of it (uvicorn's certificate options, `georag serve --ssl-certfile`): a bearer
key on plain HTTP can be read by anyone on the path.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

OPEN_PATHS = ("/health/live", "/health/ready")
"""Routes answered without the key: probes must work without secrets."""
OPEN_PREFIXES = ("/static/",)
"""The page's own files (no data in them); the page and every API call still need the key."""


def authorized(header: str | None, key: bytes) -> bool:
    """Whether an ``Authorization`` header carries the bearer ``key`` (constant-time comparison)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), key)


def require_key(app: FastAPI, api_key: str) -> None:
    """Makes every route of ``app`` but `OPEN_PATHS` and `OPEN_PREFIXES` answer 401 without the key."""
    from starlette.responses import JSONResponse

    key = api_key.encode("utf-8")

    @app.middleware("http")
    async def check_key(request: Any, call_next: Any) -> Any:
        path = request.url.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await call_next(request)
        if not authorized(request.headers.get("authorization"), key):
            return JSONResponse(
                {"error": "unauthorized", "code": "UNAUTHENTICATED"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)
