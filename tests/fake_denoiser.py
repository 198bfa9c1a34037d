"""A base for test denoisers that compute their own output (test helper): every field of the denoiser interface
(``ddpg.models.denoiser.DenoiserInterface``) at a torch prior's values — the default schedule, ε prediction, no
engine, not graph-safe; a test subclasses it, overrides what it needs and defines ``__call__``. A test denoiser
that wraps a real one forwards the fields instead (``__getattr__``)."""

from ddpg.models.denoiser import TORCH_CAPABILITIES
from ddpg.schedule import linear_schedule


class FakeDenoiser:
    backend = "torch"
    capabilities = TORCH_CAPABILITIES
    name = None
    config: dict = {}
    schedule = linear_schedule()
    prediction = "epsilon"
    graph_safe = False
    compile_mode = None
    prior = None
    info = None

    def options(self) -> dict:
        return {}
