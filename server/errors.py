"""Errors in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

Routes raise typed exceptions; the handlers here turn them (and FastAPI's own validation
errors) into the envelope. Nothing matches on message text, and no traceback leaves."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from sharp_plugin.core import SharpSettingsError

logger = logging.getLogger(__name__)


class APIError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message, self.param, self.code, self.headers = message, param, code, headers


class InvalidRequest(APIError):
    status_code, error_type = 400, "invalid_request_error"


class AuthenticationError(APIError):
    status_code, error_type = 401, "authentication_error"


class PermissionDenied(APIError):
    status_code, error_type = 403, "permission_error"


class NotFound(APIError):
    status_code, error_type = 404, "not_found_error"


class PayloadTooLarge(APIError):
    status_code, error_type = 413, "invalid_request_error"


class UnsupportedMedia(APIError):
    status_code, error_type = 415, "invalid_request_error"


class ClientClosedRequest(APIError):
    """The client hung up before the answer (nginx's 499): nobody reads this response,
    but logs and /metrics should not call it a server error."""

    status_code, error_type = 499, "client_closed_request"


class TooManyRequests(APIError):
    status_code, error_type = 429, "rate_limit_error"


class EngineUnavailable(APIError):
    status_code, error_type = 503, "service_unavailable"


class RequestTimeout(APIError):
    status_code, error_type = 504, "timeout_error"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: every 4xx and 5xx of this server has this shape."""

    error: ErrorDetail


_STATUS_TEXT = {
    400: "Invalid request (names the offending field in `param`)",
    401: "Missing or wrong API key (only when the server has one)",
    403: "The URL or path is not allowed by the server's settings",
    404: "No such model or file",
    413: "Over a size, duration, resolution or pixel limit",
    415: "Media that cannot be decoded",
    429: "More requests are waiting than the server queues (Retry-After says when to retry)",
    500: "Server error (counted in /metrics)",
    503: "The engine is not running, or restarting (Retry-After says when to retry)",
    504: "The request ran past its timeout",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for a route's error statuses, all in the OpenAI envelope."""
    return {status: {"model": ErrorResponse, "description": _STATUS_TEXT[status]} for status in statuses}


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _response(
    status: int, message: str, error_type: str, param=None, code=None, headers=None
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=error_body(message, error_type, param, code), headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        if exc.status_code >= 500:
            # An engine down (restarting) is the supervisor's to report, once.
            log = logger.warning if isinstance(exc, EngineUnavailable) else logger.error
            log("%s: %s", type(exc).__name__, exc.message)
        return _response(exc.status_code, exc.message, exc.error_type, exc.param, exc.code, exc.headers)

    @app.exception_handler(SharpSettingsError)
    async def _sharp_error(request: Request, exc: SharpSettingsError):
        param = f"sharp.{exc.field}" if exc.field else "sharp"
        return _response(400, str(exc), "invalid_request_error", param, "invalid_sharp_settings")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        # Drop pydantic's union-branch labels ("function-after[...]", "list[...]").
        loc = [str(p) for p in first.get("loc", ()) if p != "body" and "[" not in str(p)]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            return _response(
                400, "Request body is not valid JSON", "invalid_request_error", None, "invalid_json"
            )
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return _response(400, message, "invalid_request_error", param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = {413: "request_too_large", 405: "method_not_allowed"}.get(exc.status_code)
        return _response(exc.status_code, str(exc.detail), error_type, None, code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error")
        return _response(500, "Internal server error", "server_error")
