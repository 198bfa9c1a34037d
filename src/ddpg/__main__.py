from ddpg.cli.main import app

app(prog_name="ddpg")
