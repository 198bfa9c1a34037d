"""``ddpg evaluate``: PSNR, SSIM and LPIPS of prediction folders against a ground-truth folder, and the set
metrics FID, KID, GMM-GIQA and KNN-GIQA on Inception features, with a CSV, a summary and a comparison grid."""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from ddpg.api.outputs import claim_outputs, output_folder, read_sidecar
from ddpg.api.report import Report
from ddpg.api.restoration import SIDECAR_KIND
from ddpg.errors import ConfigError, DdpgError, InputError, ParameterError
from ddpg.figures import comparison_grid
from ddpg.io import StagedFiles, collect_inputs, load_image, read_json, save_image, save_json
from ddpg.metrics import LPIPS, psnr, ssim
from ddpg.metrics.features import FeatureExtractor
from ddpg.metrics.inception import load_inception
from ddpg.metrics.sets import GIQA_COMPONENTS, fid, fit_giqa_gmm, kid, knn_giqa
from ddpg.models.checkpoints import cache_dir

EVALUATION_KIND = "ddpg-evaluation"
REPORT_FILES = {"metrics": "metrics.csv", "table": "summary.md", "grid": "grid.png"}  # and summary.json, last
FID_MIN_IMAGES = 2048  # below the feature dimension the covariances are singular and FID is dominated by bias
SET_METRICS = ("fid", "kid", "kid_std", "gmm_giqa", "knn_giqa")

METRIC_NOTES = {
    "psnr": "PSNR in dB: 10·log10(1/MSE) over all values of the [0, 1] images (prediction clamped); no "
            "quantisation, Y channel or border crop (as the DDPG paper).",
    "ssim": "SSIM: 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, valid filtering, averaged over "
            "positions and RGB channels.",
    "lpips": "LPIPS: AlexNet, lpips package v0.1 linear heads, on the saved images mapped to [-1, 1].",
    "features": "FID/KID/GIQA on the 2048-d pool features of the FID Inception-v3 (pytorch-fid's port of TF-FID "
                "2015-12-05: bilinear resize to 299, [-1, 1] input); references are the ground-truth images.",
    "fid": f"FID: Fréchet distance of the feature Gaussians; reported only from {FID_MIN_IMAGES} images (the "
           "feature dimension) per set, below which its bias dominates.",
    "kid": "KID: unbiased MMD² with the kernel (xᵀy/2048 + 1)³, on the whole sets up to 1000 images (else the "
           "mean over 100 subsets of 1000); ×1000 in the Markdown table.",
    "gmm_giqa": "GMM-GIQA: mean log-likelihood of the features under a full-covariance Gaussian mixture fitted on "
                f"the references (default {GIQA_COMPONENTS} components as the official code; optional PCA); higher "
                "is better.",
    "knn_giqa": "KNN-GIQA: mean of 1/(L1 distance to the nearest reference feature); higher is better.",
}

log = logging.getLogger("ddpg")


