"""A new task is one Operator subclass and one table row (``tests/flip_task.py``): registered with
``register_task`` (or loaded from ``DDPG_TASKS`` by a ``ddpg serve`` process), it restores through the command
line, ``ddpg.restore`` and a served request — the same PNG each way — with no change to ``ddpg.api``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ddpg
from ddpg.cli.main import app
from ddpg.errors import OperatorError
from ddpg.io import save_image
from ddpg.operators import make_operator
from ddpg.operators.tasks import CLI_TASKS, TASK_TABLE, load_task_plugins, register_task, unregister_task
from flip_task import TASKS
from serve_process import WAIT_S, ServerProcess

SETTINGS = ["--task", "vflip", "--prior", "gaussian", "--steps", "4", "--sigma-y", "0", "--seed", "3"]


@pytest.fixture
def vflip():
    register_task("vflip", TASKS["vflip"])
    try:
        yield
    finally:
        unregister_task("vflip")
    assert "vflip" not in TASK_TABLE and "vflip" not in CLI_TASKS


@pytest.fixture
def face(tmp_path):
    path = tmp_path / "in" / "face.png"
    path.parent.mkdir()
    save_image(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), path)
    return path


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_a_registered_task_restores_through_the_cli_and_the_api_alike(vflip, face, tmp_path):
    assert "vflip" in CLI_TASKS and make_operator("vflip", 8).name == "vflip"
    result = CliRunner().invoke(app, ["restore", "--prior", "gaussian", str(face), "-o", str(tmp_path / "cli"), "-q",
                                      *SETTINGS])
    assert result.exit_code == 0, result.output
    assert np.array_equal(pixels(tmp_path / "cli" / "face_observed.png"), pixels(face)[::-1])  # y = A x, σ_y 0
    report = ddpg.restore([str(face)], tmp_path / "api", task="vflip", prior="gaussian", steps=4, sigma_y=0.0, seed=3)
    assert len(report.done) == 1
    for name in ("face_restored.png", "face_observed.png"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    sidecar = json.loads((tmp_path / "api" / "face.json").read_text())
    assert sidecar["task"] == "vflip" and sidecar["operator"]["name"] == "vflip"


def test_ddpg_serve_loads_the_task_from_ddpg_tasks_and_serves_the_same_png(vflip, face, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPG_TASKS", "flip_task:TASKS")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # where flip_task is
    server = ServerProcess(tmp_path)
    try:
        assert "vflip" in httpx.get(server.url + "/v1/models").json()["models"][0]["tasks"]

        async def post():
            async with httpx.AsyncClient(timeout=WAIT_S) as client:
                return await client.post(server.url + "/v1/restore", files={"image": (face.name, face.read_bytes())},
                                         data={"task": "vflip", "steps": "4", "sigma_y": "0", "seed": "3"})

        response = asyncio.run(post())
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    result = CliRunner().invoke(app, ["restore", "--prior", "gaussian", str(face), "-o", str(tmp_path / "twin"), "-q",
                                      *SETTINGS])
    assert result.exit_code == 0, result.output
    assert response.content == (tmp_path / "twin" / "face_restored.png").read_bytes()


def test_registration_refuses_taken_names_and_bad_plugins(vflip):
    with pytest.raises(OperatorError, match="the task name 'vflip' is taken"):
        register_task("vflip", TASKS["vflip"])
    with pytest.raises(OperatorError, match="the task name 'inpaint' is taken"):
        register_task("other", TASKS["vflip"].__class__(TASKS["vflip"].build, (), (), cli="inpaint"))
    with pytest.raises(OperatorError, match="not a registered plug-in task"):
        unregister_task("inpainting")
    with pytest.raises(OperatorError, match="DDPG_TASKS: cannot load 'no_such_module:TASKS'"):
        load_task_plugins("no_such_module:TASKS")
    with pytest.raises(OperatorError, match="is not a mapping of task name"):
        load_task_plugins("flip_task:build_vflip")
    assert load_task_plugins("") == [] and load_task_plugins(None) == []
