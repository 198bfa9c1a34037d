"""``--threads auto|N`` (ddpg.threads): one option on restore, serve, bench and evaluate, refused by name when bad;
auto's rule (cores minus the load, at least 1; OMP_NUM_THREADS wins) with the CPU count and load given, no
timing; the count applied to torch, recorded in the sidecar and the settings line; the restoration does not
depend on it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ddpg import threads as threads_module
from ddpg.api.request import RestoreRequest
from ddpg.bench.config import BenchConfig
from ddpg.cli.main import app
from ddpg.errors import ParameterError
from ddpg.samples import sample_path
from ddpg.serve.options import ServeOptions
from ddpg.threads import check_threads, resolve_threads

runner = CliRunner()
TINY = "{kind: ddpm, ch: 32, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [], image_size: 32}"


@pytest.fixture
def keep_threads(monkeypatch):
    """Whatever a test applies, torch's thread count and the applied count are put back after it."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads_module, "_applied", threads_module.applied_threads())
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cpus", "load", "expected"), [(2, 0.3, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.4, 1),
                                                         (2, 7.0, 1), (16, 3.2, 13), (1, 0.0, 1), (8, 0.0, 8)])
def test_auto_is_the_cores_not_busy(cpus, load, expected):
    assert resolve_threads("auto", cpus=cpus, load=load, environ={}) == expected


def test_omp_num_threads_wins_over_auto_but_not_over_a_number():
    assert resolve_threads("auto", cpus=2, load=0.0, environ={"OMP_NUM_THREADS": "1"}) == 1
    assert resolve_threads("auto", cpus=2, load=2.0, environ={"OMP_NUM_THREADS": "4,2"}) == 4
    assert resolve_threads("auto", cpus=2, load=0.0, environ={"OMP_NUM_THREADS": "lots"}) == 2  # not a count
    assert resolve_threads(3, cpus=2, load=5.0, environ={"OMP_NUM_THREADS": "1"}) == 3
    assert resolve_threads("2", cpus=8, load=0.0, environ={}) == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", "", 0, True, 2.0])
def test_bad_counts_are_refused_by_name(bad):
    with pytest.raises(ParameterError, match="threads"):
        check_threads(bad)
    with pytest.raises(ParameterError, match="threads"):
        RestoreRequest(inputs=["x.png"], outdir="out", threads=bad)
    with pytest.raises(ParameterError, match="threads"):
        BenchConfig(threads=bad).validate()


def test_every_command_has_the_one_option():
    declared = {cls: next(f for f in cls.__dataclass_fields__.values() if f.name == "threads")
                for cls in (RestoreRequest, ServeOptions, BenchConfig, threads_module.ThreadsOption)}
    docs = {f.metadata["ddpg.option"] for f in declared.values()}
    assert len(docs) == 1 and {f.default for f in declared.values()} == {"auto"}
    for command in (["restore"], ["serve"], ["bench"], ["evaluate"], ["evaluate", "suite"]):
        res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "--threads" in res.output, command


@pytest.mark.parametrize("command", [["restore", "x.png", "-o", "out"], ["serve"], ["bench"],
                                     ["evaluate", "--pred", "p", "--gt", "g"], ["evaluate", "suite", "plan.yaml"]])
def test_a_bad_count_exits_2_naming_threads(command):
    res = runner.invoke(app, [*command, "--threads", "many"])
    assert res.exit_code == 2 and "--threads" in res.output and "many" in res.output, res.output


def test_restore_on_one_or_two_threads_is_the_same_restoration(tmp_path, keep_threads):
    """The measurement is the same bytes; the restoration the same within one 8-bit level at a few pixels (a
    convolution's sums are split differently across 1 and 2 threads: measured here, 1 pixel of 4096 off by 1)."""
    outputs, stem = {}, sample_path().stem
    for n in (1, 2):
        out = tmp_path / f"t{n}"
        res = runner.invoke(app, ["restore", str(sample_path()), "-o", str(out), "--prior", "face64", "--steps", "3",
                                  "--threads", str(n)], env={"COLUMNS": "400"})
        assert res.exit_code == 0, res.output
        line = next(line for line in res.output.splitlines() if "restore: " in line)
        assert line.rstrip().endswith(f", {n} CPU threads") and torch.get_num_threads() == n, line
        assert json.loads((out / f"{stem}.json").read_text())["speed"]["threads"] == n
        outputs[n] = {kind: out / f"{stem}_{kind}.png" for kind in ("restored", "observed")}
    assert outputs[1]["observed"].read_bytes() == outputs[2]["observed"].read_bytes()
    one, two = (np.asarray(Image.open(outputs[n]["restored"]), dtype=np.int16) for n in (1, 2))
    assert np.abs(one - two).max() <= 1 and np.mean(one != two) < 0.01


def test_auto_resolves_once_per_process(keep_threads, monkeypatch):
    monkeypatch.setattr(threads_module, "_applied", None)
    monkeypatch.setattr(threads_module, "load_average", lambda: 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    first = threads_module.use_threads("auto")
    assert first == threads_module.available_cpus() == torch.get_num_threads()
    monkeypatch.setattr(threads_module, "load_average", lambda: 50.0)  # now our own work is in the load
    assert threads_module.use_threads("auto") == first
    assert threads_module.use_threads(1) == 1 == threads_module.applied_threads()


def test_bench_applies_it(keep_threads):
    res = runner.invoke(app, ["bench", "--prior", TINY, "--steps", "1", "--iters", "1", "--warmup", "0",
                              "--size", "32", "--no-accuracy", "--no-profile", "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert "threads: 2" in res.output and torch.get_num_threads() == 2


def test_evaluate_applies_it(tmp_path, keep_threads):
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / folder / "a.png")
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--threads",
                              "2", "--no-set-metrics", "--no-lpips", "-q"])
    assert res.exit_code == 0, res.output
    assert torch.get_num_threads() == 2


def test_serve_applies_it(tmp_path, keep_threads):
    from ddpg.serve.server import build_state

    state = build_state(ServeOptions(prior="gaussian", threads=2), tmp_path)
    try:
        assert torch.get_num_threads() == 2 == threads_module.applied_threads()
    finally:
        state.scheduler.close()
