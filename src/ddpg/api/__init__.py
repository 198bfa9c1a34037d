"""The Python API behind the command line: :func:`restore` (of a :class:`RestoreRequest`), :func:`degrade`,
:func:`evaluate`; :func:`plan_restore`, :func:`prepare_input` and :func:`write_outputs` are restore's own steps
for callers that batch the sampling themselves (``ddpg serve``). Errors name the Python parameter
(:class:`~ddpg.errors.ParameterError`), never a command-line flag.

Each keeps going when one input fails, writes every output atomically (an image's files appear together,
its JSON sidecar last), locks its output folder and replaces there only its own outputs of the same settings
(:mod:`ddpg.api.outputs`), stops cleanly on KeyboardInterrupt, and returns a :class:`Report` naming what was
done, skipped (with why) and failed. Setup problems (unknown task/preset/prior/backend, missing weights) raise
``DdpgError`` before any input is touched. Images are read in [0, 1] and mapped to [-1, 1] for the samplers.
"""

from ddpg.lazy import lazy_exports

# each public name → its module, imported on first use (most import torch; the command line reads RestoreRequest's
# fields without it)
_HOMES = {"degrade": ".degradation", "evaluate": ".evaluation", "NullProgress": ".report", "Report": ".report",
          "RestoreRequest": ".request", "RUN_SUMMARY": ".restoration", "InputJob": ".restoration",
          "RestorePlan": ".restoration", "plan_restore": ".restoration", "prepare_input": ".restoration",
          "restore": ".restoration", "restore_on_ranks": ".restoration", "sidecar_record": ".restoration",
          "write_outputs": ".restoration", "restore_sample": ".sample", "sample_path": ".sample",
          "CLI_TASKS": ".settings", "DEFAULT_SIGMA_Y": "ddpg.checks", "parse_hyper": ".settings"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
