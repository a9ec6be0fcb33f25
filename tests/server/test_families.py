"""The server picks the ShaRP class from the architecture a model's config.json names."""

import base64
import json

import pytest

from sharp_plugin.core import kept_count
from sharp_plugin.recipe import sharp_architecture

from ..media import noise_video, write_mp4


def test_a_stock_checkpoint_gets_its_sharp_class(tiny_model_dir):
    assert json.loads((tiny_model_dir / "config.json").read_text())["architectures"] == [
        "Qwen2_5_VLForConditionalGeneration"
    ]
    assert sharp_architecture(str(tiny_model_dir)) == "SharpQwen2_5_VLForConditionalGeneration"


def test_a_checkpoint_that_names_a_sharp_class_keeps_it(proxy_model_dir):
    assert sharp_architecture(str(proxy_model_dir)) == "SharpQwen2_5_VLForConditionalGeneration"


def test_a_llava_onevision_checkpoint_gets_its_sharp_class(tiny_llava_dir):
    assert sharp_architecture(str(tiny_llava_dir)) == "SharpLlavaOnevisionForConditionalGeneration"


def test_a_qwen3_vl_checkpoint_gets_its_sharp_class(tiny_qwen3_dir):
    assert sharp_architecture(str(tiny_qwen3_dir)) == "SharpQwen3VLForConditionalGeneration"


def test_an_unsupported_family_is_refused_by_name(tmp_path):
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"engine\.model: .* is a Gemma3ForConditionalGeneration; ShaRP serves"
    ):
        sharp_architecture(str(tmp_path))


# family -> (its server fixture, N of the 4 s test clip at the default 2 fps)
SERVED = {
    "llava-onevision": ("llava_server", 128),  # 8 frames of 4 x 4 pooled tokens
    # 4 temporal groups; the build's pixel budget for all frames together shrinks each
    # 224² frame to 128², 4 x 4 merged tokens
    "qwen3-vl": ("qwen3_server", 64),
}


@pytest.mark.engine
@pytest.mark.parametrize("family", list(SERVED))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_each_family_server_answers_the_openai_client_with_its_report(request, family, tmp_path, stream):
    """The default config serving another family's tiny build: the server picks its ShaRP
    class from config.json, and the openai client gets the answer and the report."""
    fixture, num_tokens = SERVED[family]
    served = request.getfixturevalue(fixture)
    pixels, _ = noise_video(5 + stream, frames=32, size=224)  # a fresh video each: no cache hit
    clip = write_mp4(tmp_path / "clip.mp4", pixels, fps=8)
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    client = served.client()
    model = client.models.list().data[0].id  # the served model; its presets follow it
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": "What is it?"},
            ],
        }
    ]
    sharp = {"sharp": {"method": "sharp", "retention": 0.25}}
    if not stream:
        response = client.chat.completions.create(
            model=model, messages=messages, max_tokens=4, temperature=0.0, extra_body=sharp
        )
        report = response.model_extra["sharp"]
        assert response.choices[0].finish_reason in {"length", "stop"}
    else:
        chunks = list(
            client.chat.completions.create(
                model=model, messages=messages, max_tokens=4, temperature=0.0, stream=True,
                stream_options={"include_usage": True}, extra_body=sharp,
            )
        )  # fmt: skip
        report = next(c.model_extra["sharp"] for c in chunks if (c.model_extra or {}).get("sharp"))
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content is not None) >= 1
    assert (report["video_tokens"], report["video_tokens_kept"]) == (num_tokens, kept_count(0.25, num_tokens))
    assert report["videos"][0]["fallback"] is None and report["videos"][0]["scoring_ms"] > 0, report["videos"]
