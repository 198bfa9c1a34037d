"""The tables of an evaluation suite: one per task in the papers' layout (rows methods, columns σ_y, each with
its metrics), as ``tables.md`` / ``tables.json``, and ``crops_<task>_sy<σ_y>.png`` (ground truth, observation
and every method's restoration of the first images). Unfinished cells are shown as pending, never guessed."""

from __future__ import annotations

import json
import math
import shlex

from ddpg.api.suite_plan import CELL_RECORD, Cell, Plan, cell_operator, cell_settings, planned_operator
from ddpg.figures import comparison_grid
from ddpg.io import StagedFiles, load_image, read_json, save_image, save_json, strict_json
from ddpg.versions import versions

CROP_ROWS = 4
# (record key, column header, digits, scale): the metrics a table can show, in order
COLUMNS = (("psnr", "PSNR↑", 2, 1.0), ("ssim", "SSIM↑", 3, 1.0), ("lpips", "LPIPS↓", 3, 1.0),
           ("fid", "FID↓", 1, 1.0), ("kid", "KID×10³↓", 2, 1e3), ("gmm_giqa", "GMM-GIQA↑", 1, 1.0),
           ("knn_giqa", "KNN-GIQA↑", 4, 1.0), ("nfe_per_image", "NFE", 0, 1.0),
           ("seconds_per_image", "s/img", 2, 1.0))


def _record(plan: Plan, cell: Cell) -> dict | None:
    path = plan.cell_dir(cell) / CELL_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    return record if isinstance(record, dict) and record.get("settings") == cell_settings(plan, cell) else None


def _value(record: dict, key: str):
    return record.get(key) if key in ("nfe_per_image", "seconds_per_image") else record["metrics"].get(key)


