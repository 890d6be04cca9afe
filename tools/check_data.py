"""Dataset check before any GPU hour: ``python tools/check_data.py --root reid-data``."""
from dcac_plugin.cli.check_data import cli

cli()
