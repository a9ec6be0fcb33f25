"""Patches of vLLM internals. Each one is listed in docs/patches.md with its target,
why, how, and when it can go. They are installed by `apply_patches()` (called from
`sharp_plugin.register`) after a version check, never as an import side effect."""

from __future__ import annotations

from vllm.logger import init_logger

from .batched_video_encoding import patch_batched_video_encoding
from .cpu_runner_pruning_flag import patch_cpu_runner_pruning_flag

logger = init_logger(__name__)

# The plugin reaches into vLLM internals that change between minors; the GPU image
# and the CPU wheel both pin this minor.
SUPPORTED_VLLM_MINOR = (0, 32)


def vllm_minor() -> tuple[int, int]:
    import vllm

    major, minor = vllm.__version__.split(".")[:2]
    return int(major), int(minor)


def check_vllm_version() -> None:
    found = vllm_minor()
    if found != SUPPORTED_VLLM_MINOR:
        raise RuntimeError(
            f"sharp-serve supports vLLM {'.'.join(map(str, SUPPORTED_VLLM_MINOR))}.x, found "
            f"{'.'.join(map(str, found))}; install sharp-serve[cpu] or sharp-serve[gpu]"
        )


def apply_patches() -> list[str]:
    """Install every patch that applies here; returns the names installed."""
    check_vllm_version()
    installed = []
    if patch_cpu_runner_pruning_flag():
        installed.append("cpu_runner_pruning_flag")
    if patch_batched_video_encoding():
        installed.append("batched_video_encoding")
    return installed
