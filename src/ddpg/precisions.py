"""The one table of UNet precisions: name ("fp32" | "fp16" | "bf16") ↔ torch dtype."""

from __future__ import annotations

import torch

from ddpg.errors import ConfigError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
def parse_precision(precision: str | torch.dtype, name: str = "precision") -> torch.dtype:
    """"fp32" | "fp16" | "bf16" (or a torch dtype among those) → torch dtype; ConfigError naming ``name`` (the
    option it came from) otherwise."""
    if isinstance(precision, torch.dtype):
        if precision not in PRECISIONS.values():
            raise ConfigError(f"{name} {precision}: choose one of {', '.join(PRECISIONS)}")
        return precision
    if precision not in PRECISIONS:
        raise ConfigError(f"{name} {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in PRECISIONS.items()}[dtype]
