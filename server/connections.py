"""Deadlines on reading a request, and a bound on open connections, at the HTTP protocol.

uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time a
request takes to arrive: a client that opens a socket and sends nothing, or trickles
its headers or body a byte at a time, holds a connection (and, past the headers, a task)
for as long as it likes, and an ASGI middleware only runs once the headers are in. So
the deadlines live in uvicorn's protocol (httptools, which uvicorn picks when it is
installed): one from a connection's opening, or a new request's first byte, to the end
of its headers, and one from there to the end of its body. A request past either gets
a 408 in OpenAI's error shape (when nothing was answered yet) and its connection is
closed; the route reading that body sees the client disconnect. A connection past
`max_connections` is answered 503 and closed.

Relies on uvicorn's HttpToolsProtocol callbacks (connection_made, on_message_begin,
on_headers_complete, on_message_complete, connection_lost) and its `connections` set
and `cycle`: pyproject.toml pins uvicorn's minor for it, and tests/server/
test_connections.py holds the behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_body
from .settings import HttpSettings


def _response(status: int, reason: str, message: str, code: str, error_type: str) -> bytes:
    body = json.dumps(error_body(message, error_type, None, code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_MANY_CONNECTIONS = _response(
    503, "Service Unavailable", "Too many open connections; retry later", "too_many_connections",
    "service_unavailable",
)  # fmt: skip


def deadline_protocol(settings: HttpSettings, on_cut_off: Callable[[str], None]) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the deadlines and the connection bound of
    `settings`; `on_cut_off(reason)` counts each connection closed for them ("headers",
    "body", "connections")."""

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > settings.max_connections:
                on_cut_off("connections")
                transport.write(TOO_MANY_CONNECTIONS)
                transport.close()
                return
            self._arm(settings.header_timeout_s, "headers")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(settings.header_timeout_s, "headers")

        def on_headers_complete(self) -> None:
            self._arm(settings.body_timeout_s, "body")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float, stage: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired, stage, seconds)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, stage: str, seconds: float) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            on_cut_off(stage)
            # Past the headers, `cycle` is this request's (before, a previous one's).
            answered = stage == "body" and self.cycle is not None and self.cycle.response_started
            if not answered:
                message = f"The request's {stage} did not arrive within {seconds:g} s"
                self.transport.write(
                    _response(408, "Request Timeout", message, "request_timeout", "invalid_request_error")
                )
            self.transport.close()

    return DeadlineProtocol
