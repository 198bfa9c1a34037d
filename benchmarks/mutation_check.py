"""Mutation check of the core: apply one single-line mutant at a time to a temporary copy of the tree and run
the fast tests that cover that code. A mutant that leaves every test green "survives".

Mutants (AST-based, each confined to one source line): flip an arithmetic/comparison/boolean operator, drop
one operand of a binary operation or a unary minus/not, change a numeric constant (int n → n + 1, float
f → 10·f, 0.0 → 1.0), flip a boolean constant, swap the first two positional arguments of a call, drop a
no-argument method call (``x.conj()`` → ``x``), replace an expression statement (a call) by ``pass``.

    python benchmarks/mutation_check.py [--only PATTERN,...] [--rerun-survivors] [--timeout S] \
        [--results /tmp/ddpg_mutation.jsonl] [--report benchmarks/results/mutation_report.md] [--list]
    python benchmarks/mutation_check.py --report-only   # the report from the results so far

Results are appended to a JSONL file keyed by mutant id, so an interrupted run resumes (mutants are taken one
target after another in turn, so a run cut short has covered every target); ``--rerun-survivors`` also runs
again the mutants that survived (after adding tests). Each mutant's tests run in a forked child with a
timeout; a timeout counts as killed. Equivalent mutants (no behaviour change) are listed in ``EQUIVALENT``
with the reason. Not part of the CI test run.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy  # noqa: F401  (imported once here, before the forks: each mutant's child only imports ddpg)
import onnxruntime  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import scipy.signal  # noqa: F401
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # as tests/conftest.py; before any fork

OPS = ("tests/test_operators_properties.py tests/test_operators_parity.py tests/test_operators_baselines.py "
       "tests/test_operator_contract.py")
SAMPLER = "tests/test_step_scalars.py tests/test_runtime_fixtures.py tests/test_samplers_units.py"
# (source file, names of the functions/classes/methods to mutate (None = the whole file), test files)
TARGETS = [
    ("src/ddpg/runtime/samplers/ddpg.py", ["DDPGParams.sigma", "DDPGParams.eta", "ddpg_table", "guidance",
                                           "DDPG.draw", "DDPG.step", "DDPG.result"], SAMPLER),
    ("src/ddpg/runtime/samplers/method.py", ["spectral_row", "skipped", "stack_rows", "row_table", "row_of",
                                             "run_method"], SAMPLER + " tests/test_method_contract.py"),
    ("src/ddpg/runtime/graph_runner.py", ["GraphRunner._step", "GraphRunner._start"],
     "tests/test_fast_path.py tests/test_method_contract.py"),
    ("src/ddpg/operators/fft.py", ["nonzero_threshold", "FFTBlur.__init__", "FFTBlur.spectrum", "FFTBlur._apply",
                                   "FFTBlur.A", "FFTBlur.At", "FFTBlur.pinv_eta", "FFTBlur.pinv", "footprint_centre",
                                   "FFTSuperRes.__init__", "FFTSuperRes.A", "FFTSuperRes.upsample_zeros",
                                   "FFTSuperRes.At", "FFTSuperRes._lr_solve", "FFTSuperRes.pinv_eta",
                                   "FFTSuperRes.pinv", "FourierBasis.__init__", "FourierBasis.meas_coef"], OPS),
    ("src/ddpg/operators/base.py", ["reciprocal", "DecomposableOperator.A", "DecomposableOperator.At",
                                    "DecomposableOperator.apply_spectral", "DecomposableOperator.pinv_eta",
                                    "DecomposableOperator.pinv", "SVDBasis.__init__", "SVDBasis.meas_coef",
                                    "EqualSingulars.pinv_eta", "EqualSingulars.pinv"], OPS),
    ("src/ddpg/operators/svd.py", ["svd_1d", "SeparableSVD._build", "SeparableSVD.A", "SeparableSVD.At",
                                   "SeparableSVD.apply_spectral",
                                   "reflect_index", "bicubic_matrix", "avgpool_matrix", "toeplitz_zero_boundary",
                                   "Identity.A", "Identity.At", "Inpainting.A", "Inpainting.At",
                                   "Colorization.__init__", "Colorization.A", "Colorization.At"], OPS),
    ("src/ddpg/operators/kernels.py", ["keys_cubic", "bicubic_taps_svd", "bicubic_taps_matlab", "gaussian_taps",
                                       "outer_kernel"], OPS),
    ("src/ddpg/models/nn.py", ["sinusoidal_embedding"], "tests/test_timestep_embedding.py tests/test_models_unets.py"),
    ("src/ddpg/export/validate.py", ["DEFAULT_RTOL", "default_rtol", "validate_onnx", "error_ratio"],
     "tests/test_export_tolerances.py"),
    ("src/ddpg/io/atomic.py", ["atomic_write"], "tests/test_atomic_writes.py tests/test_io.py"),
    ("src/ddpg/io/staged.py", ["StagedFiles"], "tests/test_atomic_writes.py tests/test_io.py"),
    ("src/ddpg/operators/baselines.py", ["is_super_resolution", "auto_baseline_name"],
     "tests/test_cli_restore.py::test_restore_writes_images_and_sidecars_whose_metrics_match "
     "tests/test_cli_restore.py::test_sr_sidecar_scores_the_bicubic_baseline tests/test_operators_baselines.py"),
    ("src/ddpg/api/restoration.py", ["write_outputs"],
     "tests/test_cli_restore.py::test_restore_writes_images_and_sidecars_whose_metrics_match "
     "tests/test_cli_restore.py::test_restored_png_is_the_restorers_output "
     "tests/test_cli_restore.py::test_sidecar_metrics_of_the_smallest_images "
     "tests/test_cli_restore.py::test_resized_inputs_keep_their_ground_truth_beside_the_restoration "
     "tests/test_cli_restore.py::test_sr_sidecar_scores_the_bicubic_baseline"),
]

# mutant id → why it cannot change behaviour (filled in after reading each survivor)
EQUIVALENT: dict[str, str] = {
    "4c32fbfb67": "max(a, b) → max(b, a): max is symmetric",
    "08c64a0809": "ddpg_table's s_BP·(1−δ) → (1−δ): s_BP is 1 in every step-size mode (docs/methods.md §3.2)",
    "3ceedaa369": "guidance: the LS guard σ > 0 and c > 0 and coef_ls not 0 → or: the extra cases add coef_ls·Aᵀr "
                  "with coef_ls = s_LS·δ·c = 0 (σ = 0 makes δ = 0)",
    "e45001b622": "guidance: keeps σ > 0 only: with c = 0 or coef_ls = 0 it adds 0·Aᵀr",
    "a25fcff081": "guidance: keeps c > 0 only: with σ = 0, δ = 0 so coef_ls = 0",
    "e2d9bfd3b4": "guidance: keeps 'coef_ls not 0' only: coef_ls = s_LS·δ·c is 0 whenever σ = 0 or c = 0",
    "dc6a290f93": "guidance: update + c·P_η r → c·P_η r: update is still the zero tensor at that line",
    "0f0ebc9eb4": "guidance: σ > 0 → σ >= 0: at σ = 0, δ = 0 so coef_ls = 0",
    "a696909cd1": "guidance: c > 0 → c >= 0: at c = 0, coef_ls = 0",
    "768007a4e2": "DDPG step: z.shape[1] → z.shape[2] in the candidates test: with one plain z the branch picks its"
                  " only candidate, z itself",
    "f24ec99b59": "DDPG step: x.shape[1] → x.shape[2] in the candidates test: with one plain z the branch picks its"
                  " only candidate, z itself",
    "511da159bc": "graph runner start: b.x0 not refilled: every method's step writes x0 before anything (result, "
                  "callback) reads it",
    "9ac48ac7fb": "graph runner start: b.out not refilled: every method's step writes out before result reads it",
    "803e063489": "FFTBlur keeps its .kernel attribute in float64 instead of float32: A, Aᵀ and the pseudo-inverses"
                  " use the float64 padded copy; footprint_centre casts to float64 anyway",
    "97369a700e": "FFT _apply: s=x.shape[-2:] → x.shape[2:], the same for the (B, C, H, W) tensors it is given",
    "8519e5abe0": "FFT A⁺: power > threshold → power >= threshold: differs only for an eigenvalue exactly equal to "
                  "the threshold, a measure-zero boundary",
    "aba37984b7": "FFT A⁺: the placeholder 1 in where(keep, power, 1) → 2: read only where the outer where puts 0",
    "69082a667a": "Fourier basis: |K̂|² > threshold → >=: differs only for an eigenvalue exactly equal to the "
                  "threshold, a measure-zero boundary",
    "8a5fa2e8a0": "Fourier basis: the placeholder 1 in where(keep, mag, 1) → 2: read only where the outer where "
                  "puts 0",
    "f54469ef1a": "footprint_centre: the float32 kernel not widened to float64: the centre moves by float32 "
                  "rounding (~1e-7 px), far inside every use",
    "e8ebb912c5": "FFT SR: the autocorrelation's spectrum is real (an even signal); without .real, the cache's "
                  ".to(real dtype) keeps the real part and drops only rounding noise",
    "6c1dcea689": "FFT SR zero-filling: y.shape[:-2] → y.shape[:2]: the same for the (B, C, h, w) measurements",
    "b650421684": "FFT SR _lr_solve: s=r.shape[-2:] → r.shape[2:]: the same for the (B, C, h, w) tensors it is "
                  "given",
    "ea195918ca": "FFT SR A⁺: h > threshold → h >= threshold: differs only for a response exactly equal to the "
                  "threshold, a measure-zero boundary",
    "35d55d07aa": "FFT SR A⁺: h.abs() → h: h = Σ_aliases |K̂|² is ≥ 0 (tiny negative rounding is dropped either "
                  "way)",
    "18d7d83663": "FFT SR A⁺: the threshold from max(h) instead of max(|h|): h = Σ_aliases |K̂|² ≥ 0, the same "
                  "maximum",
    "f5f13d0815": "FFT SR A⁺: factor 1 instead of 0 at a dropped low-resolution frequency: h = Σ_aliases |K̂|² ≤ "
                  "threshold means every alias has |K̂| ≤ √threshold, and Aᵀ multiplies each by K̂*, so the change "
                  "is below the threshold itself",
    "5dc278558e": "FFT SR A⁺: the placeholder 1 in where(keep, h, 1) → 2: read only where the outer where puts 0",
    "85edbd2fc7": "reciprocal: the inner where(s > 0, s, 1) → where(s >= 0, s, 1) makes 1/0 = inf at s = 0, which "
                  "the outer where replaces by 0",
    "a5e676cbe9": "reciprocal: the placeholder 1 in where(s > 0, s, 1) → 2: read only where the outer where puts 0",
    "cd2c88fab5": "s < threshold → s <= threshold: differs only for a singular value exactly equal to the threshold"
                  " (a float64 SVD output equal to 3e-2 to the last bit), a measure-zero boundary",
    "eff7b2fafe": "reflect_index: `-j - 1 if j < 0` → `if j <= 0`: j = 0 never enters the loop (0 < n), so the "
                  "branch is taken for j < 0 only either way",
    "d7877ac534": "reflect_index: `-j - 1 if j < 0` → `if j < 1`: j = 0 never enters the loop (0 < n), so the "
                  "branch is taken for j < 0 only either way",
    "7254d1add7": "bicubic_matrix: taps[j − i − len/2] wraps (NumPy's negative index) to taps[j − i + len/2]: len ="
                  " 2·half for the even 4s-tap kernels",
    "5d926a36b0": "colorization basis: sign(q₀·w) → sign(q₀ ⊙ w): q₀ = ±w/‖w‖ with every w_i > 0, so each element "
                  "has the sign of q₀·w",
    "6a110072e4": "colorization basis: sign(q₀·w) → sign(q₀): q₀ = ±w/‖w‖ with every w_i > 0, so each element has "
                  "the sign of q₀·w",
    "40c82f6e25": "colorization basis: QR of [w, e₁, e₂, e₃] instead of [w, e₁, e₂]: the reduced Q (3×3) is the "
                  "same to the bit (checked), Householder QR builds it from the first three columns",
    "0a4070be66": "Keys kernel: x <= 1 → x < 1 at x = 1 picks the outer cubic, which is 0 there like the inner one",
    "eeea5918de": "Keys kernel: x < 2 → x <= 2 at x = 2 picks the outer cubic, which is 0 there (8a − 20a + 16a − "
                  "4a = 0)",
    "365224912c": "bicubic_taps_svd: n / 2 → n // 2: n = 4·scale is even, so both are the same number",
    "2461479c46": "bicubic_taps_matlab: k(o/s)/s → k(o/s)·s: a constant factor the normalisation on the next line "
                  "removes",
    "75603f81c1": "bicubic_taps_matlab: k(o/s)/s → k(o/s): a constant factor the normalisation removes",
    "6bd7d45e71": "bicubic_taps_matlab: taps / Σtaps → taps · Σtaps: Keys' kernel is a partition of unity, Σ_o "
                  "k(o/s) = s, so after /s the sum is already 1 (to rounding)",
    "322a5e0396": "bicubic_taps_matlab: drops the normalisation: Σ_o k(o/s)/s = 1 already (Keys' kernel is a "
                  "partition of unity)",
    "32c019401a": "outer_kernel: np.outer(taps, taps) with its two equal arguments swapped",
    "8fb5431c25": "validation: ONNX output not cast to float64 before got − ref: the float64 reference promotes it "
                  "exactly",
    "304bc5e706": "validation: reference not cast to float64: got − ref is promoted to float64 anyway; only the "
                  "reference's squared norm is summed in float32 (relative rounding ~1e-7, far inside every bound)",
    "40c0c4279c": "validation report: seconds rounded to 4 decimals instead of 3",
    "6df9ca549c": "atomic_write cleanup unlink(missing_ok=False): the temporary file exists whenever the except "
                  "branch runs (mkstemp made it; only a writer deleting it itself would differ)",
    "5a24d82384": "sidecar: min(H, W) → min(W, H)",
    "77e2c0a47d": "sidecar: write time rounded to 5 decimals instead of 4",
    "a81f1aa331": "sidecar: restored clamped to [0, 2] instead of [0, 1]: save_image, psnr and ssim clamp to [0, 1]",
    "765faa0d23": "sidecar: load time rounded to 5 decimals instead of 4",
    "35d700f632": "sidecar: psnr(clean, restored) for psnr(restored, clean): restored is already clamped to [0, 1],"
                  " so the score is symmetric",
    "b5dbe42914": "sidecar: baseline PSNR rounded to 5 decimals instead of 4",
    "e5314fad8c": "sidecar: psnr(clean, baseline) for psnr(baseline, clean): the baseline is clamped to [0, 1] when"
                  " it is made (prepare_input), so the score is symmetric",
    "91040bda23": "sidecar: baseline PSNR rounded to 5 decimals instead of 4",
    "1f2c88b3ab": "sidecar: ssim(clean, restored): SSIM's formula is symmetric and restored is already in [0, 1]",
    "fe8dfb6879": "sidecar: SSIM rounded to 5 decimals instead of 4",
}

BINOPS = {ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult, ast.FloorDiv],
          ast.FloorDiv: [ast.Div, ast.Mult], ast.Pow: [ast.Mult], ast.Mod: [ast.FloorDiv], ast.MatMult: [ast.Mult],
          ast.BitAnd: [ast.BitOr], ast.BitOr: [ast.BitAnd]}
CMPOPS = {ast.Lt: [ast.LtE], ast.LtE: [ast.Lt], ast.Gt: [ast.GtE], ast.GtE: [ast.Gt],
          ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is], ast.In: [ast.NotIn],
          ast.NotIn: [ast.In]}
DROPPABLE_METHODS = {"conj", "real", "float", "double", "contiguous", "clone", "t", "sqrt", "abs", "flip"}


@dataclass
class Mutant:
    id: str
    file: str
    line: int
    description: str
    source: str  # the whole mutated file
    tests: str
    names: tuple | None = None  # the target's function names


def _qualnames(tree: ast.AST):
    """(qualified name, node) of every function, class and module-level assignment."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, name + ".")
            elif isinstance(child, (ast.Assign, ast.AnnAssign)) and not prefix:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        yield t.id, child
    yield from walk(tree, "")


