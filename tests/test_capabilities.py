"""Capabilities as data (docs/architecture.md §5): what a method with its params needs and allows
(``MethodCapabilities``), what a backend can do (``BackendCapabilities``) and the fields every denoiser sets
(``DenoiserInterface``); code outside the samplers and the backends reads these records, never a method's or a
backend's name, and never probes a denoiser with ``getattr``/``hasattr``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from ddpg.errors import ConfigError
from ddpg.models import as_denoiser, create_prior
from ddpg.models.denoiser import PREDICTIONS, BackendCapabilities, DenoiserInterface
from ddpg.runtime.backends.capabilities import BACKENDS, CAPABILITIES, backend_capabilities
from ddpg.runtime.samplers import SAMPLERS, get_sampler, methods_where
from ddpg.runtime.samplers.method import MethodCapabilities
from ddpg.schedule import Schedule
from fake_denoiser import FakeDenoiser

SRC = Path(__file__).resolve().parents[1] / "src" / "ddpg"
FIELDS = tuple(DenoiserInterface.__annotations__)
TINY_DDPM = {"kind": "ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
             "image_size": 16}


# --- methods ------------------------------------------------------------------------------------------------------

def capabilities_of(method: str, **hyper) -> MethodCapabilities:
    spec = get_sampler(method)
    return spec.capabilities(spec.build(0.05, hyper))


def test_each_method_says_what_its_params_need_and_allow():
    for method in ("ddpg", "idpg", "ddnm", "ddrm", "diffpir"):
        assert capabilities_of(method) == MethodCapabilities(), method
        assert capabilities_of(method).capturable and capabilities_of(method).fixed_shape_steps
    selecting = capabilities_of("ddpg", select_candidates=True)
    assert selecting.noise_selection and not selecting.capturable and not selecting.fixed_shape_steps
    assert selecting.why_not == "selects its noise among candidates"
    assert capabilities_of("dps") == MethodCapabilities(needs_grad=True)
    assert capabilities_of("dpps") == MethodCapabilities(needs_grad=True, noise_selection=True)
    assert capabilities_of("dpps").why_not == "differentiates through the UNet"


def test_a_step_with_a_host_read_is_batched_but_never_captured():
    reads = MethodCapabilities(host_reads=True)
    assert reads.fixed_shape_steps and not reads.capturable
    assert reads.why_not == "reads tensor values on the host in its step"
    assert MethodCapabilities().why_not == ""


def test_listings_come_from_the_records():
    from ddpg.runtime.graph_runner import GRAPH_METHODS
    from ddpg.serve.jobs import SERVED_METHODS

    assert GRAPH_METHODS == SERVED_METHODS == ("ddpg", "idpg", "ddnm", "ddrm", "diffpir")
    assert methods_where(lambda c: c.needs_grad) == ("dps", "dpps")
    assert set(SAMPLERS) == set(GRAPH_METHODS) | {"dps", "dpps"}


def test_serve_refuses_by_capability_naming_the_field_and_what_the_method_does():
    from ddpg.api.settings import apply_hyper, resolve_settings
    from ddpg.serve.jobs import FieldError, check_served

    ddpg = resolve_settings("sr4", "ddpg", None, "gaussian", None, None)
    check_served(ddpg, "hyper")  # batched
    selecting = apply_hyper(ddpg, {"select_candidates": True}, False)
    with pytest.raises(FieldError, match="ddpg with these settings selects its noise among candidates") as hyper:
        check_served(selecting, "hyper")
    assert hyper.value.field == "hyper"
    with pytest.raises(FieldError, match="dps with these settings differentiates through the UNet") as method:
        check_served(resolve_settings("sr4", "dps", None, "gaussian", None, None), "method")
    assert method.value.field == "method"


# --- backends -----------------------------------------------------------------------------------------------------

def test_every_backend_has_a_record_and_an_unknown_one_is_refused():
    assert set(CAPABILITIES) == set(BACKENDS) == {"torch", "onnxruntime", "tensorrt", "openvino"}
    assert all(isinstance(c, BackendCapabilities) for c in CAPABILITIES.values())
    assert [b for b in BACKENDS if backend_capabilities(b).grad] == ["torch"]
    assert [b for b in BACKENDS if backend_capabilities(b).engine_call_graph] == ["onnxruntime"]
    assert [b for b in BACKENDS if backend_capabilities(b).plan_from_onnx] == ["tensorrt", "openvino"]
    with pytest.raises(ConfigError, match="unknown backend 'tvm'; choose one of torch, onnxruntime, tensorrt, "
                                          "openvino"):
        backend_capabilities("tvm")


# --- the denoiser interface ---------------------------------------------------------------------------------------

def tensorrt_from_bindings(monkeypatch):
    """A TensorRTDenoiser built by ``from_bindings`` on a fake engine and stand-in CUDA streams (no GPU)."""
    from ddpg.engine_sidecar import ShapeProfile
    from ddpg.runtime.backends.cuda_stream import SideStream
    from ddpg.runtime.backends.tensorrt import Bindings, EngineShapes, TensorRTDenoiser
    from fake_cuda import fake_cuda
    from fake_trt_engine import FakeEngine, fake_trt

    fake_cuda(monkeypatch, [])
    trt = fake_trt()
    fixed = ShapeProfile.from_mapping({"x": ((1, 3, 8, 8),) * 3, "t": ((1,),) * 3})
    side = SideStream(torch.device("cpu"))
    bindings = Bindings(trt, FakeEngine(trt, profiles=1), EngineShapes([fixed], "e.plan"), side.device,
                        lambda: side.handle, side.synchronize)
    return TensorRTDenoiser.from_bindings(bindings, side)


def test_every_denoiser_sets_every_field_of_the_interface(ddpm_engine, monkeypatch):
    from ddpg.api.suite import CountingDenoiser
    from ddpg.runtime.backends.onnxruntime import OrtDenoiser
    from ddpg.runtime.fast_denoiser import FastDenoiser

    class Zero(FakeDenoiser):  # the test helper's base, as the tests' stand-ins use it
        def __call__(self, x_t, t):
            return torch.zeros_like(x_t)

    gaussian = as_denoiser(create_prior("gaussian"))
    denoisers = [gaussian, FastDenoiser(create_prior(TINY_DDPM)), OrtDenoiser(ddpm_engine),
                 tensorrt_from_bindings(monkeypatch), CountingDenoiser(gaussian), Zero()]
    for den in denoisers:
        name = type(den).__name__
        assert isinstance(den, DenoiserInterface), (name, [f for f in FIELDS if not hasattr(den, f)])
        assert den.capabilities is CAPABILITIES[den.backend], name
        assert isinstance(den.schedule, Schedule) and den.prediction in PREDICTIONS, name
        assert isinstance(den.config, dict) and isinstance(den.graph_safe, bool), name
        assert (den.info is None) != den.capabilities.engine_file or name == "TensorRTDenoiser", name
        assert isinstance(den.options(), dict), name
    assert not isinstance(object(), DenoiserInterface)


def fields_set(cls: ast.ClassDef) -> dict[str, set[str]]:
    """{constructor: the interface names it leaves set}: names bound in the class body (fields and methods) plus the
    attributes ``__init__`` sets on ``self`` or a classmethod sets on the object it makes with ``cls.__new__``."""
    body = {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    body |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    body |= {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    sets = {}
    for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        made = fn.name == "__init__" or "cls.__new__" in ast.unparse(fn)
        if made:
            attrs = {t.attr for n in ast.walk(fn) if isinstance(n, (ast.Assign, ast.AnnAssign))
                     for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                     for t in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(t, ast.Attribute)}
            sets[fn.name] = body | attrs
    return sets


def missing_fields(source: str) -> dict[str, list[str]]:
    """{Class.constructor: the interface fields it leaves unset} for every class named ``…Denoiser`` in ``source``
    that does not forward its fields (``__getattr__``)."""
    missing = {}
    for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name.endswith("Denoiser")):
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in cls.body):
            continue
        for constructor, names in fields_set(cls).items():
            missing[f"{cls.name}.{constructor}"] = [f for f in (*FIELDS, "options") if f not in names]
    return missing


def test_every_denoiser_class_sets_every_field_in_each_constructor():
    """Statically, so that TensorRTDenoiser.__init__ (which needs a GPU) is covered too."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        found.update(missing_fields(path.read_text()))
    assert {"Denoiser.__init__", "FastDenoiser.__init__", "OrtDenoiser.__init__", "TensorRTDenoiser.__init__",
            "TensorRTDenoiser.from_bindings"} <= set(found)
    assert not {k: v for k, v in found.items() if v}, found


