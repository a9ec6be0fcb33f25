from __future__ import annotations

import gc
import os

import pytest

from sharp_plugin import SCHEDULER, WORKER_EXTENSION

SHARP_ARCH = "SharpQwen2_5_VLForConditionalGeneration"


def make_llm(
    model_dir,
    *,
    sharp: bool,
    dtype: str = "bfloat16",
    sharp_defaults: dict | None = None,
    architecture: str = SHARP_ARCH,
    sharp_config: dict | None = None,
    **engine_args,
):
    from vllm import LLM

    hf_overrides = None
    if sharp:
        hf_overrides = {"architectures": [architecture]}
        if sharp_defaults:
            hf_overrides["sharp_defaults"] = sharp_defaults
        hf_overrides.update(sharp_config or {})  # other sharp_* HF-config keys
    extra = {"worker_extension_cls": WORKER_EXTENSION, "scheduler_cls": SCHEDULER} if sharp else {}
    # scripts/gpu_smoke.sh runs the engine tests again with tensor parallelism on a host
    # with two GPUs; everywhere else one device.
    engine_args.setdefault("tensor_parallel_size", int(os.environ.get("SHARP_TEST_TENSOR_PARALLEL", "1")))
    engine_args.setdefault("max_model_len", 4096)
    return LLM(
        model=str(model_dir),
        dtype=dtype,
        max_num_seqs=8,
        enforce_eager=True,
        enable_prefix_caching=True,
        limit_mm_per_prompt={"video": 2, "image": 1},
        hf_overrides=hf_overrides,
        seed=0,
        **extra,
        **engine_args,
    )


# Engines are package-scoped: shared by every test under tests/plugin, and shut down
# when that package is done, so that the server and bench tests after it (each with
# engines of their own) do not run beside them on a 24 GiB machine.


def _shutdown(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


@pytest.fixture(scope="package")
def sharp_llm(tiny_model_dir):
    llm = make_llm(tiny_model_dir, sharp=True)
    yield llm
    _shutdown(llm)


@pytest.fixture(scope="package")
def stock_llm(tiny_model_dir):
    llm = make_llm(tiny_model_dir, sharp=False)
    yield llm
    _shutdown(llm)


# fp32 engine with engine-wide defaults: used where exact agreement with an outside
# reference matters, and to check that defaults apply and per-request values win.
FP32_DEFAULTS = {"method": "uniform", "retention": 0.5}


@pytest.fixture(scope="package")
def sharp_llm_fp32(tiny_model_dir):
    llm = make_llm(tiny_model_dir, sharp=True, dtype="float32", sharp_defaults=FP32_DEFAULTS)
    yield llm
    _shutdown(llm)


# Chunked prefill with a tiny token budget: a 512-token video is prefilled over several
# steps, so position channels reach recompute_mrope_positions a slice at a time.
CHUNK_TOKENS = 96


@pytest.fixture(scope="package")
def sharp_llm_chunked(tiny_model_dir):
    llm = make_llm(
        tiny_model_dir, sharp=True, enable_chunked_prefill=True, max_num_batched_tokens=CHUNK_TOKENS
    )
    yield llm
    _shutdown(llm)


# LLaVA-OneVision (tests/plugin/test_llava_onevision.py): fp32, so that kept indices and
# log-probs can be held to an outside reference.
SHARP_LLAVA_ARCH = "SharpLlavaOnevisionForConditionalGeneration"


@pytest.fixture(scope="package")
def sharp_llava_llm(tiny_llava_dir):
    llm = make_llm(tiny_llava_dir, sharp=True, dtype="float32", architecture=SHARP_LLAVA_ARCH)
    yield llm
    _shutdown(llm)


@pytest.fixture(scope="package")
def stock_llava_llm(tiny_llava_dir):
    llm = make_llm(tiny_llava_dir, sharp=False, dtype="float32")
    yield llm
    _shutdown(llm)


@pytest.fixture(scope="package")
def sharp_llava_llm_bf16(tiny_llava_dir):
    llm = make_llm(tiny_llava_dir, sharp=True, architecture=SHARP_LLAVA_ARCH)
    yield llm
    _shutdown(llm)


# Qwen3-VL (tests/plugin/test_qwen3_vl.py): fp32 for the outside reference, and bf16.
# Only that module uses them, so they close with it.
SHARP_QWEN3_ARCH = "SharpQwen3VLForConditionalGeneration"


@pytest.fixture(scope="module")
def sharp_qwen3_llm(tiny_qwen3_dir):
    llm = make_llm(tiny_qwen3_dir, sharp=True, dtype="float32", architecture=SHARP_QWEN3_ARCH)
    yield llm
    _shutdown(llm)


@pytest.fixture(scope="module")
def stock_qwen3_llm(tiny_qwen3_dir):
    llm = make_llm(tiny_qwen3_dir, sharp=False, dtype="float32")
    yield llm
    _shutdown(llm)


@pytest.fixture(scope="module")
def sharp_qwen3_llm_bf16(tiny_qwen3_dir):
    llm = make_llm(tiny_qwen3_dir, sharp=True, architecture=SHARP_QWEN3_ARCH)
    yield llm
    _shutdown(llm)