class FeatureSource:
    """The FID Inception features of image files, cached under the ddpg cache (``inception_features/``), or the
    reason they cannot be computed (weights missing). The network loads on first use."""

    def __init__(self, inception: str | Path | None = None, device: str = "cpu", cache: str | Path | None = None,
                 network=None, weights_id: str | None = None) -> None:
        self.inception, self.device, self.cache = inception, device, cache
        self._extractor = None
        self.reason = ""
        if network is not None:  # a given network (tests: random weights) with its identity
            self._make(network, weights_id or "given-network")

    def _make(self, network, weights_id: str) -> None:
        cache = self.cache if self.cache is not None else cache_dir() / "inception_features"
        self._extractor = FeatureExtractor(network, weights_id, cache, self.device)

    def extractor(self):
        """The FeatureExtractor, or None (then ``reason`` says why)."""
        if self._extractor is None and not self.reason:
            try:
                self._make(*load_inception(self.inception, self.device))
            except ConfigError as exc:
                self.reason = f"FID/KID/GIQA not computed: {exc}"
        return self._extractor



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
            raise ParameterError("labels", labels, f"{len(labels)} labels for {len(preds)} prediction folders (pred)")
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
             use_lpips: bool = True, images: list[str] | None = None, set_metrics: bool = True,
             inception: str | Path | None = None, features: FeatureSource | None = None,
             fid_min_images: int = FID_MIN_IMAGES, giqa_components: int = GIQA_COMPONENTS,
             giqa_pca: int | None = None, knn_k: int = 1) -> Report:
    """PSNR, SSIM (and LPIPS when available locally) of one or more prediction folders against a
    ground-truth folder, paired by name: ground truth ``x.png`` (or ``x_gt.png``) ↔ prediction
    ``x_restored.png`` or ``x.png`` ↔ observation ``x_observed.png`` (``obs``, for the grid only); ``images``
    keeps only those ground-truth names (stems).

    With ``set_metrics``, also FID (from ``fid_min_images`` images), KID, GMM-GIQA (``giqa_components``,
    optional PCA to ``giqa_pca`` dimensions) and KNN-GIQA (``knn_k``) of each method's restorations against the
    ground truth, on FID Inception features (``features``, or weights from ``inception`` / the standard cache;
    without weights these are reported as not computed, with where to get them).

    Writes ``metrics.csv`` (one row per image and method), ``summary.json``, ``summary.md`` and ``grid.png``
    (ground truth / observation / each method, first ``grid_rows`` images) into ``outdir`` (default:
    ``<first pred>/evaluation``). A missing or mis-sized prediction fails that image for that method."""
    preds = [Path(p) for p in ([pred] if isinstance(pred, (str, Path)) else pred)]
    if not preds:
        raise ParameterError("pred", pred, "give at least one prediction folder")
    gt = Path(gt)
    for folder in [*preds, gt, *([Path(obs)] if obs is not None else [])]:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder")
    names = _labels(preds, labels)
    outdir = Path(outdir) if outdir is not None else preds[0] / "evaluation"
    with output_folder(outdir):  # locked, and no file there replaced that an earlier evaluation did not write
        _check_report_folder(outdir)
        lpips_metric, lpips_note = LPIPS.load() if use_lpips else (None, "LPIPS not computed (disabled)")
        pairs, report = _ground_truth(gt, images)
        rows, grid, used = _score_images(pairs, preds, names, obs, lpips_metric, grid_rows, report)
        if not rows:
            raise InputError(f"no prediction could be evaluated against {gt}: " +
                             "; ".join(why for _, why in report.failed[:3]))
        differences = _settings_notes(used)
        for note in differences:
            log.warning("%s", note)
        notes = differences + ([lpips_note] if lpips_note else [])
        summary = {"kind": EVALUATION_KIND, "ground_truth": str(gt), "lpips": lpips_note or "computed",
                   "definitions": METRIC_NOTES, "methods": {}, "notes": notes, "outputs": dict(REPORT_FILES)}
        for folder, name in zip(preds, names, strict=True):
            mine = [r for r in rows if r["method"] == name]
            entry: dict = {"pred": str(folder), "images": len(mine)}
            for metric in ("psnr", "ssim", "lpips"):
                values = [r[metric] for r in mine if not math.isnan(r[metric])]
                entry[metric] = sum(values) / len(values) if values else None
            summary["methods"][name] = entry
        if set_metrics:
            source = features or FeatureSource(inception)
            notes.extend(_set_metrics(source, pairs, used, rows, summary["methods"], fid_min_images,
                                      giqa_components, giqa_pca, knn_k))
        else:
            notes.append("FID/KID/GIQA not computed (disabled)")
        columns = ["ground truth", *(["observation"] if obs is not None else []), *names]
        _write_report(outdir, rows, summary, grid, columns)
        report.done = sorted({r["image"] for r in rows})
        report.extra = {"summary": summary, "outdir": str(outdir), "rows": rows}
        return report


