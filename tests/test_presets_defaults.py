"""The preset files hold only deviations: the method's params dataclass is the one place its defaults live,
so no ``defaults`` entry repeats a dataclass default and no row repeats its file's effective default; and a
loaded preset still carries every hyper-parameter (the dataclass defaults filled in)."""

from dataclasses import fields
from importlib import resources

import pytest
import yaml

from ddpg.runtime import list_presets, load_preset
from ddpg.runtime.samplers import SAMPLERS

ROW_KEYS = {"prior", "task", "sigma_y", "steps"}


def preset_files() -> dict[str, dict]:
    folder = resources.files("ddpg.configs").joinpath("presets")
    docs = [yaml.safe_load(f.read_text()) for f in folder.iterdir() if f.name.endswith(".yaml")]
    return {doc["method"]: doc for doc in docs}


def dataclass_defaults(method: str) -> dict:
    spec = SAMPLERS[method]
    return {f.name: f.default for f in fields(spec.params) if f.name in spec.hyper_names}


@pytest.mark.parametrize("method", list(SAMPLERS))
def test_no_preset_repeats_a_default(method):
    doc = preset_files()[method]
    base = dataclass_defaults(method)
    repeated = {k: v for k, v in doc.get("defaults", {}).items() if k in base and base[k] == v}
    assert not repeated, f"{method}.yaml defaults repeat the dataclass: {repeated}"
    effective = {**base, **doc.get("defaults", {})}
    for row in doc["settings"]:
        same = {k: v for k, v in row.items() if k not in ROW_KEYS and k in effective and effective[k] == v}
        assert not same, f"{method}.yaml row {row} repeats defaults {same}"


@pytest.mark.parametrize("method", list(SAMPLERS))
def test_loaded_presets_carry_every_hyper_parameter(method):
    names = list_presets(method)
    assert names
    for name in names:
        p = load_preset(name)
        assert set(p.hyper) == set(SAMPLERS[method].hyper_names), name
        SAMPLERS[method].build(p.sigma_y, p.hyper)  # valid params
