"""`ddpg models`, `ddpg presets`, and `--help` with an example on every command."""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from ddpg.cli.main import app
from ddpg.models import REGISTRY
from ddpg.models.checkpoints import local_path
from ddpg.runtime import list_presets, load_preset

runner = CliRunner()


def test_models_list_info_verify_download():
    res = runner.invoke(app, ["models", "list", "--json"])
    assert res.exit_code == 0, res.output
    listing = json.loads(res.output)
    rows = {r["name"]: r for r in listing["priors"]}
    assert rows["face64"]["status"] == "bundled" and rows["gaussian"]["status"].startswith("analytic")
    assert rows["face64"]["size"] == REGISTRY["face64"].size and listing["cache"]
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0 and "cache:" in res.output and "face64" in res.output
    res = runner.invoke(app, ["models", "info", "imagenet256_uncond"])
    info = json.loads(res.output)
    assert res.exit_code == 0 and info["config"]["kind"] == "adm" and info["checkpoint"]["urls"]
    res = runner.invoke(app, ["models", "verify", "face64"])
    path = local_path(REGISTRY["face64"])
    assert res.exit_code == 0 and hashlib.sha256(path.read_bytes()).hexdigest() in res.output
    assert "matches the registry" in res.output
    res = runner.invoke(app, ["models", "download", "face64"])  # bundled: no network, prints its path
    assert res.exit_code == 0 and str(path) in res.output
    for cmd in (["models", "info", "nope"], ["models", "verify", "gaussian"], ["models", "download", "nope"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2 and "error:" in res.output, (cmd, res.output)


def test_presets_list_and_show():
    res = runner.invoke(app, ["presets", "list", "--method", "idpg", "--prior", "celeba_hq"])
    assert res.exit_code == 0 and res.output.split() == list_presets("idpg", "celeba_hq")
    res = runner.invoke(app, ["presets", "show", "ddpg/celeba_hq/sr4/0.05"])
    assert res.exit_code == 0 and json.loads(res.output) == load_preset("ddpg/celeba_hq/sr4/0.05").to_dict()
    res = runner.invoke(app, ["presets", "show", "ddpg/nope/sr4/0"])
    assert res.exit_code == 2 and "unknown preset" in res.output


@pytest.mark.parametrize("cmd", [[], ["restore"], ["degrade"], ["evaluate"], ["models"], ["models", "list"],
                                 ["models", "info"], ["models", "download"], ["models", "verify"], ["presets"],
                                 ["presets", "list"], ["presets", "show"]])
def test_every_command_shows_an_example(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "ddpg " in res.output


def completion(line: str) -> str:
    """What zsh's completion shows for the command line ``line`` (option names with their help), unwrapped."""
    res = runner.invoke(app, [], prog_name="ddpg", env={"_DDPG_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line,
                                                        "COLUMNS": "2000"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_shell_completion_fills_the_help_fields_as_help_does():
    """Completing an option name shows its help with ``{tasks}``, ``{method_defaults}`` and ``{graph_methods}``
    filled in from the tables, as ``--help`` does."""
    from ddpg.cli.schema import HELP_FIELDS
    from ddpg.operators.tasks import CLI_TASKS
    from ddpg.runtime.graph_runner import GRAPH_METHODS

    tasks = " | ".join(CLI_TASKS)
    assert completion("ddpg degrade --t") == f"_arguments '*: :((\"--task\":\"{tasks}\"))'"
    restore = completion("ddpg restore --")
    assert f'"--task":"{tasks} (default sr4' in restore
    assert f"capture each whole {'/'.join(GRAPH_METHODS)} step" in restore
    assert '"--method":' in restore and not [field for field in HELP_FIELDS if field in restore]
