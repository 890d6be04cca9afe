"""CLIP-ReID encoder: open_clip ViT image tower + BNNeck + bias-free ID classifier (docs/METHOD.md §3)."""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer

from dcac_plugin.models.weights import load_clip_into_visual, load_clip_visual_state_dict
from dcac_plugin.shipped import RESOURCES

logger = logging.getLogger(__name__)


#: OpenAI CLIP ViT-B/16 image tower (open_clip "ViT-B-16-quickgelu"); image size is set by the builder.
VIT_B16_CONFIG: dict[str, Any] = {
    "embed_dim": 512,
    "quick_gelu": True,
    "vision_cfg": {"layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16},
}

_VISION_KEYS = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "ls_init_value"}


def resolve_vision_config(vision: str | os.PathLike | dict) -> dict[str, Any]:
    """Return an open_clip-style model config ``{"embed_dim", "quick_gelu", "vision_cfg": {...}}``.

    Args:
        vision: ``'ViT-B-16'`` (OpenAI CLIP ViT-B/16, QuickGELU), ``'tiny'`` (the shipped test
            config), a dict in that format, or a path to such a JSON file.
    """
    if isinstance(vision, dict):
        cfg = copy.deepcopy(vision)
    elif vision in ("ViT-B-16", "ViT-B/16", "vit_b16"):
        cfg = copy.deepcopy(VIT_B16_CONFIG)
    elif vision == "tiny":
        cfg = json.loads((RESOURCES / "tiny" / "vision" / "config.json").read_text())
    elif isinstance(vision, (str, os.PathLike)) and Path(vision).is_file():
        cfg = json.loads(Path(vision).read_text())
    else:
        raise ValueError(
            f"unknown vision config {vision!r}: use 'ViT-B-16', 'tiny', a dict or a JSON file path "
            f"(open_clip format with 'embed_dim' and 'vision_cfg')"
        )
    if "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise ValueError(
            f"vision config {vision!r} needs 'embed_dim' and 'vision_cfg' keys, got {sorted(cfg)}"
        )
    unknown = set(cfg["vision_cfg"]) - _VISION_KEYS
    if unknown:
        raise ValueError(
            f"vision_cfg keys {sorted(unknown)} are not supported by the plugin's plain ViT builder "
            f"(supported: {sorted(_VISION_KEYS)})"
        )
    return cfg


def build_visual_tower(
    vision: str | os.PathLike | dict = "ViT-B-16",
    image_size: tuple[int, int] = (256, 128),
    stride: int = 16,
) -> VisionTransformer:
    """Build an open_clip ``VisionTransformer`` for re-ID input (random init, fp32, CPU).

    Args:
        vision: see :func:`resolve_vision_config`.
        image_size: (H, W) input size.
        stride: patch-embedding stride; equal to the patch size (16) in DCAC. A smaller stride
            (overlapping patches) replaces ``conv1`` and the positional table accordingly.

    Returns:
        The visual tower; ``grid_size`` is (H', W') with H' = (H - patch) // stride + 1.
    """
    cfg = resolve_vision_config(vision)
    vc = dict(cfg["vision_cfg"])
    patch = int(vc.get("patch_size", 16))
    h, w = (int(image_size[0]), int(image_size[1]))
    width = _check_tower_geometry(vc, image_size, patch, stride)
    visual = VisionTransformer(
        image_size=(h, w),
        patch_size=patch,
        width=width,
        layers=int(vc.get("layers", 12)),
        heads=width // int(vc.get("head_width", 64)),
        mlp_ratio=float(vc.get("mlp_ratio", 4.0)),
        ls_init_value=vc.get("ls_init_value"),
        output_dim=int(cfg["embed_dim"]),
        act_layer=QuickGELU if cfg.get("quick_gelu", True) else nn.GELU,
        norm_layer=LayerNorm,
    )
    if stride != patch:
        _overlap_patches(visual, (h, w), patch, stride, width)
    return visual


def _check_tower_geometry(vc: dict[str, Any], image_size: tuple[int, int], patch: int, stride: int) -> int:
    """ValueError unless the stride, input size and head width fit; the tower's width."""
    h, w = (int(image_size[0]), int(image_size[1]))
    if stride <= 0 or stride > patch:
        raise ValueError(f"stride must be in [1, patch_size={patch}], got {stride}")
    if (h - patch) % stride or (w - patch) % stride:
        raise ValueError(f"image_size {image_size} is not covered by patch {patch} / stride {stride} exactly")
    width = int(vc.get("width", 768))
    head_width = int(vc.get("head_width", 64))
    if width % head_width:
        raise ValueError(f"vision width {width} must be a multiple of head_width {head_width}")
    return width


def _overlap_patches(visual: VisionTransformer, hw: tuple[int, int], patch: int, stride: int, width: int) -> None:
    """Replace the patch conv and the positional table for overlapping patches (``stride`` < ``patch``)."""
    h, w = hw
    grid = ((h - patch) // stride + 1, (w - patch) // stride + 1)
    visual.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=stride, bias=False)
    visual.grid_size = grid
    visual.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(grid[0] * grid[1] + 1, width))


