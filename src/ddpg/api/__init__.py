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

from ddpg.api.degradation import degrade
from ddpg.api.evaluation import evaluate
from ddpg.api.report import NullProgress, Report
from ddpg.api.request import RestoreRequest
from ddpg.api.restoration import (
    RUN_SUMMARY,
    InputJob,
    RestorePlan,
    plan_restore,
    prepare_input,
    restore,
    restore_on_ranks,
    sidecar_record,
    write_outputs,
)
from ddpg.api.sample import restore_sample, sample_path
from ddpg.api.settings import CLI_TASKS, DEFAULT_SIGMA_Y, parse_hyper

__all__ = ["CLI_TASKS", "DEFAULT_SIGMA_Y", "RUN_SUMMARY", "InputJob", "NullProgress", "Report", "RestorePlan",
           "RestoreRequest", "degrade", "evaluate", "parse_hyper", "plan_restore", "prepare_input", "restore",
           "restore_on_ranks", "restore_sample", "sample_path", "sidecar_record", "write_outputs"]
