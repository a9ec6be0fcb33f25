"""The plugin under stock `vllm serve`, for each supported family: opt in with
--hf-overrides, per-request settings via mm_processor_kwargs (needs
--trust-request-mm-kwargs), driven by the official openai client with a real H.264 mp4
sent as a data: URL."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import httpx
import pytest

from sharp_plugin import recipe
from sharp_plugin.core import kept_count

from ..media import noise_video, slides_video, write_mp4
from ..process import free_port, http_server
from .conftest import SHARP_ARCH, SHARP_LLAVA_ARCH, SHARP_QWEN3_ARCH

pytestmark = pytest.mark.engine

STARTUP_TIMEOUT_S = 300


# family -> (the fixture holding its tiny build, its ShaRP class)
FAMILIES = {
    "qwen2.5-vl": ("tiny_model_dir", SHARP_ARCH),
    "llava-onevision": ("tiny_llava_dir", SHARP_LLAVA_ARCH),
    "qwen3-vl": ("tiny_qwen3_dir", SHARP_QWEN3_ARCH),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def vllm_server(request, tmp_path_factory):
    fixture, architecture = FAMILIES[request.param]
    model_dir = request.getfixturevalue(fixture)
    media_dir = tmp_path_factory.mktemp("media")
    port = free_port()
    args = recipe.engine_args(
        model_dir, architecture=architecture, max_model_len=4096, enforce_eager=True, dtype="bfloat16",
        limit_mm_per_prompt={"video": 1, "image": 1},
    )  # fmt: skip
    extra = ["--host", "127.0.0.1", "--port", str(port), "--allowed-local-media-path", str(media_dir)]
    command = recipe.vllm_serve_command(args, extra)
    command[0] = str(Path(sys.executable).parent / "vllm")  # this environment's
    base_url = f"http://127.0.0.1:{port}"
    with http_server(
        command,
        f"{base_url}/health",
        media_dir / "vllm-serve.log",
        env=recipe.RUNNER_ENV,
        timeout_s=STARTUP_TIMEOUT_S,
    ):
        yield base_url, media_dir


@pytest.fixture(scope="module")
def mp4_data_url(tmp_path_factory):
    pixels, _ = noise_video(50, frames=16, size=224)
    path = write_mp4(tmp_path_factory.mktemp("videos") / "noise.mp4", pixels, fps=4)
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def _chat(client, model, url, extra_body=None):
    return client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": url}},
                    {"type": "text", "text": "What happens in the video?"},
                ],
            }
        ],
        max_tokens=4,
        temperature=0.0,
        extra_body=extra_body,
    )


def test_retention_reduces_prompt_tokens_under_stock_vllm_serve(vllm_server, mp4_data_url):
    import openai

    base_url, _ = vllm_server
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    model = client.models.list().data[0].id
    full = _chat(client, model, mp4_data_url)
    quarter = _chat(client, model, mp4_data_url, {"mm_processor_kwargs": {"sharp": {"retention": 0.25}}})
    half = _chat(client, model, mp4_data_url, {"mm_processor_kwargs": {"sharp": {"retention": 0.5}}})
    assert quarter.usage.prompt_tokens < half.usage.prompt_tokens < full.usage.prompt_tokens
    # The server's own frame sampler decides N; both drops must come from one N exactly.
    drop_quarter = full.usage.prompt_tokens - quarter.usage.prompt_tokens
    drop_half = full.usage.prompt_tokens - half.usage.prompt_tokens
    consistent = [
        n for n in range(1, full.usage.prompt_tokens + 1)
        if n - kept_count(0.25, n) == drop_quarter and n - kept_count(0.5, n) == drop_half
    ]  # fmt: skip
    assert len(consistent) == 1, (drop_quarter, drop_half)
    assert quarter.choices[0].message.content is not None


def test_invalid_settings_are_a_400_naming_the_field(vllm_server, mp4_data_url):
    import openai

    base_url, _ = vllm_server
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    model = client.models.list().data[0].id
    with pytest.raises(openai.BadRequestError, match=r"sharp\.retention"):
        _chat(client, model, mp4_data_url, {"mm_processor_kwargs": {"sharp": {"retention": 1.5}}})
    assert httpx.get(f"{base_url}/health", timeout=5).status_code == 200
    assert _chat(client, model, mp4_data_url).usage.prompt_tokens > 0


def _mp4_url(media_dir, name, pixels):
    path = write_mp4(media_dir / name, pixels, fps=4, lossless=True)
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def test_static_groups_and_auto_under_stock_vllm_serve(vllm_server, tmp_path):
    """A still video loses every group but its first before the tower; a video whose
    every frame is a new slide loses none; `auto` keeps fewer of the still one's."""
    import openai

    base_url, _ = vllm_server
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    model = client.models.list().data[0].id
    still = _mp4_url(tmp_path, "still.mp4", slides_video(20, 16, set(), group_frames=1)[0])
    changing = _mp4_url(tmp_path, "changing.mp4", slides_video(21, 16, set(range(16)), group_frames=1)[0])
    skip = {"mm_processor_kwargs": {"sharp": {"method": "none", "skip_static": True}}}
    auto = {"mm_processor_kwargs": {"sharp": {"retention": "auto"}}}
    full_still, skipped_still = _chat(client, model, still), _chat(client, model, still, skip)
    assert skipped_still.usage.prompt_tokens < full_still.usage.prompt_tokens
    changing_tokens = _chat(client, model, changing).usage.prompt_tokens
    assert _chat(client, model, changing, skip).usage.prompt_tokens == changing_tokens
    still_auto = _chat(client, model, still, auto).usage.prompt_tokens
    assert still_auto < _chat(client, model, changing, auto).usage.prompt_tokens
    bounds = {"retention": "auto", "min_retention": 0.9, "max_retention": 0.1}
    with pytest.raises(openai.BadRequestError, match=r"sharp\.min_retention"):
        _chat(client, model, still, {"mm_processor_kwargs": {"sharp": bounds}})
