"""Building blocks shared by the UNets: float32 normalisation, timestep embeddings, attention.

Low-precision rule (docs/deployment.md §4): GroupNorm, the timestep embedding and softmax run in float32
whatever dtype the convolutions use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics and affine maths (parameters stay float32), output in the input dtype.

    Eager, the native kernels already accumulate in float32 for fp16/bf16 inputs (CUDA: ``acc_type``; CPU: the
    mixed-dtype path), so the input goes in as it is, without a float32 copy of the activation and a cast back:
    the CUDA kernel reads weight and bias in the input's dtype (cast here, C values), the CPU kernel takes the
    float32 ones. Traced (``torch.compile``, ONNX export) the cast is explicit, so an exported fp16 graph
    computes the norm in float32 (docs/deployment.md §4) and Inductor fuses the casts into its kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or torch.compiler.is_compiling():
            return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)
        weight, bias = self.weight, self.bias
        if x.is_cuda and weight is not None:
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)


def sinusoidal_embedding(t: torch.Tensor, dim: int, *, sin_first: bool, denominator_offset: int) -> torch.Tensor:
    """Timestep embedding (B, dim) in float32 from timestep values t (B,).

    Frequencies f_k = exp(−ln(10000)·k/(half − offset)), k < half = dim // 2. ADM: cos first, offset 0;
    DDPM: sin first, offset 1.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - denominator_offset)
    )
    args = t.float()[:, None] * freqs[None]
    parts = [torch.sin(args), torch.cos(args)] if sin_first else [torch.cos(args), torch.sin(args)]
    emb = torch.cat(parts, dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def exporting() -> bool:
    """Whether the model is being traced for ONNX export (``torch.export``-based or TorchScript-based)."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q kᵀ·scale) v for q, k, v of shape (B, heads, T, ch); softmax in float32.

    float32 inputs, and low-precision CUDA tensors (eager or under ``torch.compile``), go through
    scaled_dot_product_attention (its CUDA kernels accumulate the softmax in float32). Low-precision tensors on
    CPU or under ONNX export use explicit float32 logits and softmax, so an exported fp16/bf16 graph keeps
    Softmax in float32.
    """
    fused = q.dtype == torch.float32 or (q.is_cuda and not exporting())
    if fused:  # strided views take a slow path: pass contiguous tensors
        return F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(), scale=scale)
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    return torch.matmul(torch.softmax(logits, dim=-1).to(v.dtype), v)


def convert_convs(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the weights of every Conv1d/Conv2d under ``module`` to ``dtype`` (norms and linears untouched)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            m.to(dtype)
