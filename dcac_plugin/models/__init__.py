"""Plugin models (DCAC and the CLIP-ReID baseline) and a ``build_model`` that also serves torchreid models.

Plugin names (:data:`PLUGIN_MODELS`):

* ``dcac_vit_b16``: CLIP ViT-B/16 at 256x128 + SD-1.5 UNet/VAE (paper sizes).
* ``dcac_tiny``: tiny ViT (128x64 input, grid 8x4, feature 32) + tiny UNet/VAE (64x64 VAE view →
  8x8 latent, context 32) for CPU tests and demos.
* ``clip_reid_vit_b16`` / ``clip_reid_tiny``: the paper's baseline — the same encoder, no diffusion
  branch built at all.

Builders take explicit keyword arguments (see :func:`dcac_plugin.models.dcac.build_dcac`; grouped:
:func:`~dcac_plugin.models.dcac.build_dcac_from_options`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from dcac_plugin._torchreid import model_factory, tr
from dcac_plugin.models.dcac import (
    DCAC,
    ConditionOptions,
    DiffusionOptions,
    EncoderOptions,
    build_dcac,
    build_dcac_from_options,
)
from dcac_plugin.models.weights import WeightLoadError, load_torchreid_pretrained

logger = logging.getLogger(__name__)

__all__ = [
    "DCAC",
    "PLUGIN_MODELS",
    "ConditionOptions",
    "DiffusionOptions",
    "EncoderOptions",
    "WeightLoadError",
    "build_dcac",
    "build_dcac_from_options",
    "build_model",
    "clip_reid_tiny",
    "clip_reid_vit_b16",
    "dcac_tiny",
    "dcac_vit_b16",
    "register_models",
]

_TINY = {"vision": "tiny", "unet": "tiny", "vae": "tiny", "image_size": (128, 64), "vae_image_size": 64}


def dcac_vit_b16(num_classes: int, **kwargs: Any) -> DCAC:
    """DCAC at paper sizes (CLIP ViT-B/16, SD-1.5); kwargs override :func:`build_dcac` defaults."""
    return build_dcac(
        num_classes, **{"vision": "ViT-B-16", "unet": "sd15", "vae": "sd15", **kwargs, "diffusion": True}
    )


def dcac_tiny(num_classes: int, **kwargs: Any) -> DCAC:
    """Tiny DCAC for CPU tests/demos (input 128x64, VAE view 64x64)."""
    return build_dcac(num_classes, **{**_TINY, **kwargs, "diffusion": True})


def clip_reid_vit_b16(num_classes: int, **kwargs: Any) -> DCAC:
    """Baseline: CLIP ViT-B/16 encoder + BNNeck + classifier, no diffusion branch."""
    return build_dcac(num_classes, **{"vision": "ViT-B-16", **_baseline_kwargs(kwargs), "diffusion": False})


def clip_reid_tiny(num_classes: int, **kwargs: Any) -> DCAC:
    """Tiny baseline (input 128x64)."""
    return build_dcac(
        num_classes,
        **{"vision": "tiny", "image_size": (128, 64), **_baseline_kwargs(kwargs), "diffusion": False},
    )


#: Encoder keyword arguments of :func:`build_dcac`. The baseline builders accept the diffusion-only
#: ones too (so one config section builds DCAC and its baseline) and drop them with an INFO log;
#: unknown names still raise ``TypeError``.
_ENCODER_KWARGS = {f.name for f in fields(EncoderOptions)} | {"grad_checkpointing"}
_DIFFUSION_ONLY_KWARGS = set(inspect.signature(build_dcac).parameters) - _ENCODER_KWARGS - {"num_classes"}


def _baseline_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    dropped = sorted(k for k in kwargs if k in _DIFFUSION_ONLY_KWARGS)
    if dropped:
        logger.info("CLIP-ReID baseline: ignoring diffusion-branch arguments %s", dropped)
    return {k: v for k, v in kwargs.items() if k not in _DIFFUSION_ONLY_KWARGS}


PLUGIN_MODELS: dict[str, Callable[..., DCAC]] = {
    "dcac_vit_b16": dcac_vit_b16,
    "dcac_tiny": dcac_tiny,
    "clip_reid_vit_b16": clip_reid_vit_b16,
    "clip_reid_tiny": clip_reid_tiny,
}

_TORCHREID_ONLY = ("loss", "use_gpu")


def _plugin_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    kw = {k: v for k, v in kwargs.items() if k not in _TORCHREID_ONLY}
    pretrained = kw.pop("pretrained", None)
    if pretrained is True:
        raise ValueError(
            "pretrained=True would download weights; plugin models never download. Pass clip_weights="
            "<local CLIP file> (and sd_weights=<local SD file>) instead"
        )
    if isinstance(pretrained, str) and pretrained:
        if kw.get("clip_weights"):
            raise ValueError("both pretrained and clip_weights given; pass only clip_weights")
        kw["clip_weights"] = pretrained
    return kw


def build_model(name: str, num_classes: int, **kwargs: Any):
    """Build a plugin model or delegate to torchreid.

    Args:
        name: a :data:`PLUGIN_MODELS` name or any ``torchreid.models`` name.
        num_classes: N.
        **kwargs: plugin models: builder kwargs (``loss``/``use_gpu`` ignored, ``pretrained`` a local
            CLIP path alias of ``clip_weights``). torchreid models: ``loss`` ('softmax'),
            ``use_gpu`` (False), ``pretrained`` — a local weight file (loaded safely, weights_only)
            or falsy (random init, WARNING); ``True`` raises (torchreid would download).

    Returns:
        ``nn.Module``.
    """
    if name in PLUGIN_MODELS:
        return PLUGIN_MODELS[name](num_classes, **_plugin_kwargs(kwargs))
    unknown = set(kwargs) - {"loss", "use_gpu", "pretrained"}
    if unknown:
        raise ValueError(
            f"torchreid model {name!r} takes only loss/use_gpu/pretrained, got {sorted(unknown)}"
        )
    pretrained = kwargs.get("pretrained", False)
    if pretrained is True:
        raise ValueError(
            f"pretrained=True for torchreid model {name!r} would download weights; pass a local weight "
            f"file path instead (never downloaded)"
        )
    model = tr.models.build_model(
        name,
        num_classes,
        loss=kwargs.get("loss", "softmax"),
        pretrained=False,
        use_gpu=kwargs.get("use_gpu", False),
    )
    if pretrained:
        load_torchreid_pretrained(model, str(pretrained))
    else:
        logger.warning("torchreid model %s is RANDOMLY initialised (no pretrained weight file given)", name)
    return model


def _torchreid_entry(builder: Callable[..., DCAC]) -> Callable[..., DCAC]:
    def fn(
        num_classes: int, loss: str = "softmax", pretrained: Any = False, use_gpu: bool = True, **kwargs: Any
    ):
        return builder(num_classes, **_plugin_kwargs({"pretrained": pretrained, **kwargs}))

    fn.__name__ = builder.__name__
    fn.__doc__ = builder.__doc__
    return fn


def register_models() -> None:
    """Add the plugin names to torchreid's model factory (signature num_classes, loss, pretrained,
    use_gpu). Idempotent. Note: in train mode plugin models return a dict (see :class:`DCAC`), so they
    train with the plugin engine, not torchreid's softmax/triplet engines."""
    factory = model_factory()
    for name, builder in PLUGIN_MODELS.items():
        existing = factory.get(name)
        if existing is not None and getattr(existing, "_dcac_plugin", False):
            continue
        fn = _torchreid_entry(builder)
        fn._dcac_plugin = True  # type: ignore[attr-defined]
        factory[name] = fn
