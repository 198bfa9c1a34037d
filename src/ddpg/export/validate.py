"""Accuracy check of an exported prior against the PyTorch prior in float32 (docs/deployment.md §12).

Inputs are real (x_t, t) pairs: the bundled sample face and random images, forward-diffused at every checked
timestep (default 999, 500, 100, 0), at every checked batch size (an export's min and max batch). Statistics
over all outputs: max |Δ|, relative L2 ‖Δ‖/‖ref‖, median and 99th percentile of |Δ|, and the relative L2 per
timestep. Pass criterion (explicit, Polygraphy-like): the worst timestep's relative L2 ≤ ``rtol`` and, when
``atol`` is given, max |Δ| ≤ ``atol``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ddpg.samples import sample_path
from ddpg.schedule import Schedule

DEFAULT_TIMESTEPS = (999, 500, 100, 0)
DEFAULT_RTOL = {"fp32": 1e-5, "fp16": 1e-2, "bf16": 1e-2}


def default_rtol(precision: str) -> float:
    """Relative-L2 tolerance of an export of ``precision`` (fp32 1e-5, fp16/bf16 1e-2)."""
    return DEFAULT_RTOL[precision]


@dataclass
class ValidationReport:
    """Errors of an export against the float32 PyTorch prior. |Δ| statistics over every output element."""

    precision: str
    device: str
    rtol: float
    atol: float | None
    batches: list[int]
    timesteps: list[int]
    max_abs: float
    rel_l2: float
    median_abs: float
    p99_abs: float
    per_timestep: dict[int, float]  # relative L2 per timestep
    worst_timestep: int
    passed: bool
    seconds: float

    @property
    def worst_rel_l2(self) -> float:
        return self.per_timestep[self.worst_timestep]

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        bound = f"rel L2 ≤ {self.rtol:g}" + (f", max |Δ| ≤ {self.atol:g}" if self.atol is not None else "")
        per_t = ", ".join(f"t={t}: {e:.2e}" for t, e in self.per_timestep.items())
        return (f"{verdict} ({bound}) on {self.device}, batches {self.batches}: max |Δ| {self.max_abs:.3e}, "
                f"rel L2 {self.rel_l2:.3e}, median |Δ| {self.median_abs:.3e}, p99 |Δ| {self.p99_abs:.3e}; "
                f"worst timestep {self.worst_timestep} (rel L2 {self.worst_rel_l2:.3e}); per timestep {per_t}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_timestep"] = {str(k): v for k, v in self.per_timestep.items()}
        return d


def sample_image(size: tuple[int, int]) -> torch.Tensor:
    """The bundled sample face, (3, H, W) in [-1, 1], resized to ``size``."""
    with Image.open(sample_path()) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    img = torch.from_numpy(arr).permute(2, 0, 1)[None]
    return F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def validation_inputs(batch: int, timesteps: Sequence[int], size: tuple[int, int], schedule: Schedule,
                      generator: torch.Generator, num_classes: int | None = None):
    """Calls covering every timestep at this batch size: yields (x_t (B,3,H,W), t (B,), y (B,) | None).
    Sample k of the sweep uses the real image when k is even, a random image otherwise."""
    real = sample_image(size)
    ab = schedule.alpha_bar_tensor()
    calls = math.ceil(len(timesteps) / batch)
    for c in range(calls):
        ts = [timesteps[(c * batch + i) % len(timesteps)] for i in range(batch)]
        x0 = torch.stack([real if (c * batch + i) % 2 == 0 else
                          (0.5 * torch.randn(3, *size, generator=generator)).clamp(-1, 1) for i in range(batch)])
        a = ab[torch.tensor(ts) + 1].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=generator)
        y = None if num_classes is None else torch.randint(0, num_classes, (batch,), generator=generator)
        yield x_t, torch.tensor(ts, dtype=torch.float32), y


def reference_on(reference: Callable, device: str | torch.device) -> Callable:
    """``reference`` computing on ``device``: a module whose tensors live elsewhere runs with copies of its
    parameters and buffers on ``device`` (``torch.func.functional_call``; the module itself is not moved); any
    other callable is returned as it is."""
    if not isinstance(reference, torch.nn.Module):
        return reference
    device = torch.device(device)
    tensors = {**dict(reference.named_parameters()), **dict(reference.named_buffers())}
    if all(v.device.type == device.type and (device.index is None or v.device.index == device.index)
           for v in tensors.values()):
        return reference
    moved = {name: value.detach().to(device) for name, value in tensors.items()}
    return lambda *args: torch.func.functional_call(reference, moved, args)


def _reference_eps(reference: Callable, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                   device: torch.device) -> torch.Tensor:
    """The reference's ε (on the CPU, float32) for inputs computed on ``device``, TF32 off."""
    args = (x.to(device), t.to(device)) + (() if y is None else (y.to(device),))
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            return reference(*args)[:, :3].float().cpu()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def validate_onnx(onnx_path: str | Path, reference: Callable, *, precision: str = "fp32",
                  batches: Sequence[int] = (1, 2), timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
                  size: tuple[int, int], schedule: Schedule, num_classes: int | None = None,
                  rtol: float | None = None, atol: float | None = None, device: str = "cpu",
                  seed: int = 0) -> ValidationReport:
    """Run the ONNX model under ONNX Runtime on ``device`` and ``reference(x, t[, y])`` (the float32 prior;
    output channels beyond 3 are ignored), also on ``device`` (``reference_on``), on the same inputs; compare.
    ``rtol`` defaults per precision."""
    from ddpg.runtime.backends.onnxruntime import make_session

    start = time.perf_counter()
    session = make_session(onnx_path, device)
    report = validate_runner(lambda feeds: session.run(["eps"], feeds)[0], reference, precision=precision,
                             batches=batches, timesteps=timesteps, size=size, schedule=schedule,
                             num_classes=num_classes, rtol=rtol, atol=atol, device=device, seed=seed)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def validate_runner(run: Callable[[dict], np.ndarray], reference: Callable, *, precision: str = "fp32",
                    batches: Sequence[int] = (1, 2), timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
                    size: tuple[int, int], schedule: Schedule, num_classes: int | None = None,
                    rtol: float | None = None, atol: float | None = None, device: str = "cpu",
                    seed: int = 0) -> ValidationReport:
    """Compare an exported model, ``run({"x", "t"[, "y"]} numpy feeds) -> eps`` (ONNX Runtime, OpenVINO), with
    ``reference(x, t[, y])`` computed on ``device`` on the same inputs (:func:`validate_onnx`)."""
    rtol = default_rtol(precision) if rtol is None else float(rtol)
    start = time.perf_counter()
    reference = reference_on(reference, device)
    generator = torch.Generator().manual_seed(seed)
    diffs, sq_err, sq_ref = [], {t: 0.0 for t in timesteps}, {t: 0.0 for t in timesteps}
    for batch in batches:
        for x, t, y in validation_inputs(batch, timesteps, size, schedule, generator, num_classes):
            feeds = {"x": x.numpy(), "t": t.numpy()} | ({} if y is None else {"y": y.numpy()})
            got = torch.from_numpy(np.asarray(run(feeds))).double()
            ref = _reference_eps(reference, x, t, y, torch.device(device)).double()
            delta = got - ref
            diffs.append(delta.abs().flatten())
            for i, ti in enumerate(t.tolist()):
                sq_err[int(ti)] += float(delta[i].square().sum())
                sq_ref[int(ti)] += float(ref[i].square().sum())
    abs_delta = torch.cat(diffs).numpy()
    per_t = {t: error_ratio(sq_err[t], sq_ref[t]) for t in timesteps}
    worst = max(per_t, key=per_t.get)
    max_abs = float(abs_delta.max())
    passed = per_t[worst] <= rtol and (atol is None or max_abs <= atol)
    return ValidationReport(
        precision=precision, device=str(device), rtol=rtol, atol=atol, batches=list(batches),
        timesteps=list(timesteps), max_abs=max_abs, rel_l2=error_ratio(sum(sq_err.values()), sum(sq_ref.values())),
        median_abs=float(np.median(abs_delta)), p99_abs=float(np.quantile(abs_delta, 0.99)),
        per_timestep=per_t, worst_timestep=worst, passed=bool(passed),
        seconds=round(time.perf_counter() - start, 3))


def error_ratio(sq_err: float, sq_ref: float) -> float:
    """‖Δ‖/‖ref‖; 0 when both vanish, inf when only the reference does."""
    if sq_ref > 0:
        return math.sqrt(sq_err / sq_ref)
    return 0.0 if sq_err == 0 else math.inf
