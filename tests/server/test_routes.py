"""Route behaviour that needs no engine: auth and the engine-dead health check, with a
fake engine (every engine-facing behaviour is also tested on the real one)."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import ServerSettings


class FakeEngine:
    model_name = "fake"
    num_decoder_layers = 4
    first_stage_layers = 4
    max_num_seqs = 2

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

    def is_dead(self):
        return False  # the supervisor's restarts have tests of their own (test_supervisor.py)

    def num_unfinished_requests(self):
        return 0

    def shutdown(self):
        pass


@pytest.fixture
def make_client(tmp_path):
    def make(request_timeout_s=600.0, max_queued_requests=64, **security):
        settings = ServerSettings(
            engine={"model": "fake"},
            security=security,
            files={"directory": str(tmp_path / "files")},
            request_timeout_s=request_timeout_s,
            max_queued_requests=max_queued_requests,
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
        client.app.state.engine.engine.dead = True
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
        assert len(client.app.state.engine.engine.aborted) == 1


def test_models_lists_one_name_per_preset(make_client):
    from server.presets import load_presets
    from server.settings import REPO_ROOT

    presets = load_presets(REPO_ROOT / "configs" / "pruning-presets.yaml")
    with make_client() as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["fake", *(f"fake:{name}" for name in presets)]
    assert "fake:sharp-r10" in ids and len(presets) >= 10


@pytest.mark.parametrize(
    ("model", "sharp", "status", "param"),
    [
        ("fake:no-such-preset", None, 404, "model"),
        ("fakeish", None, 404, "model"),
        ("fake:sharp-r10", {"return_selection": "yes"}, 400, "sharp.return_selection"),
        # The preset's settings are validated with the request's on top of them.
        ("fake:sharp-r10", {"retention": 2.0}, 400, "sharp.retention"),
    ],
)
def test_preset_names_and_return_selection_are_checked(make_client, model, sharp, status, param):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if sharp is not None:
        body["sharp"] = sharp
    with make_client() as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_presets_layer_under_the_request_field_by_field():
    from server.presets import apply_preset, resolve_model

    presets = {"sharp-r10": {"method": "sharp", "retention": 0.1, "segment_frames": 4}}
    assert resolve_model("m", "m", presets) == {}
    assert resolve_model("m:sharp-r10", "m", presets) == presets["sharp-r10"]
    assert resolve_model("m:other", "m", presets) is None and resolve_model("m2", "m", presets) is None
    assert apply_preset(presets["sharp-r10"], {"segment_frames": 0}) == {
        "method": "sharp",
        "retention": 0.1,
        "segment_frames": 0,
    }
    # vLLM's pruning_rate is the same setting as retention: the request's replaces the preset's.
    assert apply_preset(presets["sharp-r10"], {"pruning_rate": 0.5}) == {
        "method": "sharp",
        "segment_frames": 4,
        "pruning_rate": 0.5,
    }


def test_a_broken_presets_file_stops_the_server_naming_the_preset(tmp_path):
    from server.presets import load_presets

    path = tmp_path / "presets.yaml"
    path.write_text("good: {method: uniform, retention: 0.5}\nbad: {method: sharp, retention: 7}\n")
    with pytest.raises(ValueError, match="preset 'bad'.*retention"):
        load_presets(path)
    path.write_text("'a:b': {method: none}\n")
    with pytest.raises(ValueError, match="without ':'"):
        load_presets(path)


def test_the_inspect_page_is_static_and_its_data_needs_the_key(make_client):
    with make_client(api_key="s3cret") as client:
        page = client.get("/inspect")
        assert page.status_code == 200 and "inspect.js" in page.text
        script = client.get("/inspect/inspect.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        # Only the page's own files are open; any other path needs the key first.
        assert client.get("/inspect/nope.js").status_code == 401
        assert client.get("/inspect/nope.js", headers={"Authorization": "Bearer s3cret"}).status_code == 404
        frames = client.post("/v1/inspect/frames", json={"video": {"type": "file", "file": {"file_id": "x"}}})
        assert frames.status_code == 401
        authorized = client.post(
            "/v1/inspect/frames",
            json={"video": {"type": "file", "file": {"file_id": "file-missing"}}},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert authorized.status_code == 404
        text = client.post(
            "/v1/inspect/frames",
            json={"video": {"type": "text", "text": "no video"}},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert text.status_code == 400 and text.json()["error"]["param"] == "video"


def test_the_inspect_page_can_be_turned_off(tmp_path):
    settings = ServerSettings(
        engine={"model": "fake"}, files={"directory": str(tmp_path)}, inspect_page=False
    )
    with TestClient(create_app(settings, engine_factory=FakeEngine)) as client:
        assert client.get("/inspect").status_code == 404


def test_a_retention_under_the_floor_is_refused_before_any_media_work(tmp_path):
    settings = ServerSettings(engine={"model": "fake"}, files={"directory": str(tmp_path)}, min_retention=0.2)
    # A file id that does not exist: a 404 would mean the media was looked at first.
    video = {"type": "file", "file": {"file_id": "file-missing"}}
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": [video, {"type": "text", "text": "?"}]}],
    }
    with TestClient(create_app(settings, engine_factory=FakeEngine)) as client:
        low = client.post("/v1/chat/completions", json={**body, "sharp": {"retention": 0.1}})
        assert low.status_code == 400 and low.json()["error"]["param"] == "sharp.retention"
        assert "at least 0.2" in low.json()["error"]["message"]
        # Unpruned requests are not held to the floor.
        unpruned = client.post("/v1/chat/completions", json={**body, "sharp": {"method": "none"}})
        assert unpruned.status_code == 404


def test_the_unpruned_token_cap_is_checked_before_decoding(tmp_path, monkeypatch):
    from server.media.decoders.pyav_reader import PyAVDecoder
    from tests.media import noise_video, write_mp4

    media = tmp_path / "media"
    media.mkdir()
    clip = write_mp4(media / "clip.mp4", noise_video(3, frames=16, size=224)[0], fps=8)  # 2 s
    decoded = []
    settings = ServerSettings(
        engine={"model": "fake"},
        files={"directory": str(tmp_path / "files")},
        security={"allowed_local_root": str(media)},
        # 2 fps -> 4 frames of 224^2 -> 2 groups of 8 x 8 = 128 tokens, over 100.
        media={"max_video_tokens": 100, "max_frame_pixels": 224 * 224},
    )
    part = {"type": "video_url", "video_url": {"url": f"file://{clip}"}}
    body = {"model": "fake", "messages": [{"role": "user", "content": [part, {"type": "text", "text": "?"}]}]}
    with TestClient(create_app(settings, engine_factory=FakeEngine)) as client:
        # After start-up, whose decoder check decodes a clip of its own.
        monkeypatch.setattr(PyAVDecoder, "read", lambda *args: decoded.append(args) or None)
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_video_tokens" and "128 unpruned visual tokens" in error["message"]
    assert decoded == []


def test_requests_past_the_queue_get_429_with_retry_after_and_their_places_come_back(make_client):
    """2 running (the fake's max_num_seqs) + 1 queued: a 4th request at once is refused
    before any work; once the three end (their timeout), a new one is admitted again."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    with make_client(request_timeout_s=2.0, max_queued_requests=1) as client:
        with ThreadPoolExecutor(3) as pool:
            held = [pool.submit(client.post, "/v1/chat/completions", json=body) for _ in range(3)]
            deadline = time.monotonic() + 5
            while client.app.state.admission.admitted < 3:
                assert time.monotonic() < deadline, "three requests should be held"
                time.sleep(0.01)
            refused = client.post("/v1/chat/completions", json={**body, "stream": True})
            assert [f.result().status_code for f in held] == [504] * 3
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "queue_full"
        assert client.app.state.admission.admitted == 0
        assert client.post("/v1/chat/completions", json=body).status_code == 504  # admitted, then timed out


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_the_configured_decoder_decodes_the_requests_videos(tmp_path, monkeypatch, decoder):
    from server.media.decoders.decord_reader import DecordDecoder
    from server.media.decoders.pyav_reader import PyAVDecoder
    from tests.media import frame_coded_video, write_mp4

    media = tmp_path / "media"
    media.mkdir()
    clip = write_mp4(media / "clip.mp4", frame_coded_video(20), fps=10, lossless=True)
    settings = ServerSettings(
        engine={"model": "fake"},
        files={"directory": str(tmp_path / "files")},
        security={"allowed_local_root": str(media)},
        media={"decoder": decoder},
    )
    used = []
    for backend in (DecordDecoder, PyAVDecoder):
        for method in ("probe", "read"):
            original = getattr(backend, method)

            def spy(self, *args, _original=original, _method=method, **kwargs):
                used.append((type(self), _method))
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(backend, method, spy)
    part = {"type": "video_url", "video_url": {"url": f"file://{clip}"}}
    body = {"video": part, "media_io_kwargs": {"video": {"num_frames": 4}}}
    chosen = PyAVDecoder if decoder == "pyav" else DecordDecoder
    with TestClient(create_app(settings, engine_factory=FakeEngine)) as client:
        used.clear()  # the start-up check decodes a clip of its own
        response = client.post("/v1/inspect/frames", json=body)
        assert set(used) == {(chosen, "probe"), (chosen, "read")}
        used.clear()
        upload = client.post(
            "/v1/files", files={"file": ("c.mp4", clip.read_bytes())}, data={"purpose": "user_data"}
        )
        assert upload.status_code == 200, upload.text
        assert used == [(chosen, "probe")]  # probed on upload with the configured decoder
    assert response.status_code == 200, response.text
    frames = response.json()["data"]
    assert [f["timestamp"] for f in frames] == [0.2, 0.7, 1.2, 1.7]


def test_a_decoder_that_does_not_load_stops_the_start_with_its_reason(tmp_path):
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchcodec loads here: this checks a host where it does not")
    settings = ServerSettings(
        engine={"model": "fake"},
        files={"directory": str(tmp_path / "files")},
        media={"decoder": "torchcodec"},
    )
    app = create_app(settings, engine_factory=FakeEngine)
    refused = pytest.raises(RuntimeError, match="media.decoder torchcodec on cpu cannot decode a test clip")
    with refused, TestClient(app):
        pass
