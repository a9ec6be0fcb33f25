"""vllm.v1.worker.cpu_model_runner.CPUModelRunner.load_model: set the pruning flag.

Why: on vLLM 0.32 the CPU runner overrides GPUModelRunner.load_model and never sets
`is_multimodal_pruning_enabled`, so embeddings carrying position channels are merged
unstripped (shape mismatch [n, D+c] vs [n, D]) and M-RoPE is never recomputed.
How: wrap load_model and set the flag exactly as GPUModelRunner.load_model does.
Remove when CPUModelRunner.load_model sets the flag itself (check on each vLLM bump).
"""

from __future__ import annotations

_MARK = "_sharp_pruning_flag_patched"


def patch_cpu_runner_pruning_flag() -> bool:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False  # the GPU runner sets the flag itself
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    if getattr(CPUModelRunner, _MARK, False):
        return True
    original_load_model = CPUModelRunner.load_model

    def load_model(self, *args, **kwargs):
        original_load_model(self, *args, **kwargs)
        mm_config = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = (
            supports_multimodal_pruning(self.get_model())
            and mm_config is not None
            and mm_config.is_multimodal_pruning_enabled()
        )

    CPUModelRunner.load_model = load_model
    setattr(CPUModelRunner, _MARK, True)
    return True
