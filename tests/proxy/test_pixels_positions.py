"""Training sees what vLLM serves: the processor's pixels and vLLM's M-RoPE positions."""

from functools import partial
from types import SimpleNamespace

import numpy as np
import torch

from proxy_videoqa.batches import prompt_ids
from proxy_videoqa.clips import make_clip
from proxy_videoqa.geometry import FPS, GRID_H, GRID_T, GRID_W, NUM_FRAMES, SECONDS_PER_GROUP, VIDEO_TOKENS
from proxy_videoqa.pixels import patchify
from proxy_videoqa.positions import vllm_mrope_positions
from proxy_videoqa.tokenizer import VIDEO_PAD


def test_patchify_matches_the_exported_processor(trained_once):
    from transformers import AutoProcessor
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(trained_once / "model")
    clip = make_clip(0, "query", "standard")
    metadata = VideoMetadata(
        total_num_frames=NUM_FRAMES, fps=FPS, duration=NUM_FRAMES / FPS, video_backend="opencv",
        frames_indices=list(range(NUM_FRAMES)),
    )  # fmt: skip
    out = processor(
        text=[f"<|vision_start|>{VIDEO_PAD}<|vision_end|>{clip.question}"],
        videos=[clip.frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt",
    )  # fmt: skip
    assert out["video_grid_thw"].tolist() == [[GRID_T, GRID_H, GRID_W]]  # no rescaling
    assert float(out["second_per_grid_ts"][0]) == SECONDS_PER_GROUP
    assert np.abs(out["pixel_values_videos"].numpy() - patchify(clip.frames)).max() < 1e-5


def test_positions_match_vllm_stock_qwen25vl(trained_once):
    from transformers import AutoConfig, AutoTokenizer
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as Stock

    tokenizer = AutoTokenizer.from_pretrained(trained_once / "model")
    config = AutoConfig.from_pretrained(trained_once / "model")
    ids = prompt_ids(tokenizer, "What colour is the cross?")
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    start = ids.index(video_id)
    # vLLM's own method on a stand-in model: it only reads the config and the features.
    model = SimpleNamespace(config=config)
    model.iter_mm_grid_thw = partial(Stock.iter_mm_grid_thw, model)
    feature = SimpleNamespace(
        modality="video",
        mm_position=SimpleNamespace(offset=start, length=VIDEO_TOKENS),
        data={
            "video_grid_thw": SimpleNamespace(data=torch.tensor([GRID_T, GRID_H, GRID_W])),
            "second_per_grid_ts": SimpleNamespace(data=torch.tensor(SECONDS_PER_GROUP)),
        },
    )
    expected, _ = Stock.get_mrope_input_positions(model, ids, [feature])
    ours = vllm_mrope_positions(ids, video_id)
    assert torch.equal(ours, expected.long())
    # The trap this guards against: text after the video starts past the temporal axis.
    assert int(ours[0, start + VIDEO_TOKENS]) == start + (GRID_T - 1) * 2 + 1
