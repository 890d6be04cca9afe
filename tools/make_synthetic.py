"""Write the synthetic benchmark: ``python tools/make_synthetic.py --root DIR --scale tiny|small --seed N``."""
from dcac_plugin.cli.make_synthetic import cli

cli()
