"""The tiny Qwen3-VL build: a Qwen3-VL checkpoint with the specifics the ShaRP family
handles (tests/plugin/test_qwen3_vl.py serves it), built offline the same way every
time."""

import subprocess
import sys

import numpy as np

from .conftest import REPO


def _build(out):
    subprocess.run(
        [sys.executable, str(REPO / "scripts/build_tiny_model.py"), str(out), "--family", "qwen3-vl"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


def test_the_build_has_timestamped_groups_deepstack_and_interleaved_mrope(tmp_path):
    from transformers import AutoConfig, AutoProcessor
    from transformers.video_utils import VideoMetadata

    out = _build(tmp_path / "a")
    config = AutoConfig.from_pretrained(out)
    assert config.architectures == ["Qwen3VLForConditionalGeneration"]
    assert config.vision_config.deepstack_visual_indexes == [0, 1]
    assert config.text_config.rope_parameters["mrope_interleaved"] is True

    processor = AutoProcessor.from_pretrained(out)
    frames = (np.random.RandomState(0).rand(8, 128, 128, 3) * 255).astype(np.uint8)
    metadata = VideoMetadata(
        total_num_frames=8, fps=2.0, duration=4.0, video_backend="opencv", frames_indices=list(range(8))
    )
    prompt = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What?<|im_end|>\n"
    processed = processor(
        text=[prompt], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    assert processed["video_grid_thw"].tolist() == [[4, 8, 8]]
    text = processor.tokenizer.decode(processed["input_ids"][0])
    # Four temporal groups of 4 x 4 merged tokens, each after its own timestamp text: the
    # placeholders of one video are not one run, which the ShaRP family must handle.
    assert text.count("seconds>") == 4
    assert text.count("<|vision_start|>" + "<|video_pad|>" * 16 + "<|vision_end|>") == 4


def test_the_build_is_deterministic(tmp_path):
    first, second = _build(tmp_path / "a"), _build(tmp_path / "b")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
