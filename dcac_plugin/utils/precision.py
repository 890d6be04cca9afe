"""Numeric precision modes (light: no torch import): the one list of AMP modes and how they resolve.

``train.amp`` takes :data:`AMP_MODES`; feature extraction (``FeatureExtractor(amp=...)``,
``dcac-extract --amp``) takes :data:`INFERENCE_AMP_MODES` (no ``auto``: features equal the
evaluation's only in fp32, so the caller opts in to autocast).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: ``train.amp``: auto (CUDA: fp16 + GradScaler, the original; elsewhere off) | off | fp16 | bf16.
AMP_MODES: tuple[str, ...] = ("auto", "off", "fp16", "bf16")
#: feature extraction: off (fp32, the evaluation's features) | fp16 (CUDA) | bf16.
INFERENCE_AMP_MODES: tuple[str, ...] = ("off", "fp16", "bf16")


def resolve_amp(amp: str, device: torch.device) -> tuple[str, bool]:
    """The precision a run trains in: ``(mode, grad_scaler)``, mode ``'off' | 'fp16' | 'bf16'``.

    ``auto`` is the original's recipe where it can run: fp16 autocast with a GradScaler on a CUDA
    device, fp32 (``off``) elsewhere; the choice is logged. ``fp16`` needs CUDA; ``bf16`` needs no
    scaler.

    Raises:
        ValueError: unknown mode, or fp16 without CUDA.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"train.amp must be auto, off, fp16 or bf16; got '{amp}'")
    if amp == "auto":
        if device.type == "cuda":
            logger.info("train.amp auto -> fp16 autocast with a GradScaler (CUDA device, as the original)")
            return "fp16", True
        logger.info("train.amp auto -> off: fp32 on %s (fp16 autocast needs CUDA)", device.type)
        return "off", False
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp fp16 needs CUDA; use auto, bf16 or off on this device")
    return amp, amp == "fp16"


def check_inference_amp(amp: str, device: torch.device | None = None) -> str:
    """``amp`` when it is an :data:`INFERENCE_AMP_MODES` mode the device can run (fp16 needs CUDA).

    Raises:
        ValueError: unknown mode, or fp16 on a device that is not CUDA.
    """
    if amp not in INFERENCE_AMP_MODES:
        raise ValueError(f"amp must be off, fp16 or bf16; got {amp!r}")
    if device is not None and amp == "fp16" and device.type != "cuda":
        raise ValueError("amp fp16 needs CUDA; use bf16 on CPU, or off")
    return amp