# what a restore sidecar's settings hold that decides the measurement, and the steps: a comparison of sets that
# differ in one of them is not like for like
COMPARED_SETTINGS = {"task": "task", "sigma_y": "σ_y", "operator": "operator", "mask": "mask", "kernel": "kernel",
                     "seed": "seed", "resize": "resize", "size": "size", "steps": "steps"}


def _settings_notes(used: dict[str, dict[str, Path]]) -> list[str]:
    """A warning per setting in which the compared sets' restorations of one image differ, from their restore
    sidecars (``<key>.json`` beside each prediction; a set without them is not compared)."""
    values: dict[tuple[str, str], dict[str, str]] = {}  # (setting, image) → {set: value as JSON}
    for name, images in used.items():
        for key, path in images.items():
            try:
                record = read_sidecar(path.parent / f"{key}.json", SIDECAR_KIND)
            except InputError:
                record = None
            settings = record.get("settings") if record else None
            if isinstance(settings, dict):
                for setting in COMPARED_SETTINGS:
                    values.setdefault((setting, key), {})[name] = json.dumps(settings.get(setting), sort_keys=True)
    differing: dict[str, dict[str, set[str]]] = {}
    for (setting, _), by_set in values.items():
        if len(by_set) > 1 and len(set(by_set.values())) > 1:
            for name, value in by_set.items():
                differing.setdefault(setting, {}).setdefault(name, set()).add(value)
    return [f"the compared sets were restored with different {COMPARED_SETTINGS[setting]} ("
            + "; ".join(f"{name}: {', '.join(sorted(v))}" for name, v in by_set.items()) + ")"
            + ("" if setting == "steps" else ": they restored different measurements, not a like-for-like comparison")
            for setting, by_set in differing.items()]


def _check_report_folder(outdir: Path) -> None:
    """Refuse (InputError naming the file) to write the report where it would replace a file that is not an
    earlier evaluation's (:func:`~ddpg.api.outputs.claim_outputs`; a summary.json of an older ddpg, which has no
    kind, counts as one)."""
    path = outdir / "summary.json"
    try:
        older = os.path.isfile(path) and not os.path.islink(path) and read_json(path)
    except InputError:
        older = None  # claim_outputs names the problem
    if isinstance(older, dict) and "kind" not in older and {"ground_truth", "definitions", "methods"} <= older.keys():
        return
    claim_outputs(outdir, list(REPORT_FILES.values()), "summary.json", EVALUATION_KIND, None, source=outdir,
                  verb="written", noun="evaluation")


def _ground_truth(gt: Path, images: list[str] | None) -> tuple[dict[str, Path], Report]:
    """{key: ground-truth file} (restricted to ``images`` when given) and a report of unreadable inputs."""
    gt_files, problems = collect_inputs([gt])
    report = Report(failed=[(str(p), why) for p, why in problems])
    pairs: dict[str, Path] = {}
    for path in gt_files:
        key = _gt_key(path)
        if key is not None and (images is None or key in images) and (key not in pairs or path.stem.endswith("_gt")):
            pairs[key] = path
    if images is not None and set(images) - set(pairs):
        raise InputError(f"{gt}: no ground truth for {sorted(set(images) - set(pairs))[:5]}")
    if not pairs:
        raise InputError(f"{gt}: no ground-truth images")
    return dict(sorted(pairs.items())), report


def _score_images(pairs: dict[str, Path], preds: list[Path], names: list[str], obs, lpips_metric, grid_rows: int,
                  report: Report) -> tuple[list[dict], list, dict[str, dict[str, Path]]]:
    """Per-image rows, the grid's panels, and {method: {key: prediction file}} of the scored pairs."""
    rows: list[dict] = []
    grid: list[list[torch.Tensor | None]] = []
    used: dict[str, dict[str, Path]] = {name: {} for name in names}
    for key, gt_path in pairs.items():
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
            rows.append({"image": key, "method": name, "psnr": psnr(img, ref),
                         "ssim": ssim(img, ref) if min(ref.shape[1:]) >= 11 else float("nan"),
                         "lpips": lpips_metric(img, ref) if lpips_metric is not None else float("nan")})
            used[name][key] = p
            panels.append(img)
        if len(grid) < grid_rows:
            grid.append(panels)
    return rows, grid, used


