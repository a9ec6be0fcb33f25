"""The black-video prior embeds an all-black video the plugin makes itself: its pixels
must be what vLLM's own processor makes of a black video, for every family. vLLM
normalises pixels on the device for the Qwen families (`mm_device_do_normalize`), so a
black frame normalised by the HF processor as well would reach the tower normalised
twice (the defect this catches: the scores of a wrong black video still rank, so no
selection test notices)."""

import numpy as np
import pytest
import torch

from ..media import video_metadata

FAMILIES = {
    "qwen2.5-vl": ("tiny_model_dir", "SharpQwen2_5_VLForConditionalGeneration", 56),
    "qwen3-vl": ("tiny_qwen3_dir", "SharpQwen3VLForConditionalGeneration", 64),
    "llava-onevision": ("tiny_llava_dir", "SharpLlavaOnevisionForConditionalGeneration", 112),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_black_frame_is_what_vllms_processor_makes_of_a_black_video(request, family):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    import sharp_plugin

    fixture, architecture, side = FAMILIES[family]
    sharp_plugin.register()
    model_config = ModelConfig(
        model=str(request.getfixturevalue(fixture)), hf_overrides={"architectures": [architecture]}
    )
    processor = MULTIMODAL_REGISTRY.create_processor(model_config)
    frames = np.zeros((2, side, side, 3), dtype=np.uint8)
    items = processor.info.parse_mm_data({"video": [(frames, video_metadata(2, 2.0))]})
    made = processor._apply_hf_processor_main(items, {})["pixel_values_videos"]
    made = torch.stack(list(made)) if isinstance(made, list) else made
    black = processor._black_pixels.to(made.dtype)  # the tower gets it in its own dtype
    rows = made.reshape(-1, *black.shape)
    assert torch.equal(rows, black.expand_as(rows))
