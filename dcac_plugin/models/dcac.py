"""DCAC assembly: CLIP-ReID encoder + correlation-aware condition + diffusion branch (docs/METHOD.md §1–§7)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcac_plugin.models.clip_reid import CLIPReIDEncoder, build_clip_reid_encoder
from dcac_plugin.models.conditioning import CorrelationAwareCondition
from dcac_plugin.models.diffusion import DEFAULT_LORA_TARGETS, DiffusionBranch, build_diffusion_branch
from dcac_plugin.models.weights import WeightLoadError

logger = logging.getLogger(__name__)

LR_MULT_KEYS = ("prompt_emb", "lora_")


class DCAC(nn.Module):
    """DCAC model (or the CLIP-ReID baseline when ``condition`` and ``diffusion`` are None).

    Children: ``encoder`` (:class:`CLIPReIDEncoder`), ``condition``
    (:class:`CorrelationAwareCondition`, holds the prompt bank ``prompt_emb``), ``diffusion``
    (:class:`DiffusionBranch`).

    Forward contract:
        * eval mode: ``model(x [B,3,H,W]) -> feat_bn [B, feat_dim]`` (torchreid contract).
        * train mode: ``model(x, x_vae=None, labels=None, memory=None, cam_ids=None, vae_moments=None)``
          → dict with ``logits`` [B,N], ``feat`` [B,D] (raw projected CLS), ``feat_bn`` [B,D],
          ``z`` [B,D] (L2-normalised feat_bn) and, when the diffusion branch exists and ``x_vae`` or
          ``vae_moments`` is given, ``cond`` [B,1,C] and ``loss_ldm`` (scalar). The BNNeck is called
          once per step (docs/DECISIONS.md item 4). ID/PCL losses belong to the engine. The baseline ignores
          ``x_vae``/``vae_moments``/``memory`` so one engine serves both.
    """

    def __init__(
        self,
        encoder: CLIPReIDEncoder,
        condition: CorrelationAwareCondition | None = None,
        diffusion: DiffusionBranch | None = None,
        vae_image_size: int | None = None,
    ) -> None:
        super().__init__()
        if (condition is None) != (diffusion is None):
            raise ValueError("condition and diffusion must both be given (DCAC) or both be None (baseline)")
        if condition is not None and condition.context_dim != diffusion.context_dim:
            raise ValueError(
                f"prompt bank dim {condition.context_dim} != UNet cross_attention_dim {diffusion.context_dim}"
            )
        self.encoder = encoder
        self.condition = condition
        self.diffusion = diffusion
        self.vae_image_size = vae_image_size

    @property
    def num_classes(self) -> int:
        return self.encoder.num_classes

    @property
    def feat_dim(self) -> int:
        return self.encoder.feat_dim

    @property
    def has_diffusion(self) -> bool:
        return self.diffusion is not None

    def forward(
        self,
        x: torch.Tensor,
        x_vae: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        cam_ids: torch.Tensor | None = None,
        vae_moments: torch.Tensor | None = None,
        ldm_noise: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """See the class docstring for the contract.

        Args:
            x: [B, 3, H, W] re-ID view.
            x_vae: [B, 3, S, S] VAE view in [-1, 1].
            labels: [B] training labels (needed only for ``hard_label``).
            memory: [N, D] detached clone of the PCL memory ('pcl' / 'fc+pcl' conditioning).
            cam_ids: [B] camera ids (SIE only).
            vae_moments: [B, 2C, h, w] cached VAE posterior moments instead of ``x_vae``.
            ldm_noise: optional ``{'t', 'noise', 'posterior_noise'}`` for the denoising loss
                (see ``DiffusionBranch.draw_noise``); default: drawn from the global RNG.
        """
        if not self.training:
            return self.encoder(x, cam_ids)
        f = self.encoder.forward_features(x, cam_ids)
        f_bn = self.encoder.bnneck(f)
        logits = self.encoder.fc(f_bn)
        z = F.normalize(f_bn, dim=1)
        out = {"logits": logits, "feat": f, "feat_bn": f_bn, "z": z}
        if self.diffusion is not None and (x_vae is not None or vae_moments is not None):
            if x_vae is not None and self.vae_image_size is not None:
                s = self.vae_image_size
                if tuple(x_vae.shape[-2:]) != (s, s):
                    raise ValueError(
                        f"x_vae must be [B, 3, {s}, {s}] (vae_image_size), got {tuple(x_vae.shape)}"
                    )
            cond = self.condition(logits, z=z, memory=memory, labels=labels)
            out["cond"] = cond
            out["loss_ldm"] = self.diffusion(cond, x_vae=x_vae, vae_moments=vae_moments, **(ldm_noise or {}))
        return out

    # ----------------------------------------------------------------------------- state handling

    def _trainable_keys(self) -> list[str]:
        keys = []
        extra: set[str] = set()
        if self.diffusion is not None:
            extra = set(getattr(self.diffusion.unet, "_dcac_extra_state", ()))
        for k in self.state_dict():
            if k.startswith(("encoder.", "condition.")):
                keys.append(k)
            elif k.startswith("diffusion.unet."):
                name = k[len("diffusion.unet.") :]
                if "lora_" in name or name.replace(".base_layer.", ".") in extra:
                    keys.append(k)
        return keys

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes (plus what is needed to rebuild it): the whole encoder (incl. BN
        buffers and the frozen patch conv), the condition (prompt bank, bottleneck), the LoRA weights
        and the parity q/k/v biases — not the frozen UNet/VAE base weights.

        Returns:
            ``name -> tensor`` (detached references; clone before mutating).
        """
        sd = self.state_dict()
        return {k: sd[k] for k in self._trainable_keys()}

    def load_trainable_state_dict(
        self, state_dict: dict[str, torch.Tensor], strict: bool = True
    ) -> dict[str, list]:
        """Load a :meth:`trainable_state_dict` (``module.`` prefixes stripped).

        Args:
            state_dict: from :meth:`trainable_state_dict`.
            strict: raise :class:`WeightLoadError` listing missing/unexpected keys.

        Returns:
            ``{"missing": [...], "unexpected": [...]}``.
        """
        sd = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}
        expected = set(self._trainable_keys())
        missing = sorted(expected - set(sd))
        unexpected = sorted(set(sd) - expected)
        if strict and (missing or unexpected):
            raise WeightLoadError(
                f"trainable state does not match the model: missing {len(missing)} {missing[:20]}, "
                f"unexpected {len(unexpected)} {unexpected[:20]} (different num_classes, LoRA rank/targets, "
                f"prob_type or a baseline/DCAC mix-up?)"
            )
        own = self.state_dict()
        bad = [
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in sd.items()
            if k in expected and v.shape != own[k].shape
        ]
        if bad:
            raise WeightLoadError(f"trainable state shape mismatches: {bad[:20]}")
        with torch.no_grad():
            for k, v in sd.items():
                if k in expected:
                    own[k].copy_(v)
        return {"missing": missing, "unexpected": unexpected}

    def param_groups(
        self, base_lr: float, lora_lr_mult: float = 1.0, weight_decay: float = 1e-4
    ) -> list[dict[str, Any]]:
        """Optimiser parameter groups (docs/METHOD.md §7.2): Adam with coupled L2 on every trainable tensor.

        Args:
            base_lr: LR of the encoder/classifier/BN weight.
            lora_lr_mult: LR multiplier for names containing ``prompt_emb`` or ``lora_``.
            weight_decay: coupled L2 for all groups (1e-4).

        Returns:
            Up to two groups, each with ``params``, ``lr``, ``weight_decay``, ``name`` and
            ``param_names``.
        """
        base, mult = ([], []), ([], [])
        for n, p in self.named_parameters():
            if not p.requires_grad:
                continue
            bucket = mult if any(s in n for s in LR_MULT_KEYS) else base
            bucket[0].append(p)
            bucket[1].append(n)
        groups = []
        if base[0]:
            groups.append(
                {
                    "params": base[0],
                    "param_names": base[1],
                    "lr": base_lr,
                    "weight_decay": weight_decay,
                    "name": "base",
                }
            )
        if mult[0]:
            groups.append(
                {
                    "params": mult[0],
                    "param_names": mult[1],
                    "lr": base_lr * lora_lr_mult,
                    "weight_decay": weight_decay,
                    "name": "prompt_lora",
                }
            )
        return groups

    def parameter_summary(self) -> dict[str, int]:
        """Parameter counts: total, trainable, and per child."""
        out = {
            "total": sum(p.numel() for p in self.parameters()),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
        }
        for name, child in self.named_children():
            if child is not None:
                out[name] = sum(p.numel() for p in child.parameters())
        return out