def _variants(node: ast.AST):
    """(description, replacement node or 'pass') for one node."""
    if isinstance(node, ast.BinOp):
        for new in BINOPS.get(type(node.op), []):
            m = copy.deepcopy(node)
            m.op = new()
            yield f"{type(node.op).__name__} → {new.__name__}", m
        yield "drop right operand", copy.deepcopy(node.left)
        if not isinstance(node.op, ast.Pow):  # x ** 2 → 2 is no bug anyone writes
            yield "drop left operand", copy.deepcopy(node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
        yield f"drop unary {type(node.op).__name__}", copy.deepcopy(node.operand)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1:
        for new in CMPOPS.get(type(node.ops[0]), []):
            m = copy.deepcopy(node)
            m.ops = [new()]
            yield f"{type(node.ops[0]).__name__} → {new.__name__}", m
    elif isinstance(node, ast.BoolOp):
        m = copy.deepcopy(node)
        m.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield f"{type(node.op).__name__} → {type(m.op).__name__}", m
        for i in range(len(node.values)):
            yield f"keep only operand {i} of {type(node.op).__name__}", copy.deepcopy(node.values[i])
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        v = node.value
        for nv in [v + 1] if isinstance(v, int) else [v * 10 if v != 0 else 1.0]:
            yield f"constant {v!r} → {nv!r}", ast.Constant(nv)
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield f"constant {node.value} → {not node.value}", ast.Constant(not node.value)
    elif isinstance(node, ast.Call):
        if len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
            m = copy.deepcopy(node)
            m.args[0], m.args[1] = m.args[1], m.args[0]
            yield "swap the first two arguments", m
        if (isinstance(node.func, ast.Attribute) and node.func.attr in DROPPABLE_METHODS and not node.args
                and not node.keywords):
            yield f"drop .{node.func.attr}()", copy.deepcopy(node.func.value)
    elif isinstance(node, ast.Attribute) and node.attr in DROPPABLE_METHODS and isinstance(node.ctx, ast.Load):
        if node.attr == "real":
            yield "drop .real", copy.deepcopy(node.value)


def _in_store(node, parents):
    p = parents.get(node)
    while p is not None:
        if isinstance(p, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node in ast.walk(
                p.targets[0] if isinstance(p, ast.Assign) else p.target):
            return True
        if isinstance(p, ast.stmt):
            return False
        p = parents.get(p)
    return False


def _skip(node, parents) -> bool:
    """Docstrings, f-string parts, annotations, default-argument and error-message constants."""
    p = parents.get(node)
    if isinstance(p, (ast.JoinedStr, ast.FormattedValue)):
        return True
    while p is not None:
        if isinstance(p, (ast.JoinedStr, ast.Raise)):
            return True
        if isinstance(p, ast.arg) or (isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in ast.walk(
                p.args)):
            return True
        if isinstance(p, ast.stmt):
            break
        p = parents.get(p)
    return False


def mutants_for(file: str, names: list[str] | None, tests: str) -> list[Mutant]:
    text = (ROOT / file).read_text()
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln.encode()))
    raw = text.encode()
    tree = ast.parse(text)
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    scopes = [tree] if names is None else [n for q, n in _qualnames(tree) if q in names]
    missing = set(names or []) - {q for q, _ in _qualnames(tree)}
    if missing:
        raise SystemExit(f"{file}: no {sorted(missing)}")
    seen, ids, out = set(), set(), []
    for scope in scopes:
        for node in ast.walk(scope):
            if node in seen or not hasattr(node, "lineno") or node.lineno != node.end_lineno:
                continue
            seen.add(node)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                variants = [("replace the call statement by pass", "pass")]
            elif isinstance(node, ast.expr) and not _skip(node, parents) and not _in_store(node, parents):
                variants = list(_variants(node))
            else:
                continue
            start = offsets[node.lineno - 1] + node.col_offset
            end = offsets[node.end_lineno - 1] + node.end_col_offset
            for desc, new in variants:
                code = new if isinstance(new, str) else f"({ast.unparse(new)})"
                mutated = (raw[:start] + code.encode() + raw[end:]).decode()
                try:
                    ast.parse(mutated)
                except SyntaxError:
                    continue
                if mutated == text:
                    continue
                orig = raw[start:end].decode()
                key = f"{file}:{node.lineno}:{orig}:{desc}"
                if hashlib.sha1(key.encode()).hexdigest()[:10] in ids:  # the same text twice on one line
                    key = f"{file}:{node.lineno}:{node.col_offset}:{orig}:{desc}"
                mid = hashlib.sha1(key.encode()).hexdigest()[:10]
                ids.add(mid)
                out.append(Mutant(mid, file, node.lineno, f"`{orig}`: {desc}", mutated, tests,
                                  tuple(names) if names else None))
    return out


