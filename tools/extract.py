"""Features of images with a trained model: ``python tools/extract.py --run-dir RUN --images DIR --output f.npz``."""
from dcac_plugin.cli.extract import cli

cli()