class CLIPReIDEncoder(nn.Module):
    """CLIP image tower → projected CLS f → BNNeck → bias-free classifier (docs/METHOD.md §3.1–3.5).

    Children (official-checkpoint names): ``image_encoder`` (open_clip ``VisionTransformer``),
    ``bnneck`` (``BatchNorm1d``, bias frozen at 0), ``fc`` (``Linear(feat_dim, N, bias=False)``,
    N(0, 0.001²)), optional ``cam_emb`` [num_cams, width] (SIE, added to the CLS token).

    Args:
        image_encoder: open_clip visual tower.
        num_classes: N training identities.
        num_cams: >0 enables the camera embedding (SIE); 0 (default) disables it.
        sie_coef: multiplier of the camera embedding (the original uses none, i.e. 1.0).
        bnneck_momentum: BN running-stat momentum; default 0.19 reproduces the original's
            double BN call per step (docs/DECISIONS.md item 4).
        freeze_patch_proj: freeze ``conv1`` (docs/METHOD.md §3.4).
    """

    def __init__(
        self,
        image_encoder: VisionTransformer,
        num_classes: int,
        num_cams: int = 0,
        sie_coef: float = 1.0,
        bnneck_momentum: float = 0.19,
        freeze_patch_proj: bool = True,
    ) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.image_encoder = image_encoder
        self.feat_dim = int(image_encoder.output_dim)
        self.width = int(image_encoder.class_embedding.shape[0])
        self.image_size = tuple(int(s) for s in image_encoder.image_size)
        self.num_classes = int(num_classes)
        self.bnneck = nn.BatchNorm1d(self.feat_dim, momentum=bnneck_momentum)
        nn.init.ones_(self.bnneck.weight)
        nn.init.zeros_(self.bnneck.bias)
        self.bnneck.bias.requires_grad_(False)
        self.fc = nn.Linear(self.feat_dim, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)
        self.num_cams = int(num_cams)
        self.sie_coef = float(sie_coef)
        if self.num_cams > 0:
            self.cam_emb = nn.Parameter(torch.zeros(self.num_cams, self.width))
            nn.init.trunc_normal_(self.cam_emb, std=0.02)
        else:
            self.cam_emb = None
        if freeze_patch_proj:
            self.image_encoder.conv1.weight.requires_grad_(False)

    def forward_features(self, x: torch.Tensor, cam_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Projected CLS feature f.

        Args:
            x: [B, 3, H, W] images normalised with mean = std = 0.5.
            cam_ids: [B] 0-based camera ids; required iff SIE is enabled.

        Returns:
            f: [B, feat_dim].
        """
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"encoder expects [B, 3, {self.image_size[0]}, {self.image_size[1]}], got {tuple(x.shape)}"
            )
        v = self.image_encoder
        t = v.conv1(x)
        t = t.reshape(t.shape[0], t.shape[1], -1).permute(0, 2, 1)  # [B, HW, width], row-major
        cls = v.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
        if self.cam_emb is not None:
            if cam_ids is None:
                raise ValueError("the camera embedding (SIE) is enabled (num_cams > 0): pass cam_ids")
            if int(cam_ids.max()) >= self.num_cams or int(cam_ids.min()) < 0:
                raise ValueError(f"cam_ids must be in [0, {self.num_cams}), got {cam_ids.tolist()}")
            cls = cls + self.sie_coef * self.cam_emb[cam_ids.to(self.cam_emb.device)].unsqueeze(1).to(t.dtype)
        t = torch.cat([cls, t], dim=1) + v.positional_embedding.to(t.dtype)
        t = v.patch_dropout(t)
        t = v.ln_pre(t)
        t = v.transformer(t)
        t = v.ln_post(t[:, 0])
        return t @ v.proj

    def forward(self, x: torch.Tensor, cam_ids: torch.Tensor | None = None) -> torch.Tensor:
        """BNNeck feature (the test-time embedding in eval mode): [B, feat_dim]."""
        return self.bnneck(self.forward_features(x, cam_ids))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing over the transformer blocks (results unchanged)."""
        self.image_encoder.set_grad_checkpointing(enable)


def build_clip_reid_encoder(
    num_classes: int,
    vision: str | os.PathLike | dict = "ViT-B-16",
    clip_weights: str | os.PathLike = "",
    image_size: tuple[int, int] = (256, 128),
    stride: int = 16,
    freeze_patch_proj: bool = True,
    num_cams: int = 0,
    sie_coef: float = 1.0,
    bnneck_momentum: float = 0.19,
) -> CLIPReIDEncoder:
    """Build the encoder and optionally load CLIP weights from a local file.

    Args:
        num_classes: N.
        vision: see :func:`resolve_vision_config`.
        clip_weights: local CLIP file (OpenAI TorchScript ``ViT-B-16.pt``, plain state dict or
            safetensors); '' → random init (logged as a WARNING).
        image_size, stride, freeze_patch_proj, num_cams, sie_coef, bnneck_momentum: see
            :class:`CLIPReIDEncoder` and :func:`build_visual_tower`.
    """
    visual = build_visual_tower(vision, image_size=image_size, stride=stride)
    if clip_weights:
        load_clip_into_visual(visual, load_clip_visual_state_dict(clip_weights), source=str(clip_weights))
    else:
        logger.warning("CLIP image encoder is RANDOMLY initialised (no clip_weights given)")
    return CLIPReIDEncoder(
        visual,
        num_classes,
        num_cams=num_cams,
        sie_coef=sie_coef,
        bnneck_momentum=bnneck_momentum,
        freeze_patch_proj=freeze_patch_proj,
    )
