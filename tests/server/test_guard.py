"""What is checked before the body is read, and that every response is counted (5xx
included). A fake engine suffices here: none of this reaches the engine."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import ServerSettings

from ..media import noise_video, write_mp4
from .test_routes import FakeEngine


class FailingEngine(FakeEngine):
    async def generate(self, request, sampling, request_id):
        raise RuntimeError("a bug")
        yield None


def make_settings(tmp_path, **sections) -> ServerSettings:
    return ServerSettings(
        engine={"model": "fake"},
        files={"directory": str(tmp_path / "files"), **sections.pop("files", {})},
        **sections,
    )


async def call_asgi(app, method: str, path: str, headers: dict, body_chunks: list[bytes]):
    """Drive the ASGI app by hand, recording how many body chunks it pulled."""
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        if pulled < len(body_chunks):
            pulled += 1
            return {
                "type": "http.request",
                "body": body_chunks[pulled - 1],
                "more_body": pulled < len(body_chunks),
            }
        await asyncio.sleep(3600)  # no disconnect during these tests

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1234),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


@pytest.mark.parametrize("path", ["/v1/files", "/v1/chat/completions"])
def test_an_unauthenticated_body_is_refused_before_one_byte_is_read(tmp_path, path):
    app = create_app(make_settings(tmp_path, security={"api_key": "s3cret"}), engine_factory=FakeEngine)
    chunks = [b"x" * 65536] * 8000  # 500 MiB, if anyone read it
    headers = {"content-type": "multipart/form-data; boundary=b", "content-length": str(65536 * 8000)}
    status, body, pulled = asyncio.run(call_asgi(app, "POST", path, headers, chunks))
    assert (status, body["error"]["code"], pulled) == (401, "invalid_api_key", 0)
    assert not list((tmp_path / "files").glob("*")), "nothing written"


def test_a_declared_length_over_the_cap_is_refused_before_reading(tmp_path):
    app = create_app(make_settings(tmp_path, media={"max_request_bytes": 1000}), engine_factory=FakeEngine)
    headers = {"content-type": "application/json", "content-length": "5000"}
    status, body, pulled = asyncio.run(call_asgi(app, "POST", "/v1/chat/completions", headers, [b"{}"]))
    assert (status, body["error"]["code"], pulled) == (413, "request_too_large", 0)


def test_a_body_without_a_length_stops_at_the_cap(tmp_path):
    """Chunked bodies (or ones that lie about their length) are counted as they arrive."""
    settings = make_settings(tmp_path, media={"max_request_bytes": 1000, "max_upload_bytes": 1000})
    with TestClient(create_app(settings, engine_factory=FakeEngine)) as client:

        def chunked(total: int):
            for _ in range(total // 100):
                yield b" " * 100

        response = client.post(
            "/v1/chat/completions", content=chunked(5000), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
        boundary = b'--b\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n'
        response = client.post(
            "/v1/files",
            content=iter([boundary] + [b"\x00" * 1000] * 200),  # past the cap + framing
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 413
    assert not list((tmp_path / "files").glob("*")), "a cut upload leaves nothing behind"


def test_the_store_refuses_uploads_past_max_files(tmp_path):
    pixels, _ = noise_video(1, frames=4, size=56)
    clip = write_mp4(tmp_path / "clip.mp4", pixels, fps=4)
    settings = make_settings(tmp_path, files={"max_files": 1})
    with TestClient(create_app(settings, engine_factory=FakeEngine)) as client:

        def upload():
            return client.post(
                "/v1/files", files={"file": ("c.mp4", clip.read_bytes())}, data={"purpose": "user_data"}
            )

        first = upload()
        assert first.status_code == 200
        refused = upload()
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "file_limit_reached"
        client.delete(f"/v1/files/{first.json()['id']}")
        assert upload().status_code == 200, "deleting one makes room again"


def test_server_errors_are_counted_in_metrics(tmp_path):
    with TestClient(
        create_app(make_settings(tmp_path), engine_factory=FailingEngine), raise_server_exceptions=False
    ) as client:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
        assert "a bug" not in response.text and "Traceback" not in response.text
        metrics = client.get("/metrics").text
    assert 'sharp_requests_total{route="/v1/chat/completions",status="500"} 1.0' in metrics
    assert 'sharp_errors_total{type="server_error"} 1.0' in metrics


def test_the_spec_documents_errors_auth_and_the_sharp_object(tmp_path):
    with TestClient(create_app(make_settings(tmp_path), engine_factory=FakeEngine)) as client:
        spec = client.get("/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert {"400", "401", "413", "503", "504"} <= set(chat["responses"]) and "422" not in chat["responses"]
    assert chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    sharp = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]["sharp"]
    settings = next(s for s in sharp["anyOf"] if s.get("type") == "object")
    assert settings["properties"]["seed"]["maximum"] == pytest.approx(2**63)
    assert "multipart/form-data" in spec["paths"]["/v1/files"]["post"]["requestBody"]["content"]