def test_the_field_checker_catches_a_planted_missing_field():
    source = ("class HalfDenoiser:\n    backend = 'x'\n    def __init__(self):\n"
              "        self.name, self.config = 'a', {}\n"
              "    @classmethod\n    def bare(cls):\n        den = cls.__new__(cls)\n        den.info = None\n"
              "        return den\n")
    missing = missing_fields(source)
    assert "schedule" in missing["HalfDenoiser.__init__"] and "name" not in missing["HalfDenoiser.__init__"]
    assert "info" not in missing["HalfDenoiser.bare"] and "name" in missing["HalfDenoiser.bare"]


# --- no names, no probes ------------------------------------------------------------------------------------------

def _strings(node: ast.AST) -> set[str]:
    """The string literals ``node`` is or holds (a tuple, list or set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(set(), *(_strings(e) for e in node.elts))
    return set()


def name_tests(source: str, *, methods: bool, backends: bool) -> list[str]:
    """Comparisons in ``source`` that test a method by its name (against a method-name literal, or membership in a
    ``…_METHODS`` listing) or a backend by its name (a ``…backend`` expression against a backend-name literal)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        literals = set().union(*(_strings(s) for s in sides))
        listing = any(isinstance(op, (ast.In, ast.NotIn)) and ast.unparse(c).endswith("_METHODS")
                      for op, c in zip(node.ops, node.comparators, strict=True))
        about_backend = any(ast.unparse(s).split(".")[-1].endswith("backend") for s in sides)
        if (methods and (literals & set(SAMPLERS) or listing)) or (
                backends and about_backend and literals & set(BACKENDS)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_tests_a_method_or_a_backend_by_its_name():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        methods, backends = not rel.startswith("runtime/samplers/"), not rel.startswith("runtime/backends/")
        bad += [f"src/ddpg/{rel}:{hit}" for hit in name_tests(path.read_text(), methods=methods, backends=backends)]
    assert not bad, "ask the capability record instead:\n" + "\n".join(bad)


def test_the_name_checker_catches_planted_name_tests():
    source = ("a = method == 'ddpg'\nb = settings.method not in GRAPH_METHODS\nc = spec.name in ('dps', 'dpps')\n"
              "d = request.backend != 'onnxruntime'\ne = backend == 'torch'\n"
              "f = format == 'tensorrt'\ng = device.type == 'cuda'\nh = name == 'face64'\n")
    assert [hit.split(":")[0] for hit in name_tests(source, methods=True, backends=True)] == ["1", "2", "3", "4", "5"]


def probes(source: str) -> list[str]:
    """``getattr``/``hasattr`` calls on a denoiser (their first argument named ``…denoiser``) in ``source``."""
    return [f"{n.lineno}: {ast.unparse(n)}" for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr")
            and n.args and ast.unparse(n.args[0]).endswith("denoiser")]


def test_no_module_probes_a_denoiser_for_an_optional_attribute():
    bad = [f"src/ddpg/{p.relative_to(SRC).as_posix()}:{hit}" for p in sorted(SRC.rglob("*.py"))
           for hit in probes(p.read_text())]
    assert not bad, "read the interface's field instead:\n" + "\n".join(bad)
    assert probes("x = getattr(self.denoiser, 'graph_safe', False)\ny = getattr(prior, 'config', {})\n") == [
        "1: getattr(self.denoiser, 'graph_safe', False)"]
