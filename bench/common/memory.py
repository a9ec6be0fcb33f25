"""A process's memory, as the benches read it on Linux: its RSS and its peak (VmHWM),
which can be reset, and an allocator setting under which RSS follows the live tensors."""

from __future__ import annotations

import ctypes
from pathlib import Path

# The allocator of a process that measures memory: every allocation over 64 KiB gets its
# own mapping, unmapped when freed, so peak RSS follows the live tensors (and the kernels'
# scratch). With glibc's default, its dynamic mmap threshold moves freed [N, D] blocks
# into the heap, which keeps them: that slack was over a third of the peak at hidden 768
# and swung from run to run. What a GPU's caching allocator adds is its own matter.
LIVE_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(64 << 10)}


def rss_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the OS, so that new allocations show in
    RSS (vLLM's CPU worker preloads tcmalloc; elsewhere glibc)."""
    process = ctypes.CDLL(None)
    if hasattr(process, "MallocExtension_ReleaseFreeMemory"):
        process.MallocExtension_ReleaseFreeMemory()
    elif hasattr(process, "malloc_trim"):
        process.malloc_trim(0)