def run_mutant(m: Mutant, tree: Path, timeout: float) -> tuple[str, float, str]:
    """'killed' | 'survived' | 'timeout', seconds, the first failing test. The tests run in a forked child of
    this process (torch, numpy and pytest already imported; ddpg imported fresh from the mutated tree)."""
    target = tree / m.file
    original = target.read_text()
    target.write_text(m.source)
    tests = [t for t in m.tests.split() if (tree / t.split("::")[0]).is_file()]  # files added later may be missing
    log = tree.parent / "child.log"
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        try:
            signal.alarm(int(timeout))
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(tree)
            sys.path.insert(0, str(tree / "src"))
            sys.dont_write_bytecode = True
            code = pytest.main(["-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", "--no-header",
                                "-W", "ignore", *tests])
            sys.stdout.flush()
            os._exit(int(code))
        except BaseException:
            os._exit(99)
    try:
        _, raw = os.waitpid(pid, 0)
    finally:
        target.write_text(original)
    secs = time.perf_counter() - start
    out = log.read_text(errors="replace")
    if os.WIFSIGNALED(raw):
        return ("timeout" if os.WTERMSIG(raw) == signal.SIGALRM else "killed"), secs, f"signal {os.WTERMSIG(raw)}"
    code = os.WEXITSTATUS(raw)
    first = next((ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))), "")
    if code in (2, 3, 4, 99) and not first:  # interrupted, internal or usage error: not a test verdict
        first = f"pytest exit {code}: " + out.strip().splitlines()[-1][:150] if out.strip() else f"exit {code}"
    return ("survived" if code == 0 else "killed"), secs, first[:200]


