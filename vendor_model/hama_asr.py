"""hama's phoneme recogniser, run by PyTorch from hama's own weights: so it runs everywhere.

The `hama` package (PyPI, Apache-2.0) ships its CTC phoneme recogniser as a weight pack
(`hama/assets/asr_waveform.hama`) and runs it with a native engine built for Linux and
macOS only. The network is small and standard, so this module runs the same weights in
PyTorch on any platform, Windows included. Against hama 1.7.0's engine it agrees on every
frame's best phone, and to within 0.02 in log-probability on clips under 30 s
(tests/test_hama_asr.py; bench/hama_asr.py measures it).

    16 kHz waveform (N,)
      -> reflect-pad 200, STFT (n_fft 400, hop 160: the pack's windowed kernels), power,
         80 mel bands (the pack's filterbank), log(max(., 1e-10)), rounded to float16
      -> stem conv (80 -> 144, kernel 3, stride 2) + GELU              (T = N // 320 + 1, 50 fps)
      -> 4 Conformer blocks: ½ FFN, self-attention (4 heads, no position code), conv module
         (GLU, depthwise 31, SiLU), ½ FFN, LayerNorm
      -> linear (144 -> 191) -> log-softmax                              (T, 191) log-probabilities

hama's engine stops at 30 s (3,000 STFT frames); this one has no such limit.
"""
from __future__ import annotations

import struct
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HamaRecogniser", "read_pack"]

PACK_MAGIC = b"HAMAPK"
HOP = 160
PAD = 200
DIM = 144
HEADS = 4
BLOCKS = 4
KERNEL = 31
N_CLASSES = 191


def read_pack(data: bytes) -> dict[str, np.ndarray]:
    """A hama weight pack -> {name: float32 array}. Layout: magic, 2 version bytes, u32 count,
    then per tensor u16 name length, name, u8 dtype (0 float32, 1 float16), u8 rank, u32 dims,
    u64 offset and u64 size into the data block that ends the file."""
    if data[: len(PACK_MAGIC)] != PACK_MAGIC:
        raise ValueError("not a hama weight pack (it does not start with HAMAPK)")
    count = struct.unpack_from("<I", data, 8)[0]
    cursor, entries = 12, []
    for _ in range(count):
        length = struct.unpack_from("<H", data, cursor)[0]
        name = data[cursor + 2 : cursor + 2 + length].decode()
        cursor += 2 + length
        dtype, rank = data[cursor], data[cursor + 1]
        shape = struct.unpack_from(f"<{rank}I", data, cursor + 2)
        offset, size = struct.unpack_from("<QQ", data, cursor + 2 + 4 * rank)
        cursor += 2 + 4 * rank + 16
        if dtype not in (0, 1):
            raise ValueError(f"hama weight pack: tensor {name!r} has unknown dtype code {dtype}")
        entries.append((name, np.float32 if dtype == 0 else np.float16, shape, offset, size))
    base = len(data) - max(offset + size for *_, offset, size in entries)  # the data block ends the file
    return {
        name: np.frombuffer(data, dtype, size // np.dtype(dtype).itemsize, base + offset).reshape(shape).astype(np.float32)
        for name, dtype, shape, offset, size in entries
    }


def _exported_order(weights: Mapping[str, np.ndarray], prefix: str) -> list[str]:
    """Names the ONNX export gave unnamed weights ("onnx::MatMul_829"), in graph order."""
    return sorted((k for k in weights if k.startswith(prefix)), key=lambda k: int(k.rsplit("_", 1)[1]))


class HamaRecogniser(nn.Module):
    """hama 1.7.0's waveform-to-phoneme CTC network. tokens: the 191 output classes."""

    def __init__(self, weights: Mapping[str, np.ndarray], tokens: list[str]):
        super().__init__()
        matmuls, convs = _exported_order(weights, "onnx::MatMul_"), _exported_order(weights, "onnx::Conv_")
        expected = {"stft_real_kernel": (201, 1, 400), "stft_imag_kernel": (201, 1, 400), "mel_fb": (201, 80),
                    "acoustic_model.model.proj.weight": (N_CLASSES, DIM, 1)}
        shapes_ok = all(name in weights and weights[name].shape == shape for name, shape in expected.items())
        if not shapes_ok or len(matmuls) != 6 * BLOCKS or len(convs) != 2 + 2 * BLOCKS or len(tokens) != N_CLASSES:
            raise ValueError("this hama weight pack is not the 1.7.0 recogniser this code runs (pin hama==1.7.0)")
        t = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in weights.items()}
        self.tokens = list(tokens)
        self.register_buffer("stft_real", t["stft_real_kernel"])
        self.register_buffer("stft_imag", t["stft_imag_kernel"])
        self.register_buffer("mel_fb", t["mel_fb"])
        self.stem = nn.Conv1d(80, DIM, 3, stride=2, padding=1)
        _assign(self.stem, t[convs[0]], t[convs[1]])
        self.blocks = nn.ModuleList(
            ConformerBlock(t, f"acoustic_model.model.blocks.{i}.", matmuls[6 * i : 6 * i + 6], convs[2 + 2 * i : 4 + 2 * i])
            for i in range(BLOCKS)
        )
        self.proj = nn.Conv1d(DIM, N_CLASSES, 1)
        _assign(self.proj, t["acoustic_model.model.proj.weight"], t["acoustic_model.model.proj.bias"])
        self.eval().requires_grad_(False)

    @staticmethod
    def num_frames(num_samples: int) -> int:
        return num_samples // (2 * HOP) + 1

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        """(N,) float32 16 kHz samples in [-1, 1] -> (N // 320 + 1, 191) log-probabilities."""
        x = samples.reshape(1, 1, -1)
        if x.shape[-1] <= PAD:  # too short to reflect (hama's engine reads past the end): pad with silence
            x = F.pad(x, (0, PAD + 1 - x.shape[-1]))  # frames are still counted from the real length
        x = F.pad(x, (PAD, PAD), mode="reflect")
        power = F.conv1d(x, self.stft_real, stride=HOP) ** 2 + F.conv1d(x, self.stft_imag, stride=HOP) ** 2  # (1, 201, Ts)
        log_mel = torch.log(torch.clamp(power[0].T @ self.mel_fb, min=1e-10))  # (Ts, 80)
        log_mel = log_mel.half().float()  # hama's graph casts the features to float16 here
        h = F.gelu(self.stem(log_mel.T[None]))[0].T  # (T, 144)
        for block in self.blocks:
            h = block(h)
        return torch.log_softmax(self.proj(h.T[None])[0].T, dim=-1)[: self.num_frames(samples.numel())]


