"""Kept indices chosen inside vLLM equal what sharp_plugin.core chooses outside vLLM on
the same checkpoint, loaded independently with HF transformers (both in fp32)."""

import pytest

from sharp_plugin.core import SharpSettings, select_tokens

from ..media import chat_prompt, noise_video
from .conftest import FP32_DEFAULTS
from .engine_helpers import generate, new_report_id, report, request, video_pads
from .hf_reference import HFReference

pytestmark = pytest.mark.engine

SETTINGS = {
    "fastv": {"method": "fastv", "retention": 0.25, "prune_layer": 2},
    "sharp, black prior, segments, dedup": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 2,
        "debias": "black", "calibration": "subtract", "lam": 1.0, "dedup_threshold": 0.9,
    },
    "sharp, black prior scored by the question": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 2,
        "debias": "black", "prior_query": "question", "lam": 2.0,
    },
    "sharp, mean prior, divide, layer 1": {
        "method": "sharp", "retention": 0.1, "prune_layer": 1, "segment_frames": 4,
        "debias": "mean", "calibration": "divide", "dedup_threshold": 0.8,
    },
    "sharp, no fixes but dedup": {
        "method": "sharp", "retention": 0.5, "prune_layer": 3, "segment_frames": 0,
        "debias": "off", "dedup_threshold": 0.5,
    },
}  # fmt: skip


GENERIC_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return HFReference(tiny_model_dir)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_kept_indices_match_an_outside_reference(sharp_llm_fp32, reference, name):
    settings = SETTINGS[name]
    prompt = chat_prompt("<video>", "What colour is the circle?")
    frames, metadata = noise_video(40, fps=2.0)
    rid = new_report_id()
    generate(sharp_llm_fp32, request(prompt, {"video": (frames, metadata)}, settings, rid))
    (inside,) = report(sharp_llm_fp32, rid)

    prefix, suffix, grid, t_scale, visual, black_visual = reference.prepare(prompt, frames, metadata["fps"])
    assert grid == inside["grid_thw"]
    parsed = SharpSettings(**settings)
    scorer = reference.scoring_pass(prefix, suffix, grid, t_scale, parsed.prune_layer)
    prior_scorer = scorer
    if parsed.prior_query == "generic":
        # The prior's query: a fixed question in the model's default chat (system turn included).
        generic = GENERIC_SYSTEM + chat_prompt("<video>", "What happens in this video?")
        prior_prefix, prior_suffix, *_ = reference.prepare(generic, frames, metadata["fps"])
        prior_scorer = reference.scoring_pass(prior_prefix, prior_suffix, grid, t_scale, parsed.prune_layer)
    outside = select_tokens(parsed, visual, scorer, lambda groups: prior_scorer(black_visual, groups).scores)
    assert inside["kept_indices"] == outside.kept.tolist()
    assert (inside["prior"] is not None) == (parsed.effective().debias == "black")


def test_engine_defaults_apply_and_request_values_win(sharp_llm_fp32):
    tokenizer = sharp_llm_fp32.get_tokenizer()
    prompt, video = chat_prompt("<video>", "What is shown?"), noise_video(41)
    assert FP32_DEFAULTS == {"method": "uniform", "retention": 0.5}
    no_settings, override_method, override_retention = generate(
        sharp_llm_fp32,
        [
            request(prompt, {"video": video}),
            request(prompt, {"video": video}, {"method": "none"}),
            request(prompt, {"video": video}, {"retention": 0.25}),
        ],
    )
    assert video_pads(no_settings, tokenizer) == 256
    assert video_pads(override_method, tokenizer) == 512
    assert video_pads(override_retention, tokenizer) == 128