@dataclass(frozen=True)
class EncoderOptions:
    """Encoder arguments of :func:`build_dcac` (see :func:`build_clip_reid_encoder`)."""

    vision: str | os.PathLike | dict = "ViT-B-16"
    clip_weights: str | os.PathLike = ""
    image_size: Sequence[int] = (256, 128)
    stride: int = 16
    freeze_patch_proj: bool = True
    num_cams: int = 0
    sie_coef: float = 1.0
    bnneck_momentum: float = 0.19


@dataclass(frozen=True)
class DiffusionOptions:
    """Diffusion-branch arguments of :func:`build_dcac` (see :func:`build_diffusion_branch`), plus the
    side of the square VAE view."""

    unet: str | os.PathLike | dict = "sd15"
    vae: str | os.PathLike | dict = "sd15"
    sd_weights: str | os.PathLike = ""
    sd_use_ema: bool = False
    lora_rank: int = 8
    lora_alpha: float = 1.0
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS
    qkv_random_bias: bool = False
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    vae_image_size: int = 128


@dataclass(frozen=True)
class ConditionOptions:
    """Condition arguments of :func:`build_dcac` (see :class:`CorrelationAwareCondition`)."""

    prob_type: str = "fc"
    tau: float = 1.0
    bottleneck: str = "embedding"
    prompt_init_std: float = 1.0
    hard_label: bool = False
    memory_temperature: float = 0.01


