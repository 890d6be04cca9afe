"""dcac_plugin: DCAC (Li & Gong 2025) for torchreid.

Importing the package is light; :func:`register` adds the plugin's datasets and models to
torchreid's registries (idempotent), and :func:`build_model` builds either a plugin model or
any torchreid model by name. :class:`FeatureExtractor` (imported on first use) computes the
features a trained run's evaluation uses, from a run folder or a config plus a weight file.
"""

from __future__ import annotations

import logging
from typing import Any

from dcac_plugin._version import __version__  # noqa: F401  (re-exported)
from dcac_plugin.registry import register

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())


def build_model(name: str, num_classes: int, **kwargs: Any):
    """Build a plugin model (``dcac_*``, ``clip_reid_*``) or delegate to torchreid.

    Args:
        name: model name; plugin names are listed in ``dcac_plugin.models.PLUGIN_MODELS``,
            every other name goes to ``torchreid.models.build_model``.
        num_classes: number of training identities N.
        **kwargs: for plugin models, their builder's keyword arguments; for torchreid models,
            ``loss``, ``pretrained`` (a local weight path or False), ``use_gpu``.
    """
    register()
    from dcac_plugin.models import build_model as _build  # local: importing the package is light (docstring)

    return _build(name, num_classes, **kwargs)


def __getattr__(name: str) -> Any:
    """``dcac_plugin.FeatureExtractor`` without importing torch-heavy modules at package import."""
    if name == "FeatureExtractor":
        from dcac_plugin.inference.extractor import FeatureExtractor  # local: the package root stays light

        return FeatureExtractor
    raise AttributeError(f"module 'dcac_plugin' has no attribute {name!r}")
