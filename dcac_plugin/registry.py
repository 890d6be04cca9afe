"""The plugin's registration with torchreid: its datasets and models in torchreid's registries.

Every module that needs the registries filled calls :func:`register` from here (the package root
re-exports it as ``dcac_plugin.register``), so no module inside the package imports the root.
"""

from __future__ import annotations

_REGISTERED = False


def register() -> None:
    """Register the plugin's datasets (CUHK03-NP, MSMT17 train+val) and models with torchreid.

    Safe to call any number of times.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    # local: the package root imports this module, and importing dcac_plugin is light (no torch, no torchreid)
    from dcac_plugin.data.datasets import register_datasets
    from dcac_plugin.models import register_models

    register_datasets()
    register_models()
    _REGISTERED = True