def copy_tree(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files of the worktree, plus the shared fixtures link."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def write_report(path: Path, mutants: list[Mutant], results: dict, command: str, machine: str) -> None:
    by_status: dict[str, list[Mutant]] = {}
    for m in mutants:
        r = results.get(m.id)
        if r is None:
            continue
        status = "equivalent" if r["status"] == "survived" and m.id in EQUIVALENT else r["status"]
        by_status.setdefault(status, []).append(m)
    n = {k: len(v) for k, v in by_status.items()}
    lines = ["# Mutation check of the core", "",
             f"Command: `{command}`", "",
             f"Machine: {machine}.", "",
             f"Mutants generated: {len(mutants)}; tried: {sum(n.values())} (one target after another in turn, "
             "so an unfinished run covers every target) — killed "
             f"{n.get('killed', 0)}, timed out (counted as killed) {n.get('timeout', 0)}, surviving "
             f"{n.get('survived', 0)}, equivalent {n.get('equivalent', 0)}.", "",
             "| file | functions | tests | generated | tried | killed | surviving | equivalent |",
             "|---|---|---|---|---|---|---|---|"]
    for file, names, tests in TARGETS:
        generated = [m for m in mutants if _owner(m, file, names)]
        ms = [m for m in generated if m.id in results]
        counts = {s: sum(1 for m in ms if m in by_status.get(s, [])) for s in ("killed", "timeout", "survived",
                                                                                "equivalent")}
        lines.append(f"| {file} | {', '.join(names) if names else '(all)'} | {tests} | {len(generated)} | {len(ms)} | "
                     f"{counts['killed'] + counts['timeout']} | {counts['survived']} | {counts['equivalent']} |")
    for title, key in (("Surviving mutants", "survived"), ("Equivalent mutants", "equivalent")):
        lines += ["", f"## {title}", ""]
        items = by_status.get(key, [])
        if not items:
            lines.append("None.")
        for m in items:
            why = f" — {EQUIVALENT[m.id]}" if key == "equivalent" else ""
            lines.append(f"- `{m.id}` {m.file}:{m.line} {m.description}{why}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _owner(m: Mutant, file: str, names) -> bool:
    return m.file == file and m.names == (tuple(names) if names else None)


def _round_robin(mutants: list[Mutant]) -> list[Mutant]:
    """One mutant of each target in turn, so a run cut short has covered every target."""
    groups: dict = {}
    for m in mutants:
        groups.setdefault((m.file, m.names), []).append(m)
    out = []
    for i in range(max(len(g) for g in groups.values())):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated substrings of the file, tests or mutant id to "
                    "restrict to")
    ap.add_argument("--results", type=Path, default=Path(tempfile.gettempdir()) / "ddpg_mutation.jsonl")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "results" / "mutation_report.md")
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--rerun-survivors", action="store_true")
    ap.add_argument("--command", default="", help="the command line to name in the report")
    ap.add_argument("--machine", default="the 2-core development machine (CPU only)",
                    help="where the mutants ran, for the report")
    ap.add_argument("--list", action="store_true", help="only list the mutants")
    ap.add_argument("--report-only", action="store_true", help="write the report from the results file")
    args = ap.parse_args()
    mutants = []
    for file, names, tests in TARGETS:
        mutants += mutants_for(file, names, tests)
    if args.list:
        for m in mutants:
            print(m.id, f"{m.file}:{m.line}", m.description)
        print(len(mutants), "mutants")
        return
    results: dict = {}
    if args.results.exists():
        for ln in args.results.read_text().splitlines():
            r = json.loads(ln)
            results[r["id"]] = r
    if args.report_only:
        write_report(args.report, mutants, results, args.command or "python benchmarks/mutation_check.py",
                     args.machine)
        print("report:", args.report)
        return
    patterns = args.only.split(",")
    todo = [m for m in _round_robin(mutants)
            if any(p in m.file or p == m.id or p in m.tests for p in patterns)
            and (m.id not in results or (args.rerun_survivors and results[m.id]["status"] == "survived"
                                         and m.id not in EQUIVALENT))]
    print(f"{len(mutants)} mutants, {len(todo)} to run", flush=True)
    with tempfile.TemporaryDirectory(prefix="ddpg-mut-") as tmp:
        tree = copy_tree(Path(tmp) / "tree")
        shared = ROOT.parent / "shared"
        if shared.exists():  # the optional reference fixtures beside the checkout (conftest.SHARED), for the tree
            (Path(tmp) / "shared").symlink_to(shared.resolve())
        for i, m in enumerate(todo):
            status, secs, first = run_mutant(m, tree, args.timeout)
            r = {"id": m.id, "file": m.file, "line": m.line, "description": m.description, "status": status,
                 "seconds": round(secs, 1), "first_failure": first}
            results[m.id] = r
            with args.results.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"[{i + 1}/{len(todo)}] {status:8s} {secs:5.1f}s {m.file}:{m.line} {m.description}", flush=True)
    command = "python benchmarks/mutation_check.py" + (f" --only {args.only}" if args.only else "")
    write_report(args.report, mutants, results, args.command or command, args.machine)
    print("report:", args.report)


if __name__ == "__main__":
    main()
