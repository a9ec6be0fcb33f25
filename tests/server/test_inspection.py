"""What was kept, on the real server: `sharp.return_selection` and preset model names,
through the official openai client."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from server.presets import load_presets
from server.settings import REPO_ROOT
from sharp_plugin.core import kept_count

from ..media import noise_video, write_mp4
from .test_server_e2e import MODEL, VIDEO_TOKENS, chat, url_part, video_message

pytestmark = pytest.mark.engine

PRESETS = load_presets(REPO_ROOT / "configs" / "pruning-presets.yaml")
# The `clip` fixture: 32 frames at 8 fps, sampled at 2 fps -> source frames 2, 6, ..., 30
# (the centre of each quarter second), 2 frames per Qwen temporal group; 112^2 frames are
# 8 x 8 patches, 4 x 4 tokens after the 2 x 2 merge.
TIMESTAMPS = [(4 * i + 2) / 8 for i in range(8)]
TOKEN_GRID = [4, 4, 4]


@pytest.fixture(scope="module")
def data_url(tmp_path_factory):
    """The conftest clip's geometry (32 frames of 224^2 at 8 fps) with other pixels: the
    server's caches are shared by the session, and the other modules' checks of scoring
    time must not meet a selection this module already made."""
    pixels, _ = noise_video(17, frames=32, size=224)
    clip = write_mp4(tmp_path_factory.mktemp("inspection") / "clip.mp4", pixels, fps=8)
    return "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()


def selection_of(response) -> dict:
    return response.model_extra["sharp"]["videos"][0]["selection"]


def test_models_lists_the_served_model_and_every_preset(server):
    ids = [m.id for m in server.client().models.list().data]
    assert ids == [MODEL, *(f"{MODEL}:{name}" for name in PRESETS)]


@pytest.mark.parametrize(
    ("preset", "method", "retention"),
    [("sharp-r10", "sharp", 0.1), ("uniform-r10", "uniform", 0.1), ("none", "none", 1.0)],
)
def test_a_preset_model_name_prunes_as_its_preset(server, data_url, preset, method, retention):
    response = server.client().chat.completions.create(
        model=f"{MODEL}:{preset}", messages=video_message(url_part(data_url)), max_tokens=2, temperature=0.0
    )
    report = response.model_extra["sharp"]
    assert response.model == f"{MODEL}:{preset}"
    assert (report["method"], report["retention"]) == (method, retention)
    assert report["video_tokens_kept"] == kept_count(retention, VIDEO_TOKENS)


def test_an_explicit_sharp_object_wins_over_the_preset_field_by_field(server, data_url):
    client = server.client()
    response = client.chat.completions.create(
        model=f"{MODEL}:sharp-r10",
        messages=video_message(url_part(data_url)),
        max_tokens=2,
        temperature=0.0,
        extra_body={"sharp": {"retention": 0.5}},
    )
    report = response.model_extra["sharp"]
    # retention from the request; method (and the rest) still the preset's.
    assert (report["method"], report["retention"]) == ("sharp", 0.5)
    assert report["video_tokens_kept"] == kept_count(0.5, VIDEO_TOKENS)


def test_the_selection_is_in_the_report_only_when_asked(server, data_url):
    client = server.client()
    plain = chat(client, video_message(url_part(data_url)), extra_body={"sharp": {"retention": 0.25}})
    assert selection_of(plain) is None
    asked = chat(
        client,
        video_message(url_part(data_url)),
        extra_body={"sharp": {"retention": 0.25, "return_selection": True}},
    )
    selection = selection_of(asked)
    kept = selection["kept_indices"]
    assert selection["token_grid"] == TOKEN_GRID and selection["frames_per_group"] == 2
    assert selection["frame_timestamps"] == pytest.approx(TIMESTAMPS)
    assert len(kept) == kept_count(0.25, VIDEO_TOKENS) == asked.model_extra["sharp"]["video_tokens_kept"]
    assert kept == sorted(set(kept)) and kept[0] >= 0 and kept[-1] < int(np.prod(TOKEN_GRID))
    # return_selection changes nothing else: the same decision (an encoder-cache hit).
    assert asked.model_extra["sharp"]["videos"][0]["cached"] is True
    assert asked.choices[0].message.content == plain.choices[0].message.content


@pytest.mark.parametrize("method", ["uniform", "none"])
def test_the_selection_is_what_the_method_keeps(server, data_url, method):
    response = chat(
        server.client(),
        video_message(url_part(data_url)),
        extra_body={"sharp": {"method": method, "retention": 0.25, "return_selection": True}},
    )
    kept = selection_of(response)["kept_indices"]
    # 64 tokens at a quarter: 16 slices of 4 tokens, each kept at its centre.
    expected = range(VIDEO_TOKENS) if method == "none" else range(2, VIDEO_TOKENS, 4)
    assert VIDEO_TOKENS == 64 and kept == list(expected)


def test_a_streamed_report_carries_the_selection(server, data_url):
    stream = server.client().chat.completions.create(
        model=f"{MODEL}:sharp-r10",
        messages=video_message(url_part(data_url)),
        max_tokens=2,
        temperature=0.0,
        stream=True,
        extra_body={"sharp": {"return_selection": True}},
    )
    reports = [chunk.model_extra["sharp"] for chunk in stream if chunk.model_extra.get("sharp")]
    assert len(reports) == 1
    selection = reports[0]["videos"][0]["selection"]
    assert len(selection["kept_indices"]) == kept_count(0.1, VIDEO_TOKENS)
    assert selection["frame_timestamps"] == pytest.approx(TIMESTAMPS)
