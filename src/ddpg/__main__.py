"""``python -m ddpg``: the command line."""

from ddpg.cli.main import app

app(prog_name="ddpg")
