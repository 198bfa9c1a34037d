"""The fast torch denoiser: a prior in fp16/bf16 with optional ``torch.compile`` (and, with it, channels-last
memory) behind the denoiser interface.

Memory layout per mode (``default_channels_last``): eager (plain or inside a CUDA graph) keeps NCHW, because
CUDA's ``native_group_norm`` makes its input contiguous (NCHW) whatever its layout (aten
``native/group_norm.cpp``), so a channels-last UNet pays a layout round trip at every GroupNorm; under
``torch.compile`` Inductor generates its own norm kernels and channels-last suits the convolutions. Not yet
measured on a GPU: ``ddpg bench``/``gpu_session.sh`` time both layouts (``--channels-last/--no-channels-last``;
configurations ``fp16-graph-cl`` and ``fp16-compile-graph-nchw``) so the first GPU session can confirm or flip
this default.

``FastDenoiser(prior, precision="fp16")(x_t (B,3,H,W) float32, t (B,) float32) -> eps (B,3,H,W) float32``:
the same contract as ``ddpg.models.Denoiser``; only the UNet torso runs in low precision (``prior.to_dtype``),
so the guidance maths downstream stays float32. Attention uses ``scaled_dot_product_attention`` inside the
models (flash / memory-efficient kernels on CUDA). On CPU nothing is compiled unless asked.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ddpg.errors import ConfigError
from ddpg.models.denoiser import TORCH_CAPABILITIES, prediction_type
from ddpg.precisions import parse_precision, precision_name
from ddpg.schedule import Schedule

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")
# torch.compile modes whose Inductor output records its own CUDA graphs (``triton.cudagraphs``; see
# ``torch._inductor.list_mode_options``): they cannot run inside the whole-step graph of ``GraphRunner``
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


def default_channels_last(compile: bool) -> bool:
    """The memory layout of a mode when none is asked for: channels-last only under ``torch.compile`` (see the
    module docstring)."""
    return bool(compile)


class FastDenoiser:
    """ε-prediction with a prior converted for speed. Same interface as ``ddpg.models.Denoiser``.

    ``prior``: a UNet module or a ``Denoiser`` (its ``.prior`` and class labels are used). The module is
    deep-copied (``inplace=False``) before ``to_dtype``/channels-last, so the caller's module is untouched.
    ``compile``: wrap the module in ``torch.compile(mode=compile_mode)``; compilation happens on the first call.
    ``channels_last``: the memory layout; None = ``default_channels_last(compile)``.
    ``prior`` keeps the uncompiled converted module (FLOP counting, export); ``compile_mode`` is None when it
    is not compiled.
    """

    backend = "torch"
    capabilities = TORCH_CAPABILITIES
    info = None

    def __init__(self, prior, *, precision: str | torch.dtype = "fp32", channels_last: bool | None = None,
                 compile: bool = False, compile_mode: str = "default", class_labels: torch.Tensor | None = None,
                 device: torch.device | str | None = None, inplace: bool = False):
        if hasattr(prior, "prior") and not isinstance(prior, nn.Module):  # a Denoiser
            class_labels = prior.class_labels if class_labels is None else class_labels
            prior = prior.prior
        if not isinstance(prior, nn.Module):
            raise ConfigError(f"FastDenoiser needs a torch prior module, got {type(prior).__name__}")
        if compile_mode not in COMPILE_MODES:
            raise ConfigError(f"compile_mode {compile_mode!r}: choose one of {', '.join(COMPILE_MODES)}")
        self.dtype = parse_precision(precision)
        module = prior if inplace else copy.deepcopy(prior)
        if device is not None:
            module = module.to(device)
        if self.dtype != torch.float32:
            if not hasattr(module, "to_dtype"):
                raise ConfigError(f"prior {getattr(module, 'config', {}).get('kind')!r} has no mixed-precision "
                                  f"path (to_dtype); use precision fp32")
            module.to_dtype(self.dtype)
        self.channels_last = default_channels_last(compile) if channels_last is None else bool(channels_last)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        module.eval()
        self.compile_mode: str | None = compile_mode if compile else None
        self.module = torch.compile(module, mode=compile_mode, dynamic=False) if compile else module
        self.config: dict = getattr(prior, "config", {})
        self.name: str | None = self.config.get("name")
        # the UNets do no host synchronisation or host-to-device copy per call (the analytic prior does)
        self.graph_safe = self.config.get("kind") in ("ddpm", "adm")
        self.schedule = Schedule.from_config(self.config)
        self.prediction = prediction_type(self)
        self.prior = module
        tensors = [*module.parameters(), *module.buffers()]
        self.device = tensors[0].device if tensors else torch.device("cpu")
        self.class_labels = class_labels
        self._labels_cache: dict = {}

    def options(self) -> dict:
        """The speed options, for reports and sidecars."""
        return {"precision": precision_name(self.dtype), "channels_last": self.channels_last,
                "compile": self.compile_mode is not None, "compile_mode": self.compile_mode}

    def _labels(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """Class labels on ``device``, built once per (batch, device) so calls do no host copies."""
        if self.class_labels is None:
            return None
        key = (batch, str(device))
        if key not in self._labels_cache:
            labels = torch.as_tensor(self.class_labels).to(device)
            self._labels_cache[key] = (labels.expand(batch) if labels.numel() == 1 else labels).contiguous()
        return self._labels_cache[key]

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Every output channel, float32 (B, C_out, H, W)."""
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        out = self.module(x_t, t, self._labels(x_t.shape[0], x_t.device))
        return out.float().contiguous()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model_output(x_t, t)[:, :3]


