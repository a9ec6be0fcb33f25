"""vllm.v1.worker.gpu_model_runner.GPUModelRunner._execute_mm_encoder: a step's videos
are encoded in one call when ShaRP's scheduler bounds the step.

Why: with the multimodal-pruning path on, 0.32's runner embeds videos one per
`embed_multimodal` call. Its comment says why: a stopgap for peak memory, because
vLLM's scheduler charges a pruned video its kept count, so a step could hold more
videos than the encoder budget was profiled for. SharpScheduler charges the unpruned
count, so a step's videos fit the budget, and vLLM's memory profile already ran the
largest batch the budget allows as one call. Under that scheduler the stopgap only
costs: one vision-tower call and one scoring pass per video instead of one per step.
How: while `_execute_mm_encoder` runs, for a ShaRP model under SharpScheduler, the
runner's `is_multimodal_pruning_enabled` reads False. In 0.32 that method reads the flag
for this choice alone (tests/plugin/test_register.py checks the source); it is restored
before the method returns. Under any other scheduler nothing changes.
Remove when: vLLM's scheduler charges pruned items their unpruned work and the runner
drops the stopgap.
"""

from __future__ import annotations

import functools

_MARK = "_sharp_batched_video_encoding_patched"


def runs_sharp_scheduler(vllm_config) -> bool:
    """Whether this engine's scheduler bounds a step by unpruned visual tokens."""
    from sharp_plugin.vllm.scheduler import SharpScheduler, bounds_unpruned_work

    configured = vllm_config.scheduler_config.scheduler_cls
    if configured is None:
        return False
    try:
        cls = vllm_config.scheduler_config.get_scheduler_cls()
    except Exception:  # an unimportable name: vLLM reports it where it builds the scheduler
        return False
    return cls is SharpScheduler or bounds_unpruned_work(cls)


def patch_batched_video_encoding() -> bool:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner, _MARK, False):
        return True
    original = GPUModelRunner._execute_mm_encoder

    @functools.wraps(original)
    def _execute_mm_encoder(self, *args, **kwargs):
        if not _encodes_videos_together(self):
            return original(self, *args, **kwargs)
        self.is_multimodal_pruning_enabled = False
        try:
            return original(self, *args, **kwargs)
        finally:
            self.is_multimodal_pruning_enabled = True

    GPUModelRunner._execute_mm_encoder = _execute_mm_encoder
    setattr(GPUModelRunner, _MARK, True)
    return True


def _encodes_videos_together(runner) -> bool:
    """Decided once per runner: the model and the scheduler do not change."""
    decided = getattr(runner, "_sharp_encodes_videos_together", None)
    if decided is None:
        from sharp_plugin.vllm.model import SharpModelMixin

        model = runner.get_model()
        decided = (
            runner.is_multimodal_pruning_enabled
            and isinstance(model, SharpModelMixin)
            and runs_sharp_scheduler(runner.vllm_config)
        )
        runner._sharp_encodes_videos_together = decided
    return decided
