"""Train / evaluate: ``python tools/train.py --config-file configs/dcac_ma2ms.yaml [key value ...]``."""
from dcac_plugin.cli.train import cli

cli()
