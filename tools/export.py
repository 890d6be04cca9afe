"""ONNX export: ``python tools/export.py --run-dir RUN --format onnx --output model.onnx``."""
from dcac_plugin.cli.export import cli

cli()
