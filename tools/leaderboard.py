"""Leaderboard: ``python tools/leaderboard.py --results output/ [--format github|latex|csv|html|json]``."""
from dcac_plugin.cli.leaderboard import cli

cli()