def _set_metrics(source: FeatureSource, pairs: dict[str, Path], used: dict[str, dict[str, Path]], rows: list[dict],
                 methods: dict[str, dict], fid_min_images: int, components: int, pca: int | None,
                 knn_k: int) -> list[str]:
    """Fill FID/KID/GIQA into ``methods`` (and per-image GIQA into ``rows``); returns notes on what was not
    computed and why."""
    for row in rows:
        row.update(gmm_giqa=float("nan"), knn_giqa=float("nan"))
    for entry in methods.values():
        entry.update(dict.fromkeys(SET_METRICS))
    extractor = source.extractor()
    if extractor is None:
        return [source.reason]
    keys = sorted({k for mine in used.values() for k in mine})
    ref = extractor.features([pairs[k] for k in keys])
    ref_of = dict(zip(keys, ref, strict=True))
    notes = []
    try:
        gmm = fit_giqa_gmm(ref, components=components, pca=pca)
    except DdpgError as exc:
        gmm = None
        notes.append(f"GMM-GIQA not computed: {exc}")
    by_key = {(r["method"], r["image"]): r for r in rows}
    small = []
    for name, mine in used.items():
        if len(mine) < 2:
            notes.append(f"{name}: FID/KID need at least 2 images")
            continue
        order = sorted(mine)
        x = extractor.features([mine[k] for k in order])
        y = np.stack([ref_of[k] for k in order])
        entry = methods[name]
        if len(order) >= fid_min_images:
            entry["fid"] = fid(x, y)
        else:
            small.append(f"{name}: {len(order)}")
        entry["kid"], entry["kid_std"] = kid(x, y)
        knn = knn_giqa(x, y, min(knn_k, len(order)))
        gmm_scores = gmm.score_samples(x) if gmm is not None else None
        for i, k in enumerate(order):
            by_key[name, k]["knn_giqa"] = float(knn[i])
            if gmm_scores is not None:
                by_key[name, k]["gmm_giqa"] = float(gmm_scores[i])
        entry["knn_giqa"] = float(knn.mean())
        entry["gmm_giqa"] = float(gmm_scores.mean()) if gmm_scores is not None else None
    if small:
        notes.append(f"FID not reported: it needs at least {fid_min_images} images per set to be meaningful "
                     f"({', '.join(small)} images); KID (unbiased) is reported instead")
    return notes


def _cell(value, digits: int, scale: float = 1.0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.{digits}f}"


def _write_report(outdir: Path, rows: list[dict], summary: dict, grid: list, columns: list[str]) -> None:
    """metrics.csv, summary.md, grid.png and summary.json (last), all together."""
    fields = ["image", "method", "psnr", "ssim", "lpips", *(["gmm_giqa", "knn_giqa"] if "knn_giqa" in rows[0] else [])]
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows)
    lines = ["| method | images | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | FID ↓ | KID×10³ ↓ | GMM-GIQA ↑ | KNN-GIQA ↑ |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in summary["methods"].items():
        cells = [_cell(entry["psnr"], 2), _cell(entry["ssim"], 4), _cell(entry["lpips"], 4),
                 _cell(entry.get("fid"), 2), _cell(entry.get("kid"), 2, 1e3), _cell(entry.get("gmm_giqa"), 1),
                 _cell(entry.get("knn_giqa"), 4)]
        lines.append(f"| {name} | {entry['images']} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {text}" for text in METRIC_NOTES.values()), *(f"- {note}" for note in summary["notes"])]
    grid_image = comparison_grid(grid, columns) if grid else None
    with StagedFiles() as files:
        files.add(outdir / "metrics.csv", lambda tmp: tmp.write_text(buf.getvalue()))
        files.add(outdir / "summary.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
        if grid_image is not None:
            files.add(outdir / "grid.png", lambda tmp: save_image(grid_image, tmp))
        files.add(outdir / "summary.json", lambda tmp: save_json(summary, tmp))