def build_dcac(
    num_classes: int,
    vision: str | os.PathLike | dict = "ViT-B-16",
    clip_weights: str | os.PathLike = "",
    image_size: Sequence[int] = (256, 128),
    stride: int = 16,
    freeze_patch_proj: bool = True,
    num_cams: int = 0,
    sie_coef: float = 1.0,
    bnneck_momentum: float = 0.19,
    diffusion: bool = True,
    unet: str | os.PathLike | dict = "sd15",
    vae: str | os.PathLike | dict = "sd15",
    sd_weights: str | os.PathLike = "",
    sd_use_ema: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 1.0,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    qkv_random_bias: bool = False,
    prob_type: str = "fc",
    tau: float = 1.0,
    bottleneck: str = "embedding",
    prompt_init_std: float = 1.0,
    hard_label: bool = False,
    memory_temperature: float = 0.01,
    vae_image_size: int = 128,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    grad_checkpointing: bool = False,
) -> DCAC:
    """Build DCAC (``diffusion=True``) or the CLIP-ReID baseline (``diffusion=False``: no UNet/VAE/prompts).

    Defaults are the paper's (docs/METHOD.md §10). ``feat_dim`` comes from the vision config's ``embed_dim``,
    the prompt dim from the UNet's ``cross_attention_dim``. Nothing is downloaded: empty weight paths
    give a random init with a WARNING. The flat keyword form of :func:`build_dcac_from_options`.

    Args:
        num_classes: N training identities.
        vision, clip_weights, image_size, stride, freeze_patch_proj, num_cams, sie_coef,
            bnneck_momentum: encoder, see :func:`build_clip_reid_encoder`.
        diffusion: build the diffusion branch.
        unet, vae, sd_weights, sd_use_ema, lora_rank, lora_alpha, lora_targets, qkv_random_bias,
            num_train_timesteps, beta_start, beta_end: see :func:`build_diffusion_branch`.
        prob_type, tau, bottleneck, prompt_init_std, hard_label, memory_temperature: see
            :class:`CorrelationAwareCondition`.
        vae_image_size: side of the square VAE view (128); must give a latent the UNet can halve
            ``len(down_blocks) - 1`` times.
        grad_checkpointing: activation checkpointing in the ViT and the UNet.
    """
    encoder = EncoderOptions(
        vision=vision, clip_weights=clip_weights, image_size=image_size, stride=stride,
        freeze_patch_proj=freeze_patch_proj, num_cams=num_cams, sie_coef=sie_coef, bnneck_momentum=bnneck_momentum,
    )
    branch = DiffusionOptions(
        unet=unet, vae=vae, sd_weights=sd_weights, sd_use_ema=sd_use_ema, lora_rank=lora_rank,
        lora_alpha=lora_alpha, lora_targets=lora_targets, qkv_random_bias=qkv_random_bias,
        num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
        vae_image_size=vae_image_size,
    )
    condition = ConditionOptions(
        prob_type=prob_type, tau=tau, bottleneck=bottleneck, prompt_init_std=prompt_init_std,
        hard_label=hard_label, memory_temperature=memory_temperature,
    )
    return build_dcac_from_options(num_classes, encoder, branch if diffusion else None, condition,
                                   grad_checkpointing=grad_checkpointing)


