"""Benchmark suite: ``python tools/benchmark.py --suite configs/suites/paper_single_source.yaml``."""
from dcac_plugin.cli.benchmark import cli

cli()
