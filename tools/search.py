"""Top-k gallery matches: ``python tools/search.py --run-dir RUN --query DIR --gallery DIR --topk 10``."""
from dcac_plugin.cli.search import cli

cli()
