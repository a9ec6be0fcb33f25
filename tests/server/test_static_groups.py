"""Static groups and `retention: "auto"` through the real server with the `openai` client:
the report says what was skipped and why, the usage agrees with it, presets name them,
and the metrics count them."""

import base64

from sharp_plugin.core import kept_count

from ..media import slides_video, write_mp4

MODEL = "sharp-proxy-qwen25vl"
TOKENS_PER_GROUP = 16  # 112 x 112: 4 x 4 tokens a group under the default config


def _slides_url(directory, seed: int, changes: set[int]) -> str:
    """4 s of 4 groups at the default config's 2 fps: 8 frames of 112², lossless."""
    pixels, _ = slides_video(seed, 4, changes, size=112)
    path = write_mp4(directory / f"slides-{seed}.mp4", pixels, fps=2, lossless=True)
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def _ask(client, url, model=MODEL, **sharp):
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                               {"type": "text", "text": "What colour is the shape?"}]}],
        max_tokens=2, temperature=0.0, extra_body={"sharp": sharp} if sharp else None,
    )  # fmt: skip


def test_the_report_says_which_groups_were_skipped_and_usage_agrees(server, tmp_path):
    client, url = server.client(), _slides_url(tmp_path, 1, {2})
    skipped_before = server.metric("sharp_static_groups_total", result="skipped") if _has(server) else 0.0
    full = _ask(client, url, method="none")
    response = _ask(client, url, retention=0.5, skip_static=True)
    report = response.model_extra["sharp"]
    video = report["videos"][0]
    assert video["redundancy"]["skipped_groups"] == [1, 3] and report["groups_skipped"] == 2
    assert video["video_tokens"] == 4 * TOKENS_PER_GROUP and video["tower_ms"] > 0
    kept = kept_count(0.5, 2 * TOKENS_PER_GROUP)
    assert video["video_tokens_kept"] == kept
    assert full.usage.prompt_tokens - response.usage.prompt_tokens == 4 * TOKENS_PER_GROUP - kept
    assert server.metric("sharp_static_groups_total", result="skipped") == skipped_before + 2


def test_auto_by_preset_name_reports_the_retention_it_chose(server, tmp_path):
    client = server.client()
    still = _ask(client, _slides_url(tmp_path, 2, set()), model=f"{MODEL}:sharp-auto").model_extra["sharp"]
    busy = _ask(client, _slides_url(tmp_path, 3, {1, 2, 3}), model=f"{MODEL}:sharp-auto").model_extra["sharp"]
    # max_retention 0.25 of the new tokens: a still video's first group (16), a busy one's all 64.
    assert still["videos"][0]["redundancy"]["new_tokens"] == TOKENS_PER_GROUP
    assert still["video_tokens_kept"] == round(0.25 * TOKENS_PER_GROUP)
    assert busy["video_tokens_kept"] == kept_count(0.25, 4 * TOKENS_PER_GROUP)
    assert still["retention"] == still["video_tokens_kept"] / (4 * TOKENS_PER_GROUP)
    assert still["videos"][0]["redundancy"]["retention_bounds"] == [0.02, 0.25]


def _has(server) -> bool:
    try:
        server.metric("sharp_static_groups_total", result="skipped")
    except KeyError:
        return False
    return True
