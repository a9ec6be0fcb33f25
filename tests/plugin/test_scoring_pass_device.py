"""The scoring pass never makes the host wait for the device.

It runs here on PyTorch's `meta` device, which has shapes but no data: reading any
device value on the host (`.item()`, `int()`, `.tolist()`, `.cpu()`) raises. A dispatch
mode records every host-to-device copy that is not `non_blocking`: on a GPU such a copy
waits for all the work queued before it. The decoder is a stand-in with the calling
convention of vLLM's Qwen2 decoder layers (what DecoderScoringPass calls), since
vLLM's layers cannot be built outside an engine; their numerics are checked against
Hugging Face on the real engine (tests/plugin/test_engine_reference.py)."""

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sharp_plugin.core.blocked_attention import BlockBudget
from sharp_plugin.core.masks import SegmentMask
from sharp_plugin.vllm.scoring_layout import ItemLayout
from sharp_plugin.vllm.scoring_pass import DecoderScoringPass

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 32, 4, 2, 8, 50


class _RMSNorm(nn.Module):
    def forward(self, x, residual=None):
        if residual is None:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        residual = x + residual
        return self.forward(residual), residual


class _Linear(nn.Linear):
    def forward(self, x):  # vLLM's parallel linears return (output, bias)
        return super().forward(x), None


class _Rotary(nn.Module):
    def forward(self, positions, q, k):
        angle = positions[0].float()[:, None]  # [L, 1]: enough to make positions matter
        return q * torch.cos(angle), k * torch.sin(angle)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = HEADS, KV_HEADS, HEAD_DIM
        self.q_size, self.kv_size = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
        self.scaling = HEAD_DIM**-0.5
        self.qkv_proj = _Linear(HIDDEN, self.q_size + 2 * self.kv_size)
        self.o_proj = _Linear(self.q_size, HIDDEN)
        self.rotary_emb = _Rotary()


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = _RMSNorm(), _RMSNorm()
        self.self_attn = _Attention()
        self.mlp = nn.Sequential(nn.Linear(HIDDEN, 2 * HIDDEN), nn.SiLU(), nn.Linear(2 * HIDDEN, HIDDEN))


class _Decoder(nn.Module):
    def __init__(self, num_layers: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(_Layer() for _ in range(num_layers))

    def embed_input_ids(self, ids):
        return self.embed(ids)


class _BlockingHostToDevice(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bound = dict(zip((a.name for a in func._schema.arguments), args, strict=False)) | kwargs
        if func.overloadpacket in (torch.ops.aten.to, torch.ops.aten._to_copy):
            source, target = bound["self"].device, bound.get("device")
        elif func.overloadpacket is torch.ops.aten.copy_:
            source, target = bound["src"].device, bound["self"].device
        else:
            source = target = None
        if target is not None and torch.device(target) != source and not bound.get("non_blocking"):
            self.copies.append(f"{source} -> {target}")
        return func(*args, **kwargs)


def _layout(num_prefix: int, num_visual: int, num_suffix: int, tokens_per_group: int) -> ItemLayout:
    length = num_prefix + num_visual + num_suffix
    return ItemLayout(
        prefix_ids=torch.randint(0, VOCAB, (num_prefix,)),
        suffix_ids=torch.randint(0, VOCAB, (num_suffix,)),
        query_from=1,
        positions=torch.arange(length).expand(3, -1).clone(),
        tokens_per_group=tokens_per_group,
    )


def test_the_scoring_pass_never_waits_on_the_device():
    # Small row blocks, so the blocked attention and its strip masks run many times.
    budget = BlockBudget(scratch_bytes=1, min_rows=5)
    with torch.device("meta"):
        decoder = _Decoder(num_layers=3)
    visual = torch.empty(48, HIDDEN, device="meta")
    recorder = _BlockingHostToDevice()
    for mask in (SegmentMask(0), SegmentMask(2), SegmentMask(2, local=True)):
        with recorder:
            scoring = DecoderScoringPass(decoder, 2, _layout(3, 48, 7, tokens_per_group=8), budget=budget)
            result = scoring(visual, mask)
        assert result.scores.shape == (48,) and result.scores.device.type == "meta"
        assert result.hidden.shape == (48, HIDDEN)
    assert recorder.copies == []


def test_the_recorder_sees_a_blocking_copy():
    """The check above can fail: a plain .to(device) is recorded, a non_blocking one not."""
    recorder = _BlockingHostToDevice()
    with recorder, torch.inference_mode():  # as in the pass: .to is not decomposed there
        torch.arange(4).to("meta")
        torch.arange(4).to("meta", non_blocking=True)
        torch.empty(4, device="meta").copy_(torch.arange(4))
    with recorder:
        torch.arange(4).to("meta")
    assert recorder.copies == ["cpu -> meta"] * 3