def _assign(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    if module.weight.shape != weight.shape or module.bias.shape != bias.shape:
        raise ValueError(f"hama weight pack: expected {tuple(module.weight.shape)} weights, found {tuple(weight.shape)}")
    module.weight.data.copy_(weight)
    module.bias.data.copy_(bias)


def _layer_norm(t: Mapping[str, torch.Tensor], name: str) -> nn.LayerNorm:
    norm = nn.LayerNorm(DIM, eps=1e-5)
    _assign(norm, t[name + ".weight"], t[name + ".bias"])
    return norm


def _linear(weight_t: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """The export stores x @ W, so W is the transpose of nn.Linear's weight."""
    layer = nn.Linear(*weight_t.shape)
    _assign(layer, weight_t.T.contiguous(), bias)
    return layer


class ConformerBlock(nn.Module):
    def __init__(self, t: Mapping[str, torch.Tensor], prefix: str, matmuls: list[str], depthwise: list[str]):
        super().__init__()
        ffn1_in, ffn1_out, attn_in, attn_out, ffn2_in, ffn2_out = (t[name] for name in matmuls)
        self.ffn1 = nn.Sequential(_layer_norm(t, prefix + "ffn1.norm"), _linear(ffn1_in, t[prefix + "ffn1.fc1.bias"]),
                                  nn.SiLU(), _linear(ffn1_out, t[prefix + "ffn1.fc2.bias"]))
        self.attn_norm = _layer_norm(t, prefix + "attn_norm")
        self.qkv = _linear(attn_in, t[prefix + "attn.in_proj_bias"])
        self.out = _linear(attn_out, t[prefix + "attn.out_proj.bias"])
        self.conv_norm = _layer_norm(t, prefix + "conv.norm")
        self.pointwise1 = nn.Conv1d(DIM, 2 * DIM, 1)
        _assign(self.pointwise1, t[prefix + "conv.pointwise1.weight"], t[prefix + "conv.pointwise1.bias"])
        self.depthwise = nn.Conv1d(DIM, DIM, KERNEL, padding=KERNEL // 2, groups=DIM)  # batch norm folded in
        _assign(self.depthwise, t[depthwise[0]], t[depthwise[1]])
        self.pointwise2 = nn.Conv1d(DIM, DIM, 1)
        _assign(self.pointwise2, t[prefix + "conv.pointwise2.weight"], t[prefix + "conv.pointwise2.bias"])
        self.ffn2 = nn.Sequential(_layer_norm(t, prefix + "ffn2.norm"), _linear(ffn2_in, t[prefix + "ffn2.fc1.bias"]),
                                  nn.SiLU(), _linear(ffn2_out, t[prefix + "ffn2.fc2.bias"]))
        self.norm = _layer_norm(t, prefix + "norm")

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (T, 144) -> (T, 144)
        h = h + 0.5 * self.ffn1(h)
        q, k, v = self.qkv(self.attn_norm(h)).view(len(h), 3, HEADS, DIM // HEADS).permute(1, 2, 0, 3)  # 3 x (H, T, d)
        context = F.scaled_dot_product_attention(q, k, v)  # (H, T, d); scaled by 1/sqrt(d), no (T, T) kept
        h = h + self.out(context.transpose(0, 1).reshape(len(h), DIM))
        c = F.glu(self.pointwise1(self.conv_norm(h).T[None]), dim=1)  # (1, 144, T)
        h = h + self.pointwise2(F.silu(self.depthwise(c)))[0].T
        h = h + 0.5 * self.ffn2(h)
        return self.norm(h)
