"""A plug-in task for the tests: ``vflip``, images flipped upside down — one Operator subclass (A and Aᵀ only;
P_η and A⁺ come from the base class's conjugate gradients) and one table row. Tests register it with
``register_task``; a ``ddpg serve`` subprocess loads it with ``DDPG_TASKS=flip_task:TASKS``."""

from __future__ import annotations

import torch

from ddpg.operators.base import Operator
from ddpg.operators.tasks import Task


class VerticalFlip(Operator):
    """y = x with its rows in reverse order (B, 3, H, W); Aᵀ = A."""

    name = "vflip"

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self.check_image(x)
        return x.flip(-2)

    def At(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return y.flip(-2)


def build_vflip(hw: tuple[int, int], impl: str | None, params: dict) -> Operator:
    return VerticalFlip(hw)


TASKS = {"vflip": Task(build_vflip, (), (), cli="vflip")}
