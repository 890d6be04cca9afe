"""torchreid's own softmax and softmax+triplet engines with the plugin's run loop around them.

The training step (``forward_backward``) is torchreid's, unchanged: baselines train exactly
as torchreid documents them; evaluation, checkpoints and results come from the mixin.
"""

from __future__ import annotations

from dcac_plugin._torchreid import tr
from dcac_plugin.engine.base import PluginEngineMixin


class SoftmaxEngine(PluginEngineMixin, tr.engine.ImageSoftmaxEngine):
    """torchreid ``ImageSoftmaxEngine`` (label-smoothed cross-entropy)."""


class TripletEngine(PluginEngineMixin, tr.engine.ImageTripletEngine):
    """torchreid ``ImageTripletEngine`` (softmax + batch-hard triplet; needs the identity sampler)."""


TORCHREID_ENGINES = {"softmax": SoftmaxEngine, "triplet": TripletEngine}
