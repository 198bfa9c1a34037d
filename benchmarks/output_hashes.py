"""Fixed-seed output hashes of every method on every task, to prove that a refactor changes no result.

Each cell restores two dev faces (64×64, seeds 0 and 1, σ_y 0.05, a few steps) with one method, task and
prior, and records the sha256 of the float32 restoration (or the error it raised); ``--api`` cells run
``ddpg.restore`` on files and hash the PNGs it writes. Run it before and after a change:

    python benchmarks/output_hashes.py --out before.json
    python benchmarks/output_hashes.py --compare before.json      # exit 1 and the cells that differ
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

import ddpg
from ddpg.io import load_image
from ddpg.models import as_denoiser, load_prior
from ddpg.operators import make_operator
from ddpg.operators.tasks import CLI_TASKS, OPERATOR_OF_TASK
from ddpg.runtime import Restorer
from ddpg.runtime.samplers import SAMPLERS

FACES = sorted((Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces64_dev").glob("*.png"))[:2]
PRIORS = ("gaussian", "face64")


def needs_grad(method: str) -> bool:
    """Whether the method differentiates through the denoiser (DPS/DPPS: their own autograd loops)."""
    spec = SAMPLERS[method]
    return spec.capabilities(spec.build(0.05)).needs_grad


def steps_of(method: str) -> int:
    """Few steps: enough to pass through every branch of a method's table (DPS/DPPS keep their own loop)."""
    return 3 if needs_grad(method) else 5


def tensor_cells(faces: torch.Tensor) -> dict[str, str]:
    """{prior/method/task: sha256 of the restoration, or the error's text}."""
    cells = {}
    for prior in PRIORS:
        denoiser = as_denoiser(load_prior(prior))
        for method in SAMPLERS:
            for task in CLI_TASKS:
                name, params = OPERATOR_OF_TASK[task]
                try:
                    op = make_operator(name, 64, **params)
                    r = Restorer(denoiser, op, method=method, sigma_y=0.05, steps=steps_of(method))
                    y = r.degrade(faces, [0, 1])
                    with torch.set_grad_enabled(needs_grad(method)):
                        out = r.restore(y, [0, 1]).detach()
                    cells[f"{prior}/{method}/{task}"] = hashlib.sha256(out.numpy().tobytes()).hexdigest()
                except Exception as exc:  # an unsupported pairing is recorded as what it raised
                    cells[f"{prior}/{method}/{task}"] = f"error: {type(exc).__name__}: {exc}"
    return cells


def api_cells() -> dict[str, str]:
    """{api/prior/task/file: sha256 of each PNG ``ddpg.restore`` writes}, ddpg with its default settings."""
    cells = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prior in PRIORS:
            for task in CLI_TASKS:
                out = Path(tmp) / prior / task
                ddpg.restore([str(f) for f in FACES], out, task=task, prior=prior, steps=5, seed=0)
                for png in sorted(out.glob("*.png")):
                    cells[f"api/{prior}/{task}/{png.name}"] = hashlib.sha256(png.read_bytes()).hexdigest()
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the hashes here (JSON)")
    parser.add_argument("--compare", type=Path, help="compare with hashes written before; exit 1 on a difference")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: the same reduction order on every run
    faces = torch.stack([load_image(f) for f in FACES]) * 2 - 1
    cells = {**tensor_cells(faces), **api_cells()}
    if args.out:
        args.out.write_text(json.dumps(cells, indent=1, sort_keys=True) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        changed = sorted(k for k in before.keys() | cells.keys() if before.get(k) != cells.get(k))
        for key in changed:
            print(f"{key}: {before.get(key)} -> {cells.get(key)}")
        print(f"{len(cells)} cells, {len(changed)} changed")
        return 1 if changed else 0
    print(f"{len(cells)} cells, {sum(v.startswith('error') for v in cells.values())} errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
