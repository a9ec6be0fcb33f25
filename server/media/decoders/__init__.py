"""Video decoder backends, chosen by `media.decoder` (docs: README, "Media"):

- `pyav` (FFmpeg through PyAV), the default: decodes forward between sampled frames and
  drops unreferenced frames; exact, and the fastest in every cell of the decode bench.
  CPU only.
- `decord` (decord2, the maintained fork of decord): seek-samples. decord2 3.4.0 returns
  wrong frames on 10-minute 720p and 1080p clips (bench/results/decode.md, "frames").
- `torchcodec`: an optional extra that loads where CUDA is installed; CPU or NVDEC.

`media.decode_device: cuda` decodes on the GPU with decord (a CUDA build) or torchcodec."""

from __future__ import annotations

from ...settings import GPU_DECODERS, DecodeDevice, DecoderName
from .base import Decoder, InvalidMedia, VideoInfo

__all__ = [
    "GPU_DECODERS", "DecodeDevice", "Decoder", "DecoderName", "InvalidMedia", "VideoInfo", "get_decoder",
]  # fmt: skip


def get_decoder(name: DecoderName = "pyav", device: DecodeDevice = "cpu") -> Decoder:
    if device == "cuda" and name not in GPU_DECODERS:
        raise ValueError(f"media.decoder {name} decodes on the CPU only; GPU decoders: {GPU_DECODERS}")
    if name == "decord":
        from .decord_reader import DecordDecoder

        return DecordDecoder(device)
    if name == "pyav":
        from .pyav_reader import PyAVDecoder

        return PyAVDecoder()
    if name == "torchcodec":
        from .torchcodec_reader import TorchCodecDecoder

        return TorchCodecDecoder(device)
    raise ValueError(f"unknown decoder {name!r}")
