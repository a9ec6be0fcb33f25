"""The outermost ASGI layer: what is checked before a request body is read, and the
count of every response by status (5xx included).

It is plain ASGI, not Starlette's BaseHTTPMiddleware, for two reasons: a check must run
before the route starts reading the body, and BaseHTTPMiddleware hides the client's
disconnect from `Request.is_disconnected()`, which the non-streaming chat route polls to
abort the engine request of a client that hung up.

Order, cheapest first: the API key (an unauthenticated upload is refused before one byte
of it is read), then the declared Content-Length, then a running count of the bytes as
the route reads them (a body that lies about its length, or is chunked, still stops at
the cap).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, AuthenticationError, PayloadTooLarge, error_body
from .metrics import ServerMetrics
from .routers.inspect import PAGE_PATHS
from .settings import ServerSettings

# Probes and scrapers stay reachable without the key, and so do the inspection page's
# static files (no data in them; the page's own API calls carry the key).
OPEN_PATHS = frozenset({"/health", "/metrics", *PAGE_PATHS})
UPLOAD_PATH = "/v1/files"
# Multipart framing around an uploaded file (boundaries, part headers, the purpose field).
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from `receive` while the route reads the body; FastAPI lets an
    HTTPException from body parsing through unchanged, and errors.py renders it."""

    def __init__(self, limit: int):
        super().__init__(413, f"Request body is over the limit of {limit} bytes")


def body_limit(settings: ServerSettings, method: str, path: str) -> int:
    if method == "POST" and path.rstrip("/") == UPLOAD_PATH:
        return settings.media.max_upload_bytes + MULTIPART_OVERHEAD
    return settings.media.max_request_bytes


def api_key_ok(authorization: str, expected: str) -> bool:
    """Whether an Authorization header carries the server's key as a Bearer token."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected.encode())


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: ServerSettings, metrics: Callable[[], ServerMetrics]):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            limit = body_limit(self.settings, scope["method"], scope["path"])
            refusal = self._refusal(scope, limit)
            if refusal is not None:
                await _send_error(send_counted, refusal)
            else:
                await self.app(scope, _capped(receive, limit), send_counted)
        except Exception:
            # Unhandled: Starlette's outer error middleware answers 500. Count it here,
            # where every response passes, so that 5xx show up in /metrics.
            if not status:
                status.append(500)
            raise
        finally:
            route = scope.get("route")
            self.metrics().observe_response(getattr(route, "path", "unmatched"), status[0] if status else 0)

    def _refusal(self, scope: Scope, limit: int) -> APIError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        expected = self.settings.security.api_key
        if (
            expected is not None
            and scope["path"] not in OPEN_PATHS
            and not api_key_ok(headers.get("authorization", ""), expected.get_secret_value())
        ):
            return AuthenticationError("Invalid or missing API key", code="invalid_api_key")
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return PayloadTooLarge(BodyTooLarge(limit).detail, code="request_too_large")
        return None


def _capped(receive: Receive, limit: int) -> Receive:
    received = 0

    async def receive_capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_capped


async def _send_error(send: Send, error: APIError) -> None:
    body = json.dumps(error_body(error.message, error.error_type, error.param, error.code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