def build_dcac_from_options(
    num_classes: int,
    encoder: EncoderOptions = EncoderOptions(),
    diffusion: DiffusionOptions | None = DiffusionOptions(),
    condition: ConditionOptions = ConditionOptions(),
    grad_checkpointing: bool = False,
) -> DCAC:
    """Build DCAC from option groups; ``diffusion=None`` builds the CLIP-ReID baseline (``condition`` unused).

    Args:
        num_classes: N training identities.
        encoder: the CLIP-ReID encoder's options.
        diffusion: the diffusion branch's options, or None for the baseline.
        condition: the correlation-aware condition's options.
        grad_checkpointing: activation checkpointing in the ViT and the UNet.
    """
    enc = _build_encoder(num_classes, encoder, grad_checkpointing)
    if diffusion is None:
        model = DCAC(enc)
    else:
        branch = _build_branch(diffusion, grad_checkpointing)
        _check_vae_image_size(diffusion.vae_image_size, branch)
        cond = _build_condition(num_classes, condition, context_dim=branch.context_dim, feat_dim=enc.feat_dim)
        model = DCAC(enc, cond, branch, vae_image_size=diffusion.vae_image_size)
    _log_built(model, num_classes)
    return model


def _build_encoder(num_classes: int, opts: EncoderOptions, grad_checkpointing: bool) -> CLIPReIDEncoder:
    encoder = build_clip_reid_encoder(
        num_classes,
        vision=opts.vision,
        clip_weights=opts.clip_weights,
        image_size=tuple(opts.image_size),
        stride=opts.stride,
        freeze_patch_proj=opts.freeze_patch_proj,
        num_cams=opts.num_cams,
        sie_coef=opts.sie_coef,
        bnneck_momentum=opts.bnneck_momentum,
    )
    if grad_checkpointing:
        encoder.set_grad_checkpointing(True)
    return encoder


def _build_branch(opts: DiffusionOptions, grad_checkpointing: bool) -> DiffusionBranch:
    return build_diffusion_branch(
        unet=opts.unet,
        vae=opts.vae,
        sd_weights=opts.sd_weights,
        sd_use_ema=opts.sd_use_ema,
        lora_rank=opts.lora_rank,
        lora_alpha=opts.lora_alpha,
        lora_targets=opts.lora_targets,
        qkv_random_bias=opts.qkv_random_bias,
        num_train_timesteps=opts.num_train_timesteps,
        beta_start=opts.beta_start,
        beta_end=opts.beta_end,
        grad_checkpointing=grad_checkpointing,
    )


def _check_vae_image_size(vae_image_size: int, branch: DiffusionBranch) -> None:
    """The VAE view must give a latent that the UNet can halve ``levels - 1`` times."""
    levels = len(branch.unet.config.block_out_channels)
    latent = vae_image_size // branch.vae_downsample
    if vae_image_size % branch.vae_downsample or latent % (2 ** (levels - 1)):
        raise ValueError(
            f"vae_image_size={vae_image_size} gives a latent of {vae_image_size / branch.vae_downsample} "
            f"that the UNet ({levels} levels) cannot downsample; use a multiple of "
            f"{branch.vae_downsample * 2 ** (levels - 1)}"
        )


def _build_condition(num_classes: int, opts: ConditionOptions, context_dim: int,
                     feat_dim: int) -> CorrelationAwareCondition:
    return CorrelationAwareCondition(
        num_classes,
        context_dim=context_dim,
        feat_dim=feat_dim,
        prob_type=opts.prob_type,
        tau=opts.tau,
        bottleneck=opts.bottleneck,
        init_std=opts.prompt_init_std,
        hard_label=opts.hard_label,
        memory_temperature=opts.memory_temperature,
    )


def _log_built(model: DCAC, num_classes: int) -> None:
    counts = model.parameter_summary()
    logger.info(
        "built %s: N=%d, params total %s, trainable %s (%s)",
        "DCAC" if model.has_diffusion else "CLIP-ReID baseline",
        num_classes,
        f"{counts['total']:,}",
        f"{counts['trainable']:,}",
        ", ".join(f"{k} {v:,}" for k, v in counts.items() if k not in ("total", "trainable")),
    )
