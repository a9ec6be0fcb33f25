"""The plugin's engines, shared by every test under tests/plugin (package scope) or by
one module (module scope), all from tests/engines.py."""

from __future__ import annotations

from ..engines import engine_fixture

SHARP_ARCH = "SharpQwen2_5_VLForConditionalGeneration"
SHARP_LLAVA_ARCH = "SharpLlavaOnevisionForConditionalGeneration"
SHARP_QWEN3_ARCH = "SharpQwen3VLForConditionalGeneration"

sharp_llm = engine_fixture("tiny_model_dir")
stock_llm = engine_fixture("tiny_model_dir", sharp=False)

# fp32 engine with engine-wide defaults: used where exact agreement with an outside
# reference matters, and to check that defaults apply and per-request values win.
FP32_DEFAULTS = {"method": "uniform", "retention": 0.5}
sharp_llm_fp32 = engine_fixture("tiny_model_dir", dtype="float32", sharp_defaults=FP32_DEFAULTS)

# Chunked prefill with a tiny token budget: a 512-token video is prefilled over several
# steps, so position channels reach recompute_mrope_positions a slice at a time.
CHUNK_TOKENS = 96
sharp_llm_chunked = engine_fixture(
    "tiny_model_dir", enable_chunked_prefill=True, max_num_batched_tokens=CHUNK_TOKENS
)

# LLaVA-OneVision (tests/plugin/test_llava_onevision.py): fp32, so that kept indices and
# log-probs can be held to an outside reference.
sharp_llava_llm = engine_fixture("tiny_llava_dir", dtype="float32")
stock_llava_llm = engine_fixture("tiny_llava_dir", sharp=False, dtype="float32")
sharp_llava_llm_bf16 = engine_fixture("tiny_llava_dir")

# Qwen3-VL (tests/plugin/test_qwen3_vl.py): fp32 for the outside reference, and bf16.
# Only that module uses them, so they close with it.
sharp_qwen3_llm = engine_fixture("tiny_qwen3_dir", scope="module", dtype="float32")
stock_qwen3_llm = engine_fixture("tiny_qwen3_dir", scope="module", sharp=False, dtype="float32")
sharp_qwen3_llm_bf16 = engine_fixture("tiny_qwen3_dir", scope="module")
