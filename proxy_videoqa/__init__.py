"""A synthetic video-QA proxy task and the small Qwen2.5-VL the project trains on it.

It exists because this project has no real model weights and no GPU: a model trained
here on clips with checkable single-word answers lets the pruning methods be compared
honestly (bench/quality.py) and gives the server a default model whose answers mean
something. It is a proxy, not the paper's benchmark.

Nothing here imports vLLM. Modules:
- geometry: clip size, patch grid and frame rate shared by generator, trainer and server
- clips: the deterministic clip generator (tasks and splits)
- pixels: the Qwen2-VL video processor's patch layout, without running the processor
- tokenizer: a byte-level BPE whose answers are single tokens
- checkpoint: model config, and saving a checkpoint that vLLM loads unchanged
- positions: the M-RoPE position ids vLLM computes at inference
- batches: collating clips into training batches
- held_out: the held-out evaluation clips
- train: the training loop (resumable)
"""
