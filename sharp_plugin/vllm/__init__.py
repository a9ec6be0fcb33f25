"""vLLM glue: thin, pinned to vLLM 0.32 (see docs/patches.md for every patch)."""
