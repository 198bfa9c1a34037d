"""The guided-diffusion ADM ``UNetModel`` (Dhariwal & Nichol 2021), weight-compatible with the released
checkpoints (parameter names and shapes as in ``256x256_diffusion*.pt`` and ``ffhq_10m.pt``).

forward(x (B,3,H,W) float32, t (B,) float32 timestep values, y (B,) int64 labels) → (B, 3 or 6, H, W) float32.
H and W must be multiples of 2^(levels − 1). No gradient checkpointing; attention uses the legacy QKV order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nn import GroupNorm32, attention, convert_convs, sinusoidal_embedding


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-5)


class Downsample(nn.Module):
    """Stride-2 3×3 conv (``op``) or 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2, then an optional 3×3 conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int,
                 use_scale_shift_norm: bool, up: bool = False, down: bool = False):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            _norm(out_channels), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over positions; heads split before q/k/v (``QKVAttentionLegacy``)."""

    def __init__(self, channels: int, num_heads: int, num_head_channels: int):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # (B, 3C, T)
        T = qkv.shape[-1]
        ch = c // self.num_heads
        q, k, v = qkv.reshape(b, self.num_heads, 3 * ch, T).transpose(-1, -2).split(ch, dim=-1)
        a = attention(q, k, v, scale=ch**-0.5)  # (B, heads, T, ch); (ch^-1/4)² as in ADM
        h = self.proj_out(a.transpose(-1, -2).reshape(b, c, T))
        return (x + h).reshape(b, c, *spatial)


class _Sequential(nn.Sequential):
    """A block list whose ResBlocks take the embedding (``TimestepEmbedSequential``)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def parse_channel_mult(value, image_size: int) -> tuple[int, ...]:
    """ADM's channel_mult: a list, a comma string, or "" for the per-resolution default."""
    if value in ("", None):
        defaults = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if image_size not in defaults:
            raise ValueError(f"no default channel_mult for image_size {image_size}; give channel_mult")
        return defaults[image_size]
    if isinstance(value, str):
        return tuple(int(v) for v in value.split(","))
    return tuple(value)


def parse_attention_resolutions(value, image_size: int) -> tuple[int, ...]:
    """Feature-map sizes ("32,16,8" or a list) → downsample rates image_size // size."""
    sizes = [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    return tuple(image_size // s for s in sizes)


class UNetModel(nn.Module):
    """ADM UNet. ``config`` uses guided-diffusion's field names (see configs/priors/imagenet256_uncond.yaml)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        image_size = int(config["image_size"])
        mc = int(config["num_channels"])
        nrb = int(config["num_res_blocks"])
        mult = parse_channel_mult(config.get("channel_mult", ""), image_size)
        attn_ds = parse_attention_resolutions(config.get("attention_resolutions", ""), image_size)
        dropout = float(config.get("dropout", 0.0))
        heads = int(config.get("num_heads", 1))
        head_ch = int(config.get("num_head_channels", -1))
        heads_up = int(config.get("num_heads_upsample", -1))
        heads_up = heads if heads_up == -1 else heads_up
        ssn = bool(config.get("use_scale_shift_norm", False))
        updown = bool(config.get("resblock_updown", False))
        if config.get("use_new_attention_order", False):
            raise ValueError("use_new_attention_order=True is not supported (no released checkpoint uses it)")
        self.model_channels = mc
        self.out_channels = 6 if config.get("learn_sigma", False) else 3
        self.num_classes = int(config.get("num_classes", 1000)) if config.get("class_cond", False) else None
        ted = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, ted)

        ch = input_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([_Sequential(nn.Conv2d(3, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers: list[nn.Module] = [ResBlock(ch, ted, dropout, int(m * mc), ssn)]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads, head_ch))
                self.input_blocks.append(_Sequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(_Sequential(
                    ResBlock(ch, ted, dropout, ch, ssn, down=True) if updown else Downsample(ch, True, ch)
                ))
                chans.append(ch)
                ds *= 2
        self.middle_block = _Sequential(
            ResBlock(ch, ted, dropout, ch, ssn), AttentionBlock(ch, heads, head_ch), ResBlock(ch, ted, dropout, ch, ssn)
        )
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), ted, dropout, int(mc * m), ssn)]
                ch = int(mc * m)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads_up, head_ch))
                if level and i == nrb:
                    layers.append(ResBlock(ch, ted, dropout, ch, ssn, up=True) if updown else Upsample(ch, True, ch))
                    ds //= 2
                self.output_blocks.append(_Sequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(input_ch, self.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.downsample_factor = 2 ** (len(mult) - 1)
        self.torso_dtype = torch.float32

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's; a class-conditional config that does not state ``num_classes`` takes the count
        from the checkpoint's ``label_emb`` (the released ImageNet models have 1000)."""
        emb = state_dict.get("label_emb.weight")
        if (self.num_classes is not None and "num_classes" not in self.config and emb is not None
                and emb.shape[0] != self.num_classes and emb.shape[1:] == self.label_emb.weight.shape[1:]):
            self.num_classes = emb.shape[0]
            self.label_emb = nn.Embedding(self.num_classes, emb.shape[1])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def to_dtype(self, dtype: torch.dtype) -> UNetModel:
        """Convolutions of the input, middle and output blocks in ``dtype``; time MLP, embeddings, norms and
        the output head stay float32 (ADM's ``convert_to_fp16``). I/O stays float32."""
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            convert_convs(blocks, dtype)
        self.torso_dtype = dtype
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(sinusoidal_embedding(t, self.model_channels, sin_first=False, denominator_offset=0))
        if self.num_classes is not None:
            if y is None:
                raise ValueError("this prior is class-conditional: pass class labels y of shape (B,)")
            emb = emb + self.label_emb(y)
        h = x.to(self.torso_dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.float())
