"""Route behaviour that needs no engine: auth and the engine-dead health check, with a
fake engine (every engine-facing behaviour is also tested on the real one)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import ServerSettings


class FakeEngine:
    model_name = "fake"
    num_decoder_layers = 4
    first_stage_layers = 4

    def __init__(self, settings):
        self.dead = False
        self.aborted: list[str] = []

    def check_sampling(self, sampling):
        pass

    def render_prompt(self, messages):
        return "prompt"

    async def generate(self, request, sampling, request_id):
        await asyncio.sleep(3600)  # an engine that never answers
        yield None

    async def abort(self, request_id):
        self.aborted.append(request_id)

    async def sharp_report(self, report_id):
        return []

    async def check_health(self):
        if self.dead:
            raise RuntimeError("engine core died")

    def num_unfinished_requests(self):
        return 0

    def shutdown(self):
        pass


@pytest.fixture
def make_client(tmp_path):
    def make(request_timeout_s=600.0, **security):
        settings = ServerSettings(
            engine={"model": "fake"},
            security=security,
            files={"directory": str(tmp_path / "files")},
            request_timeout_s=request_timeout_s,
        )
        return TestClient(create_app(settings, engine_factory=FakeEngine))

    return make


def test_api_key_is_optional_and_enforced_when_set(make_client):
    with make_client() as open_client:
        assert open_client.get("/v1/models").status_code == 200
    with make_client(api_key="s3cret") as client:
        missing = client.get("/v1/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert (
            client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).json()["data"][0]["id"]
            == "fake"
        )
        assert client.post("/v1/chat/completions", json={}).status_code == 401
        assert client.get("/health").status_code == 200  # operations stay open for probes


def test_health_is_503_when_the_engine_is_dead(make_client):
    with make_client() as client:
        assert client.get("/health").status_code == 200
        client.app.state.engine.dead = True
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "service_unavailable"


def test_unknown_routes_use_the_error_envelope(make_client):
    with make_client() as client:
        response = client.get("/v1/nope")
        assert response.status_code == 404 and set(response.json()["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_past_its_timeout_is_504_and_aborted(make_client, stream):
    with make_client(request_timeout_s=0.5) as client:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert len(client.app.state.engine.aborted) == 1
