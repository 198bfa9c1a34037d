"""``ddpg evaluate``: PSNR, SSIM and LPIPS of prediction folders against a ground-truth folder, with a CSV, a
summary and a comparison grid."""

from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path

import torch

from ddpg.api.report import Report
from ddpg.errors import ConfigError, DdpgError, InputError
from ddpg.io import StagedFiles, collect_inputs, load_image, save_image, save_json
from ddpg.metrics import LPIPS, psnr, ssim

METRIC_NOTES = {
    "psnr": "PSNR in dB: 10·log10(1/MSE) over all values of the [0, 1] images (prediction clamped); no "
            "quantisation, Y channel or border crop (as the DDPG paper).",
    "ssim": "SSIM: 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, valid filtering, averaged over "
            "positions and RGB channels.",
    "lpips": "LPIPS: AlexNet, lpips package v0.1 linear heads, on the saved images mapped to [-1, 1].",
}


def _gt_key(path: Path) -> str | None:
    """The pairing key of a ground-truth file, None for files that are outputs of ``restore``."""
    stem = path.stem
    if stem.endswith(("_restored", "_observed", "_observed_mask", "_grid")):
        return None
    return stem[: -len("_gt")] if stem.endswith("_gt") else stem


def _find(folder: Path, key: str, kinds: tuple[str, ...]) -> Path | None:
    for kind in kinds:
        for suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"):
            candidate = folder / f"{key}{kind}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _labels(preds: list[Path], labels: list[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(preds):
            raise ConfigError(f"{len(labels)} --label values for {len(preds)} --pred folders")
        names = list(labels)
    else:
        names = [p.resolve().name or str(p) for p in preds]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def evaluate(pred: list[str | Path] | str | Path, gt: str | Path, outdir: str | Path | None = None, *,
             obs: str | Path | None = None, labels: list[str] | None = None, grid_rows: int = 8,
             use_lpips: bool = True) -> Report:
    """PSNR, SSIM (and LPIPS when available locally) of one or more prediction folders against a
    ground-truth folder, paired by name: ground truth ``x.png`` (or ``x_gt.png``) ↔ prediction
    ``x_restored.png`` or ``x.png`` ↔ observation ``x_observed.png`` (``obs``, for the grid only).

    Writes ``metrics.csv`` (one row per image and method), ``summary.json``, ``summary.md`` and ``grid.png``
    (ground truth / observation / each method, first ``grid_rows`` images) into ``outdir`` (default:
    ``<first pred>/evaluation``). A missing or mis-sized prediction fails that image for that method."""
    from ddpg.cli.grid import comparison_grid

    preds = [Path(p) for p in ([pred] if isinstance(pred, (str, Path)) else pred)]
    if not preds:
        raise ConfigError("give at least one --pred folder")
    gt = Path(gt)
    for folder in [*preds, gt, *([Path(obs)] if obs is not None else [])]:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder")
    names = _labels(preds, labels)
    outdir = Path(outdir) if outdir is not None else preds[0] / "evaluation"
    lpips_metric, lpips_note = LPIPS.load() if use_lpips else (None, "LPIPS not computed (disabled)")
    gt_files, problems = collect_inputs([gt])
    report = Report(failed=[(str(p), why) for p, why in problems])
    pairs: dict[str, Path] = {}
    for path in gt_files:
        key = _gt_key(path)
        if key is not None and (key not in pairs or path.stem.endswith("_gt")):
            pairs[key] = path
    if not pairs:
        raise InputError(f"{gt}: no ground-truth images")
    rows: list[dict] = []
    grid: list[list[torch.Tensor | None]] = []
    for key, gt_path in sorted(pairs.items()):
        try:
            ref = load_image(gt_path)
        except DdpgError as exc:
            report.failed.append((str(gt_path), str(exc)))
            continue
        panels: list[torch.Tensor | None] = [ref]
        if obs is not None:
            o = _find(Path(obs), key, ("_observed", ""))
            panels.append(load_image(o) if o is not None else None)
        for folder, name in zip(preds, names, strict=True):
            p = _find(folder, key, ("_restored", ""))
            try:
                if p is None:
                    raise InputError(f"{folder}: no prediction for {gt_path.name} ({key}_restored.png or {key}.png)")
                img = load_image(p)
                if img.shape != ref.shape:
                    raise InputError(f"{p}: size {img.shape[2]}×{img.shape[1]} differs from the ground truth "
                                     f"{gt_path.name} ({ref.shape[2]}×{ref.shape[1]})")
            except DdpgError as exc:
                report.failed.append((str(p or folder), str(exc)))
                panels.append(None)
                continue
            row = {"image": key, "method": name, "psnr": psnr(img, ref),
                   "ssim": ssim(img, ref) if min(ref.shape[1:]) >= 11 else float("nan"),
                   "lpips": lpips_metric(img, ref) if lpips_metric is not None else float("nan")}
            rows.append(row)
            panels.append(img)
        if len(grid) < grid_rows:
            grid.append(panels)
    if not rows:
        raise InputError(f"no prediction could be evaluated against {gt}: " +
                         "; ".join(why for _, why in report.failed[:3]))
    summary = {"ground_truth": str(gt), "lpips": lpips_note or "computed", "definitions": METRIC_NOTES,
               "methods": {}}
    for folder, name in zip(preds, names, strict=True):
        mine = [r for r in rows if r["method"] == name]
        entry: dict = {"pred": str(folder), "images": len(mine)}
        for metric in ("psnr", "ssim", "lpips"):
            values = [r[metric] for r in mine if not math.isnan(r[metric])]
            entry[metric] = sum(values) / len(values) if values else None
        summary["methods"][name] = entry
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "method", "psnr", "ssim", "lpips"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows)
    lines = ["| method | images | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ |", "|---|---|---|---|---|"]
    for name, entry in summary["methods"].items():
        cells = [f"{entry['psnr']:.2f}" if entry["psnr"] is not None else "–",
                 f"{entry['ssim']:.4f}" if entry["ssim"] is not None else "–",
                 f"{entry['lpips']:.4f}" if entry["lpips"] is not None else "–"]
        lines.append(f"| {name} | {entry['images']} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {text}" for text in METRIC_NOTES.values())]
    if lpips_note:
        lines.append(f"- {lpips_note}")
    columns = ["ground truth", *(["observation"] if obs is not None else []), *names]
    grid_image = comparison_grid(grid, columns) if grid else None
    with StagedFiles() as files:
        files.add(outdir / "metrics.csv", lambda tmp: tmp.write_text(buf.getvalue()))
        files.add(outdir / "summary.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
        if grid_image is not None:
            files.add(outdir / "grid.png", lambda tmp: save_image(grid_image, tmp))
        files.add(outdir / "summary.json", lambda tmp: save_json(summary, tmp))
    report.done = sorted({r["image"] for r in rows})
    report.extra = {"summary": summary, "outdir": str(outdir), "rows": rows}
    return report
