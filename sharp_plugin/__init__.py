"""sharp-serve's vLLM plugin: ShaRP visual-token pruning for video LLMs.

`register()` is the `vllm.general_plugins` entry point. vLLM calls it in every process
(API server, engine core, workers), possibly more than once, so it is idempotent and
imports vLLM lazily. The pure algorithm lives in `sharp_plugin.core` and needs no vLLM;
how an engine is built with the plugin is `sharp_plugin.recipe`.
"""

from __future__ import annotations

# Architecture name -> lazy "module:Class" (registered without importing the model).
ARCHITECTURES = {
    "SharpQwen2_5_VLForConditionalGeneration": (
        "sharp_plugin.vllm.qwen2_5_vl:SharpQwen2_5_VLForConditionalGeneration"
    ),
    "SharpLlavaOnevisionForConditionalGeneration": (
        "sharp_plugin.vllm.llava_onevision:SharpLlavaOnevisionForConditionalGeneration"
    ),
    "SharpQwen3VLForConditionalGeneration": "sharp_plugin.vllm.qwen3_vl:SharpQwen3VLForConditionalGeneration",
}

# The stock architecture each ShaRP class serves: what a server picks from a model's
# config.json.
SHARP_FOR_STOCK = {
    "Qwen2_5_VLForConditionalGeneration": "SharpQwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "SharpQwen3VLForConditionalGeneration",
    # LLaVA-Video checkpoints in Hugging Face format load as LLaVA-OneVision.
    "LlavaOnevisionForConditionalGeneration": "SharpLlavaOnevisionForConditionalGeneration",
}

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    from vllm import ModelRegistry

    from sharp_plugin.vllm.patches import apply_patches

    apply_patches()
    supported = set(ModelRegistry.get_supported_archs())
    for arch, target in ARCHITECTURES.items():
        if arch not in supported:
            ModelRegistry.register_model(arch, target)
    _registered = True
