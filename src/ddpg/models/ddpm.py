"""The DDPM ``Model`` (Ho et al. 2020; the CelebA-HQ architecture of DDIM/SDEdit/DDRM/DDPG), weight-compatible
with ``celeba_hq.ckpt`` and the bundled ``face64`` prior.

forward(x (B,3,H,W) float32, t (B,) float32 timestep values) → ε (B,3,H,W) float32. Attention sits at the
feature-map sizes in ``attn_resolutions`` (relative to ``image_size``). H, W multiples of 2^(levels − 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nn import GroupNorm32, attention, convert_convs, sinusoidal_embedding


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-6)


class Upsample(nn.Module):
    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    """Zero pad (0,1,0,1), then a stride-2 3×3 conv without padding; or 2×2 average pooling."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb)).to(h.dtype)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention, softmax(qᵀk·C^−½)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (B, 1, HW, C)
            return t.reshape(b, 1, c, hh * ww).transpose(-1, -2)

        a = attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)), scale=c**-0.5)
        return x + self.proj_out(a.transpose(-1, -2).reshape(b, c, hh, ww))


class _Level(nn.Module):
    """One resolution level: ``block``, ``attn`` and an optional ``downsample``/``upsample``."""

    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Temb(nn.Module):
    def __init__(self, ch: int, temb_ch: int):
        super().__init__()
        self.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])


class DDPMModel(nn.Module):
    """DDPM UNet. ``config`` uses the reference's field names (see configs/priors/celeba_hq.yaml)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        ch = int(config["ch"])
        ch_mult = tuple(config["ch_mult"])
        nrb = int(config["num_res_blocks"])
        attn_res = set(int(r) for r in config.get("attn_resolutions", ()))
        dropout = float(config.get("dropout", 0.0))
        with_conv = bool(config.get("resamp_with_conv", True))
        in_channels = int(config.get("in_channels", 3))
        out_ch = int(config.get("out_ch", 3))
        res = int(config.get("image_size", config.get("resolution", 256)))
        self.ch, self.num_res_blocks = ch, nrb
        self.num_levels = len(ch_mult)
        self.out_channels = out_ch
        temb_ch = 4 * ch
        self.temb = _Temb(ch, temb_ch)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        block_in = ch
        for i, m in enumerate(ch_mult):
            level = _Level()
            block_in, block_out = ch * in_mult[i], ch * m
            for _ in range(nrb):
                level.block.append(ResnetBlock(block_in, block_out, temb_ch, dropout))
                block_in = block_out
                if res in attn_res:
                    level.attn.append(AttnBlock(block_in))
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in, with_conv)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, temb_ch, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, temb_ch, dropout)
        up_levels = []
        for i in reversed(range(len(ch_mult))):
            level = _Level()
            block_out = skip_in = ch * ch_mult[i]
            for j in range(nrb + 1):
                if j == nrb:
                    skip_in = ch * in_mult[i]
                level.block.append(ResnetBlock(block_in + skip_in, block_out, temb_ch, dropout))
                block_in = block_out
                if res in attn_res:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample(block_in, with_conv)
                res *= 2
            up_levels.insert(0, level)
        self.up = nn.ModuleList(up_levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        self.torso_dtype = torch.float32

    def to_dtype(self, dtype: torch.dtype) -> DDPMModel:
        """Convolutions of conv_in and the down/mid/up blocks in ``dtype``; time MLP, norms, the output
        head and attention softmax stay float32. I/O stays float32."""
        for part in (self.conv_in, self.down, self.mid, self.up):
            convert_convs(part, dtype)
        self.torso_dtype = dtype
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        temb = sinusoidal_embedding(t, self.ch, sin_first=True, denominator_offset=1)
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](temb)))
        hs = [self.conv_in(x.to(self.torso_dtype))]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                if len(level.attn):
                    h = level.attn[j](h)
                hs.append(h)
            if i != self.num_levels - 1:
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i in reversed(range(self.num_levels)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h.float())))
