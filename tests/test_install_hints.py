"""Install hints name the distribution as PyPI knows it (``ddpg-restore``: PyPI's ``ddpg`` is an unrelated
project) and an extra the project declares, and reach the user whole."""

import re
import sys
from pathlib import Path

import pytest

from ddpg.errors import ConfigError
from ddpg.versions import DISTRIBUTION, install_hint

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_distribution_name_is_the_one_hints_give():
    assert PYPROJECT["project"]["name"] == DISTRIBUTION != "ddpg"
    assert install_hint("serve") == "pip install 'ddpg-restore[serve]' (in a checkout: pip install -e '.[serve]')"


def test_every_hinted_extra_is_declared_and_no_hint_names_the_wrong_distribution():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    sources = {p: p.read_text() for p in (ROOT / "src" / "ddpg").rglob("*.py")}
    hinted = {m for text in sources.values() for m in re.findall(r"install_hint\(['\"](\w+)['\"]\)", text)}
    assert hinted and hinted <= extras, hinted - extras
    wrong = [str(p) for p, text in sources.items() if re.search(r"pip install ['\"]?ddpg\[", text)]
    assert not wrong, f"install hints naming PyPI's unrelated 'ddpg': {wrong}"


def test_a_missing_onnxruntime_names_its_extra(monkeypatch):
    from ddpg.runtime.backends import onnxruntime as ort_backend

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ConfigError, match=re.escape("pip install 'ddpg-restore[onnx]'")):
        ort_backend._ort()


def test_ddpg_serve_without_its_extra_prints_the_whole_hint(monkeypatch):
    from typer.testing import CliRunner

    from ddpg.cli.main import app

    monkeypatch.setitem(sys.modules, "ddpg.serve.server", None)  # as if uvicorn/starlette were missing
    res = CliRunner().invoke(app, ["serve", "--prior", "gaussian"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "pip install 'ddpg-restore[serve]' (in a checkout: pip install -e '.[serve]')" in text  # [serve] kept


def test_ddpg_export_without_onnx_names_its_extra_in_one_line(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ddpg.cli.main import app

    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    res = CliRunner().invoke(app, ["export", "--prior", "face64", "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 3, res.output
    assert "export needs onnx, onnxscript: pip install 'ddpg-restore[onnx]'" in " ".join(res.output.split())
    assert not any(tmp_path.iterdir())
