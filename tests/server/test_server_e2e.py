"""The real server process (default config, real vLLM engine, real decord) driven by the
official openai client on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from proxy_videoqa.clips import make_clip
from proxy_videoqa.held_out import HELD_OUT_SEED
from sharp_plugin.core import kept_count

from ..media import frame_coded_video, noise_video, write_audio_only, write_mp4

pytestmark = pytest.mark.engine

MODEL = "sharp-proxy-qwen25vl"
INVALID_SHARP = "invalid_sharp_settings"
VIDEO_TOKENS = 64  # of the `clip` fixture (conftest.py) under the default config
KEPT_AT_QUARTER = kept_count(0.25, VIDEO_TOKENS)


def video_message(part: dict, text: str = "What is in the video?") -> list[dict]:
    return [{"role": "user", "content": [part, {"type": "text", "text": text}]}]


def url_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def mp4_data_url(seed: int, directory) -> str:
    """A distinct 4 s clip (32 frames of 224², 8 fps) as an mp4 data: URL."""
    pixels, _ = noise_video(seed, frames=32, size=224)
    clip = write_mp4(directory / f"clip-{seed}.mp4", pixels, fps=8)
    return "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()


def chat(client, messages, **extra):
    return client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, temperature=0.0, **extra
    )


def test_non_streaming_chat_reports_pruning_consistently(server, data_url):
    client = server.client()
    full = chat(client, video_message(url_part(data_url)), extra_body={"sharp": {"method": "none"}})
    rows = {}
    for retention in (1.0, 0.5, 0.25, 0.1):
        response = chat(
            client, video_message(url_part(data_url)), extra_body={"sharp": {"retention": retention}}
        )
        report = response.model_extra["sharp"]
        assert report["video_tokens"] == VIDEO_TOKENS and report["frames"] == 8
        assert report["video_tokens_kept"] == kept_count(retention, VIDEO_TOKENS)
        assert report["retention"] == retention and report["method"] == "sharp"
        # Usage agrees with the report: every dropped video token is a dropped prompt token.
        assert (
            full.usage.prompt_tokens - response.usage.prompt_tokens
            == VIDEO_TOKENS - report["video_tokens_kept"]
        )
        assert response.choices[0].message.role == "assistant"
        rows[retention] = response.usage.prompt_tokens
    assert rows[1.0] > rows[0.5] > rows[0.25] > rows[0.1]
    assert full.model_extra["sharp"]["scoring_ms"] == 0.0
    assert response.model_extra["sharp"]["scoring_ms"] > 0


def test_a_follow_up_question_reuses_the_vision_tower_output_and_is_counted(server, tmp_path):
    url, client, settings = mp4_data_url(78, tmp_path), server.client(), {"sharp": {"retention": 0.25}}

    def vision_hits() -> float:
        try:
            return server.metric("sharp_cache_lookups_total", cache="vision", result="hit")
        except KeyError:
            return 0.0

    hits = vision_hits()
    first = chat(client, video_message(url_part(url), "What colour is it?"), extra_body=settings)
    second = chat(client, video_message(url_part(url), "Where does it move?"), extra_body=settings)
    first, second = first.model_extra["sharp"]["videos"][0], second.model_extra["sharp"]["videos"][0]
    assert first["vision_cached"] is False and first["cached"] is False
    assert second["vision_cached"] is True and second["cached"] is False, "a new question: a new selection"
    # One video per request, nothing before it: scored alone, with its whole context.
    assert (first["scored_with"], first["context_missing"]) == (1, 0)
    assert vision_hits() == hits + 1
    assert server.metric("sharp_cache_lookups_total", cache="vision", result="miss") >= 1


def test_an_encoder_cache_hit_is_reported_as_cached_and_not_counted_again(server, tmp_path):
    url, client, settings = mp4_data_url(77, tmp_path), server.client(), {"sharp": {"retention": 0.25}}
    first = chat(client, video_message(url_part(url)), extra_body=settings).model_extra["sharp"]
    scored = server.metric("sharp_scoring_seconds_count")
    again = chat(client, video_message(url_part(url)), extra_body=settings).model_extra["sharp"]
    assert first["videos"][0]["cached"] is False and first["scoring_ms"] > 0
    assert again["videos"][0]["cached"] is True and again["scoring_ms"] == 0.0
    # The black prior: fresh or from the per-grid cache on the first; none ran on the hit.
    assert first["videos"][0]["prior"] in ("computed", "cached") and again["videos"][0]["prior"] is None
    assert again["video_tokens_kept"] == first["video_tokens_kept"] == KEPT_AT_QUARTER
    assert server.metric("sharp_scoring_seconds_count") == scored, "a cache hit ran no scoring pass"


def test_vllm_spelling_and_pruning_rate(server, data_url):
    client = server.client()
    a = chat(
        client,
        video_message(url_part(data_url)),
        extra_body={"mm_processor_kwargs": {"sharp": {"retention": 0.25}}},
    )
    b = chat(client, video_message(url_part(data_url)), extra_body={"sharp": {"pruning_rate": 0.75}})
    assert (
        a.model_extra["sharp"]["video_tokens_kept"]
        == b.model_extra["sharp"]["video_tokens_kept"]
        == KEPT_AT_QUARTER
    )


def test_streaming_chat_with_an_uploaded_file(server, clip):
    client = server.client()
    with clip.open("rb") as f:
        uploaded = client.files.create(file=("clip.mp4", f), purpose="user_data")
    stream = client.chat.completions.create(
        model=MODEL,
        messages=video_message({"type": "file", "file": {"file_id": uploaded.id}}),
        max_tokens=6,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        # The trained model stops after its one-word answer; run to max_tokens regardless.
        extra_body={"sharp": {"method": "fastv", "retention": 0.25}, "ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if not c.choices]
    assert len(finals) == 1 and finals[0] is chunks[-1]
    final = finals[0]
    assert final.usage.completion_tokens == 6 and final.usage.prompt_tokens > 0
    report = final.model_extra["sharp"]
    assert (report["method"], report["video_tokens"], report["video_tokens_kept"]) == (
        "fastv",
        VIDEO_TOKENS,
        KEPT_AT_QUARTER,
    )
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    # One chunk per generated token (one token per engine step here), also for tokens
    # whose text is empty, as stock vLLM streams: load tools time each token's arrival.
    token_chunks = [c for c in chunks[1:] if c.choices and c.choices[0].delta.content is not None]
    assert len(token_chunks) == final.usage.completion_tokens
    unstreamed = client.chat.completions.create(
        model=MODEL,
        messages=video_message({"type": "file", "file": {"file_id": uploaded.id}}),
        max_tokens=6,
        temperature=0.0,
        extra_body={"sharp": {"method": "fastv", "retention": 0.25}, "ignore_eos": True},
    )
    assert text == unstreamed.choices[0].message.content


def test_stream_ends_with_done(server, data_url):
    body = {"model": MODEL, "messages": video_message(url_part(data_url)), "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    final = json.loads(lines[-2][len("data: ") :])
    assert final["choices"] == [] and final["sharp"]["video_tokens"] == VIDEO_TOKENS


def test_files_api_flow(server, clip):
    client = server.client()
    with clip.open("rb") as f:
        created = client.files.create(file=("flow.mp4", f), purpose="user_data")
    assert created.id.startswith("file-") and created.bytes == clip.stat().st_size
    assert created.id in [f.id for f in client.files.list().data]
    assert client.files.retrieve(created.id).filename == "flow.mp4"
    assert client.files.delete(created.id).deleted is True
    assert created.id not in [f.id for f in client.files.list().data]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert not list(server.files_dir.glob(f"{created.id}*")), "deleted files leave nothing on disk"


def _expect_error(status, response, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param


def test_bad_inputs_get_openai_shaped_4xx(server, clip, tmp_path):
    post = lambda body: httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)  # noqa: E731

    def ask(part, **extra):
        return post({"model": MODEL, "messages": video_message(part), "max_tokens": 2, **extra})

    def data(raw: bytes) -> dict:
        return url_part("data:video/mp4;base64," + base64.b64encode(raw).decode())

    long_clip = write_mp4(tmp_path / "long.mp4", frame_coded_video(25 * 4, size=56), fps=4)  # 25 s > 20 s
    audio = write_audio_only(tmp_path / "audio.mp4")
    cases = [
        (415, data(b"\x00\x01 not a video at all" * 50), {}, "invalid_video"),
        (400, url_part("data:video/mp4;base64,"), {}, None),  # empty
        (415, data(audio.read_bytes()), {}, "invalid_video"),  # no video stream
        (415, data(clip.read_bytes()[:2000]), {}, "invalid_video"),  # truncated
        (400, url_part("data:video/mp4;base64,@@not-base64@@"), {}, "invalid_base64"),
        (413, data(long_clip.read_bytes()), {}, "video_too_long"),
        (400, url_part("data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()),
         {"media_io_kwargs": {"video": {"num_frames": 64}}}, None),  # over max_frames
        (404, {"type": "file", "file": {"file_id": "file-" + "0" * 32}}, {}, "file_not_found"),
        (404, {"type": "file", "file": {"file_id": "../../etc/passwd"}}, {}, "file_not_found"),
        (403, url_part("https://example.com/v.mp4"), {}, "remote_urls_disabled"),
        (403, url_part("file:///etc/passwd"), {}, "path_not_allowed"),
        (400, data(clip.read_bytes()), {"sharp": {"retention": 1.5}}, INVALID_SHARP),
        (400, data(clip.read_bytes()), {"sharp": {"method": "sharp", "prune_layer": 9}}, INVALID_SHARP),
        (400, data(clip.read_bytes()), {"sharp": {"retention": 0.5, "pruning_rate": 0.5}}, INVALID_SHARP),
    ]  # fmt: skip
    for status, part, extra, code in cases:
        _expect_error(status, ask(part, **extra), code)
    _expect_error(
        404, post({"model": "gpt-4o", "messages": video_message(data(clip.read_bytes()))}), "model_not_found"
    )
    malformed = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    _expect_error(400, malformed, "invalid_json")
    _expect_error(400, post({"model": MODEL}), param="messages")

    # Uploads: not a video, empty, over the size cap.
    files = f"{server.base_url}/v1/files"
    _expect_error(
        415, httpx.post(files, files={"file": ("x.mp4", b"garbage" * 100)}, data={"purpose": "user_data"})
    )
    _expect_error(400, httpx.post(files, files={"file": ("x.mp4", b"")}, data={"purpose": "user_data"}))
    big = b"\x00" * 2_100_000
    _expect_error(413, httpx.post(files, files={"file": ("x.mp4", big)}, data={"purpose": "user_data"}))
    assert not list(server.files_dir.glob(".file-*.partial")), "refused uploads leave nothing behind"

    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.log.read_text()


# How soon after sending its request a client must have hung up for the attempt to say
# anything: the engine takes about 15 s for the thousands of tokens asked for, so a
# request that is still generating when the client leaves must be aborted by the server.
# The loaded CI box can stall a process for 10-20 s (a getpid() call was traced at 10 s);
# an attempt whose client was stalled past this is not evidence either way and is retried.
_PROMPT_HANG_UP_S = 3.0
_ATTEMPTS = 3


def _hang_up_aborts(server, hang_up_after, max_tokens: int) -> None:
    """`hang_up_after()` sends a request and closes its connection early; the server must
    abort the engine request, not let it run to its end."""
    for _ in range(_ATTEMPTS):
        aborts_before = server.metric("sharp_engine_aborts_total")
        tokens_before = server.metric("sharp_completion_tokens_total")
        sent = time.monotonic()
        hang_up_after(tokens_before)
        prompt = time.monotonic() - sent < _PROMPT_HANG_UP_S
        deadline = time.monotonic() + 60
        while server.metric("sharp_engine_unfinished_requests") != 0:
            assert time.monotonic() < deadline, "the engine request kept running after the client left"
            time.sleep(0.2)
        if prompt:
            break
    else:
        pytest.fail(f"the client was stalled in all {_ATTEMPTS} attempts: nothing was shown")
    generated = server.metric("sharp_completion_tokens_total") - tokens_before
    aborts = server.metric("sharp_engine_aborts_total") - aborts_before
    assert aborts == 1, "the engine request was not aborted"
    assert 0 < generated < max_tokens, f"{generated} of {max_tokens} tokens: the request was not cut short"


def test_disconnect_mid_stream_aborts_the_engine_request(server, data_url):
    body = {
        "model": MODEL, "messages": video_message(url_part(data_url)), "max_tokens": 3000,
        "ignore_eos": True, "stream": True,
    }  # fmt: skip

    def read_five_chunks_and_hang_up(tokens_before: float) -> None:
        url = f"{server.base_url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=120) as response:
            # Keep a reference to the line iterator: dropping it finalises httpcore's
            # stream, which closes the connection on the spot.
            lines = response.iter_lines()
            received = 0
            for line in lines:
                received += line.startswith("data: {")
                if received >= 5:
                    break
        # The connection is closed here, long before 3000 tokens could be generated.

    _hang_up_aborts(server, read_five_chunks_and_hang_up, 3000)


def test_disconnect_of_a_non_streaming_client_aborts_the_engine_request(server, data_url):
    body = json.dumps({
        "model": MODEL, "messages": video_message(url_part(data_url)), "max_tokens": 3900,
        "ignore_eos": True,
    }).encode()  # fmt: skip
    host, port = server.base_url.removeprefix("http://").split(":")

    def hang_up_once_generating(tokens_before: float) -> None:
        # A raw connection, closed once the engine generates for the request (a client
        # timeout raced the request's way to the engine instead).
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        generating = time.monotonic() + 60
        while server.metric("sharp_completion_tokens_total") == tokens_before:
            assert time.monotonic() < generating, "the engine never generated for the request"
            time.sleep(0.1)
        connection.close()

    _hang_up_aborts(server, hang_up_once_generating, 3900)


def test_eight_concurrent_streams_with_mixed_retention(server, data_url):
    retentions = [1.0, 0.75, 0.5, 0.4, 0.25, 0.2, 0.1, 0.05]
    start = threading.Barrier(len(retentions))

    def run(retention):
        client = server.client()
        start.wait()
        stream = client.chat.completions.create(
            model=MODEL,
            messages=video_message(url_part(data_url)),
            max_tokens=8,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"sharp": {"retention": retention}, "ignore_eos": True},
        )
        chunks = list(stream)
        return retention, chunks[-1]

    with ThreadPoolExecutor(len(retentions)) as pool:
        results = list(pool.map(run, retentions))
    prompt_tokens = {}
    for retention, final in results:
        assert final.usage.completion_tokens == 8
        assert final.model_extra["sharp"]["video_tokens_kept"] == kept_count(retention, VIDEO_TOKENS)
        prompt_tokens[retention] = final.usage.prompt_tokens
    text_tokens = {p - kept_count(r, VIDEO_TOKENS) for r, p in prompt_tokens.items()}
    assert len(text_tokens) == 1, "every request's prompt = the same text + its own kept count"


def test_models_health_and_metrics(server):
    ids = [m.id for m in server.client().models.list().data]
    assert ids[0] == MODEL and f"{MODEL}:sharp-r10" in ids  # presets: tests/server/test_inspection.py
    assert httpx.get(f"{server.base_url}/health", timeout=10).json() == {"status": "ok"}
    assert server.metric("sharp_video_tokens_total") > 0
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for name in (
        "sharp_requests_total",
        "sharp_errors_total",
        "sharp_scoring_seconds_bucket",
        "sharp_ttft_seconds_bucket",
    ):
        assert name in metrics


def test_text_only_and_image_requests(server, data_url):
    import io

    from PIL import Image

    client = server.client()
    text_only = chat(
        client, [{"role": "user", "content": "Hello"}], extra_body={"sharp": {"retention": 0.25}}
    )
    assert text_only.usage.prompt_tokens > 0 and text_only.model_extra["sharp"]["video_tokens"] == 0

    buffer = io.BytesIO()
    Image.new("RGB", (112, 112), (200, 30, 30)).save(buffer, format="PNG")
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()},
    }
    messages = [
        {"role": "user", "content": [image, url_part(data_url), {"type": "text", "text": "Same colour?"}]}
    ]
    full = chat(client, messages, extra_body={"sharp": {"method": "none"}})
    pruned = chat(client, messages, extra_body={"sharp": {"retention": 0.25}})
    report = pruned.model_extra["sharp"]
    assert (report["video_tokens"], report["video_tokens_kept"]) == (VIDEO_TOKENS, KEPT_AT_QUARTER)
    # Only the video shrank: the image's tokens are all still there.
    assert full.usage.prompt_tokens - pruned.usage.prompt_tokens == VIDEO_TOKENS - KEPT_AT_QUARTER


def test_the_default_model_answers_held_out_clips_sent_as_mp4(server, tmp_path):
    """The trained model through the whole stack on its shipped task: H.264 at 8 fps ->
    decord at 2 fps -> 112^2 frames -> vLLM, unpruned and with ShaRP at r = 0.25 (chance
    is 1 in 5)."""
    client = server.client()
    right = {"none": 0, "sharp": 0}
    clips = [
        make_clip(HELD_OUT_SEED + i, "single", split) for i in range(5) for split in ("standard", "small")
    ]
    for clip in clips:
        path = write_mp4(tmp_path / f"{clip.seed}.mp4", np.repeat(clip.frames, 4, axis=0), fps=8)
        url = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
        for name, sharp in (("none", {"method": "none"}), ("sharp", {"retention": 0.25})):
            response = chat(client, video_message(url_part(url), clip.question), extra_body={"sharp": sharp})
            assert response.model_extra["sharp"]["video_tokens"] == 128
            right[name] += response.choices[0].message.content.strip() == clip.answer
    assert right["none"] >= 9 and right["sharp"] >= 8, right
