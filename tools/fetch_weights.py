"""Weight files of the paper and baseline configs: ``python tools/fetch_weights.py [--list | --check]``."""
from dcac_plugin.cli.fetch_weights import cli

cli()
