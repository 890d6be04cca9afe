"""Ranked-list pictures: ``python tools/visrank.py --run-dir RUN --target NAME --order worst --output DIR``."""
from dcac_plugin.cli.visrank import cli

cli()
