"""The preset files hold only deviations: the method's params dataclass is the one place its defaults live,
so no ``defaults`` entry repeats a dataclass default and no row repeats its file's effective default; and a
loaded preset still carries every hyper-parameter (the dataclass defaults filled in)."""

from dataclasses import fields
from importlib import resources

import pytest
import yaml

import ddpg.runtime.presets as presets
from ddpg.api.settings import resolve_settings
from ddpg.runtime import find_preset, list_presets, load_preset
from ddpg.runtime.samplers import SAMPLERS

ROW_KEYS = set(presets.ROW_KEYS)


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


def test_a_steps_variant_is_taken_only_at_its_steps(monkeypatch):
    doc = {"method": "ddpg", "source": "paper", "steps": 100, "tasks": {"sr4": {"task": "sr_bicubic", "scale": 4}},
           "prior_aliases": {"face64": "celeba_hq"},
           "settings": [{"prior": "celeba_hq", "task": "sr4", "sigma_y": 0.05, "gamma": 10},
                        {"prior": "face64", "task": "sr4", "sigma_y": 0.05, "at_steps": 25, "gamma": 20,
                         "source": "a search"}]}
    monkeypatch.setattr(presets, "_method_files", lambda: [doc])
    presets._catalogue.cache_clear()
    monkeypatch.setattr(presets, "_catalogue", presets._catalogue.__wrapped__)
    assert sorted(list_presets("ddpg")) == ["ddpg/celeba_hq/sr4/0.05", "ddpg/face64/sr4/0.05",
                                            "ddpg/face64/sr4/0.05@25"]
    variant = load_preset("ddpg/face64/sr4/0.05@25")
    assert (variant.steps, variant.at_steps, variant.hyper["gamma"], variant.source) == (25, 25, 20, "a search")
    assert find_preset("ddpg", "face64", "sr4", 0.05, 25) == "ddpg/face64/sr4/0.05@25"
    assert find_preset("ddpg", "face64", "sr4", 0.1, 25) == "ddpg/face64/sr4/0.05@25"  # nearest σ_y, then steps
    for steps in (None, 24, 100):
        assert find_preset("ddpg", "face64", "sr4", 0.05, steps) == "ddpg/face64/sr4/0.05"
    assert find_preset("ddpg", "celeba_hq", "sr4", 0.05, 25) == "ddpg/celeba_hq/sr4/0.05"  # face64's own
    at_25 = resolve_settings("sr4", "ddpg", None, "face64", 0.05, 25)
    at_50 = resolve_settings("sr4", "ddpg", None, "face64", 0.05, 50)
    assert (at_25.preset, at_25.steps, at_25.hyper["gamma"]) == ("ddpg/face64/sr4/0.05@25", 25, 20)
    assert (at_50.preset, at_50.steps, at_50.hyper["gamma"]) == ("ddpg/face64/sr4/0.05", 50, 10)
