"""Datasets for the plugin: torchreid registrations, layout checks and the synthetic benchmark.

Kept light on purpose: importing ``dcac_plugin.data`` does not import torchreid. Use
:mod:`dcac_plugin.data.datasets` (``register_datasets``, ``check_dataset``),
:mod:`dcac_plugin.data.reader` and :mod:`dcac_plugin.data.synthetic` directly.
"""