def _fmt(value, digits: int, scale: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


def restore_command(plan: Plan, cell: Cell) -> str:
    """The ``ddpg restore`` call that makes one cell's restorations (the suite runs exactly this)."""
    files = plan.files[:cell.images]
    inputs = [str(plan.dataset)] if cell.images == len(plan.files) else [str(f) for f in files]
    args = ["ddpg", "restore", *inputs, "-o", str(plan.cell_dir(cell)), "--prior", plan.prior, "--task", cell.task,
            "--method", cell.method, "--sigma-y", f"{cell.sigma_y:g}", "--steps", str(cell.steps), "--seed",
            str(plan.seed), "--skip-existing", *[a for k, v in cell.hyper for a in ("--hyper", f"{k}={v}")],
            *[a for k, v in cell_operator(plan, cell).items() for a in ("--operator", f"{k}={v}")]]
    return shlex.join(args)


def _table(plan: Plan, task: str, cells: list[Cell], records: dict) -> tuple[list[str], dict]:
    sigmas = sorted({c.sigma_y for c in cells}, reverse=True)
    steps = {c.steps for c in cells}
    rows: dict[tuple, dict[float, Cell]] = {}
    methods = list(dict.fromkeys(c.method for c in cells))
    for c in sorted(cells, key=lambda c: (methods.index(c.method), c.steps)):  # a method's rows together
        rows.setdefault((c.method, c.steps, c.hyper, c.images), {})[c.sigma_y] = c
    shown = [col for col in COLUMNS if any(records.get(c) is not None and _value(records[c], col[0]) is not None
                                           for c in cells)] or list(COLUMNS[:2])  # nothing finished: PSNR, SSIM
    done = sum(records.get(c) is not None for c in cells)
    head = ["method", "images", *[f"{col[1]} σ={s:g}" if i == 0 else col[1] for s in sigmas
                                  for i, col in enumerate(shown)]]
    operator = planned_operator(plan, cells[0])
    described = ", ".join(f"{k} {v}" for k, v in operator.items() if k != "name")
    lines = [f"### {task}" + ("" if done == len(cells) else f" — partial: {done} of {len(cells)} cells finished"),
             "", f"Every method restores the same measurements: operator {operator['name']}"
             + (f" ({described})" if described else "") + ".",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    data = {"sigma_y": sigmas, "columns": [c[0] for c in shown], "operator": operator, "rows": []}
    for (method, n_steps, hyper, images), by_sigma in rows.items():
        name = method + (f" ({n_steps} steps)" if len(steps) > 1 else "") + "".join(f" {k}={v}" for k, v in hyper)
        cells_text = []
        entry = {"method": method, "steps": n_steps, "hyper": dict(hyper), "images": images, "cells": {}}
        for s in sigmas:
            cell = by_sigma.get(s)
            record = records.get(cell) if cell is not None else None
            if record is None:
                cells_text += ["pending" if cell is not None else "n/a"] + [""] * (len(shown) - 1)
                entry["cells"][f"{s:g}"] = None if cell is None else {"pending": True, "command": restore_command(
                    plan, cell)}
                continue
            cells_text += [_fmt(_value(record, col[0]), col[2], col[3]) for col in shown]
            entry["cells"][f"{s:g}"] = {**{col[0]: _value(record, col[0]) for col in COLUMNS},
                                        "kid_std": record["metrics"].get("kid_std"), "preset": record.get("preset"),
                                        "command": restore_command(plan, cell), "cell": str(plan.cell_dir(cell))}
        lines.append(f"| {name} | {images} | " + " | ".join(cells_text) + " |")
        data["rows"].append(entry)
    lines.append(_baseline_row(sigmas, cells, records, len(shown)))
    return lines, data


def _baseline_row(sigmas: list[float], cells: list[Cell], records: dict, width: int) -> str:
    """The baseline's PSNR per σ_y (the same measurements for every method: the first finished cell's)."""
    texts, names = [], set()
    for s in sigmas:
        found = next((records[c]["baseline"] for c in cells if c.sigma_y == s and records.get(c) is not None
                      and (records[c].get("baseline") or {}).get("psnr") is not None), None)
        names.add(found["name"] if found else None)
        texts += [_fmt(found["psnr"], 2, 1.0) if found else "–"] + [""] * (width - 1)
    label = " / ".join(sorted(n for n in names if n))
    return f"| baseline{': ' + label if label else ''} (PSNR only) | | " + " | ".join(texts) + " |"


def _crops(plan: Plan, task: str, sigma: float, cells: list[Cell], records: dict):
    """A comparison grid of the first images: ground truth, observation, each finished method; None if none."""
    finished = [c for c in cells if c.sigma_y == sigma and records.get(c) is not None]
    if not finished:
        return None
    rows = []
    for f in plan.files[:CROP_ROWS]:
        stem = f.stem
        if not all((plan.cell_dir(c) / f"{stem}_restored.png").is_file() for c in finished):
            continue  # restorations are not committed: crops come from a machine that has them
        observed = plan.cell_dir(finished[0]) / f"{stem}_observed.png"
        rows.append([load_image(f), load_image(observed) if observed.is_file() else None,
                     *[load_image(plan.cell_dir(c) / f"{stem}_restored.png") for c in finished]])
    if not rows:
        return None
    labels = ["ground truth", "observation", *[c.method + ("" if len({x.steps for x in cells}) == 1 else
                                                           f" {c.steps}") for c in finished]]
    return comparison_grid(rows, labels)


def write_tables(plan: Plan, command: str | None = None) -> dict:
    """Write ``tables.md``, ``tables.json`` and the crop PNGs into ``plan.out``; returns the JSON. Restorations
    are not committed, so a crop grid is made only where they are: elsewhere an existing grid is kept and linked.
    Tables whose content equals the ones there (the versions of the machine writing them aside) are left as they
    are: a re-run that restores nothing changes no file."""
    records = {c: _record(plan, c) for c in plan.cells}
    tasks = list(dict.fromkeys(c.task for c in plan.cells))
    command = command or f"ddpg evaluate suite {shlex.quote(plan.source)}"
    notes = list(dict.fromkeys(n for r in records.values() if r is not None for n in r["notes"]))
    data: dict = {"kind": "ddpg-suite-tables", "out": str(plan.out), "plan": plan.source, "command": command,
                  "prior": plan.prior, "dataset": str(plan.dataset), "seed": plan.seed, "device": plan.device,
                  "versions": versions(plan.device), "tasks": {},
                  "notes": notes}
    cells_dir = plan.cells_dir or plan.out / "cells"
    lines = [f"# Evaluation suite: {plan.prior} on {plan.dataset}", "",
             f"Command: `{command}` (cells: `{cells_dir}/<task>/<cell>/`, each also reproducible with the "
             "`ddpg restore` line in tables.json, then `ddpg evaluate --pred <cell> --gt <dataset>`).", "",
             "Columns per σ_y: the metric means over the cell's images; NFE: UNet evaluations per image; s/img: "
             f"mean sampler seconds per image on {plan.device} as measured during the run (other work on the "
             "machine slows it). Each cell uses the hyper-parameters `ddpg restore` picks (the method's paper preset "
             "for the prior family at the nearest σ_y, named per cell in tables.json) with its row's steps.", ""]
    pngs = {}
    for task in tasks:
        cells = [c for c in plan.cells if c.task == task]
        table, data["tasks"][task] = _table(plan, task, cells, records)
        lines += [*table, ""]
        for sigma in sorted({c.sigma_y for c in cells}, reverse=True):
            name = f"crops_{task}_sy{sigma:g}.png"
            grid = _crops(plan, task, sigma, cells, records)
            if grid is not None:
                pngs[name] = grid
            if grid is not None or (plan.out / name).is_file():
                lines += [f"![{task} σ_y={sigma:g}]({name})", ""]
    lines += [f"- {note}" for note in data["notes"]]
    if _same_tables(plan, data, lines):
        return data
    with StagedFiles() as files:
        for name, grid in pngs.items():
            files.add(plan.out / name, lambda tmp, grid=grid: save_image(grid, tmp))
        files.add(plan.out / "tables.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
        files.add(plan.out / "tables.json", lambda tmp: save_json(data, tmp))
    return data


def _same_tables(plan: Plan, data: dict, lines: list[str]) -> bool:
    """Whether ``plan.out`` holds these tables already: the same ``tables.md`` and a ``tables.json`` equal to
    ``data`` but for ``versions``."""
    md, js = plan.out / "tables.md", plan.out / "tables.json"
    if not (md.is_file() and js.is_file()) or md.read_text() != "\n".join(lines) + "\n":
        return False
    old = read_json(js)
    new = json.loads(strict_json(data))  # as the file would hold it
    return isinstance(old, dict) and {**old, "versions": None} == {**new, "versions": None}


__all__ = ["restore_command", "write_tables"]
