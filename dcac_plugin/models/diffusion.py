"""Diffusion branch: frozen SD UNet with PEFT LoRA + frozen VAE + DDPM ε-prediction loss (docs/METHOD.md §4)."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcac_plugin.models.weights import load_sd_weights
from dcac_plugin.shipped import RESOURCES

logger = logging.getLogger(__name__)

#: LoRA targets of the original (docs/METHOD.md §4.5): q/k/v/out of both attentions + the GEGLU input projection.
DEFAULT_LORA_TARGETS: tuple[str, ...] = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
)


def resolve_diffusers_config(spec: str | os.PathLike | dict, component: str) -> dict[str, Any]:
    """Config dict of a UNet (``component='unet'``) or VAE (``'vae'``), never from the hub.

    Args:
        spec: ``'sd15'`` / ``'tiny'`` (shipped JSONs), a folder holding ``config.json`` (or
            ``<component>/config.json``), a JSON file, or a dict.
        component: ``'unet'`` or ``'vae'``.
    """
    if component not in ("unet", "vae"):
        raise ValueError(f"component must be 'unet' or 'vae', got {component!r}")
    if isinstance(spec, dict):
        return copy.deepcopy(spec)
    if spec in ("sd15", "tiny"):
        return json.loads((RESOURCES / str(spec) / component / "config.json").read_text())
    p = Path(spec).expanduser()
    for cand in (p, p / "config.json", p / component / "config.json"):
        if cand.is_file():
            return json.loads(cand.read_text())
    raise ValueError(
        f"no {component} config for {spec!r}: use 'sd15', 'tiny', a dict, a JSON file or a folder with "
        f"config.json / {component}/config.json"
    )


def build_unet(spec: str | os.PathLike | dict = "sd15") -> nn.Module:
    """diffusers ``UNet2DConditionModel`` from a local config (random init)."""
    from diffusers import UNet2DConditionModel  # heavy (2-4 s): only the diffusion branch needs diffusers

    cfg = resolve_diffusers_config(spec, "unet")
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return UNet2DConditionModel.from_config(cfg)


def build_vae(spec: str | os.PathLike | dict = "sd15") -> nn.Module:
    """diffusers ``AutoencoderKL`` from a local config (random init)."""
    from diffusers import AutoencoderKL  # heavy (2-4 s): only the diffusion branch needs diffusers

    cfg = resolve_diffusers_config(spec, "vae")
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return AutoencoderKL.from_config(cfg)


def add_lora(
    unet: nn.Module, rank: int = 8, alpha: float = 1.0, targets: Sequence[str] = DEFAULT_LORA_TARGETS
) -> int:
    """Freeze the UNet and inject PEFT LoRA adapters (A kaiming-uniform, B = 0, scale α/r, no dropout).

    Args:
        unet: diffusers UNet (base weights already loaded).
        rank: r.
        alpha: LoRA α (scaling α/r; the original uses α = 1).
        targets: module-name suffixes (PEFT ``target_modules``).

    Returns:
        Number of LoRA parameters added.
    """
    from peft import LoraConfig  # heavy (~4 s, pulls transformers + accelerate): only LoRA fine-tuning needs it

    if rank <= 0:
        raise ValueError(f"lora_rank must be positive, got {rank}")
    unet.requires_grad_(False)
    names = [n for n, _ in unet.named_modules()]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ValueError(f"LoRA target {t!r} matches no module of the UNet")
    before = sum(p.numel() for p in unet.parameters())
    unet.add_adapter(
        LoraConfig(
            r=int(rank),
            lora_alpha=float(alpha),
            lora_dropout=0.0,
            init_lora_weights=True,
            target_modules=list(targets),
            bias="none",
        )
    )
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n)
    return sum(p.numel() for p in unet.parameters()) - before


def add_random_qkv_bias(unet: nn.Module) -> list[str]:
    """Parity option (docs/DECISIONS.md item 2): frozen U(±1/√fan_in) biases on every attn1/attn2 to_q/to_k/to_v.

    Must be called before :func:`add_lora`. The biases are not part of the SD checkpoint, so they are
    recorded in ``unet._dcac_extra_state`` and saved with the trainable state.

    Returns:
        The parameter names of the new biases.
    """
    names = []
    for mname, m in unet.named_modules():
        if mname.split(".")[-1] in ("to_q", "to_k", "to_v") and mname.split(".")[-2] in ("attn1", "attn2"):
            if not isinstance(m, nn.Linear):
                raise RuntimeError(f"{mname} is {type(m).__name__}; call add_random_qkv_bias before add_lora")
            if m.bias is not None:
                continue
            bound = 1.0 / m.in_features**0.5
            b = torch.empty(m.out_features, device=m.weight.device, dtype=m.weight.dtype)
            if b.device.type != "meta":
                b.uniform_(-bound, bound)
            m.bias = nn.Parameter(b, requires_grad=False)
            names.append(f"{mname}.bias")
    unet._dcac_extra_state = tuple(names)
    return names


def scaled_linear_betas(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """CompVis "linear" = squared-linear β schedule, computed in float64: [T]."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2


class DiffusionBranch(nn.Module):
    """Frozen VAE encoder + LoRA UNet + DDPM ε-prediction MSE (docs/METHOD.md §4.2–4.4).

    Buffers (fp32, non-persistent: they are a pure function of the arguments): ``betas``,
    ``alphas_cumprod``, ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod`` [T].

    Args:
        unet: diffusers UNet (LoRA already injected).
        vae: diffusers AutoencoderKL (frozen here).
        num_train_timesteps: T (1000).
        beta_start, beta_end: squared-linear schedule ends (0.00085, 0.012).
        scaling_factor: latent scale; default ``vae.config.scaling_factor`` (0.18215).
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        scaling_factor: float | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.vae.requires_grad_(False)
        self.num_train_timesteps = int(num_train_timesteps)
        self.scaling_factor = float(
            scaling_factor if scaling_factor is not None else vae.config.get("scaling_factor", 0.18215)
        )
        betas = scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
        ac = torch.cumprod(1.0 - betas, dim=0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", ac.float(), persistent=False)
        self.register_buffer("sqrt_alphas_cumprod", ac.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - ac).sqrt().float(), persistent=False)
        self.context_dim = int(unet.config.cross_attention_dim)
        self.latent_channels = int(vae.config.latent_channels)
        self.vae_downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_moments(self, x_vae: torch.Tensor) -> torch.Tensor:
        """VAE posterior moments (mean ‖ logvar, unclamped), no gradient.

        Args:
            x_vae: [B, 3, S, S] in [-1, 1].

        Returns:
            [B, 2·C_lat, S/8, S/8] (8 channels for SD).
        """
        return self.vae.encode(x_vae).latent_dist.parameters

    def sample_latents(self, moments: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z0 = scale · (mean + std·ε_post), logvar clamped to [-30, 20]; fresh ε_post each call.

        Args:
            moments: [B, 2C, h, w].
            eps: [B, C, h, w] posterior noise ε_post; default standard normal (global RNG).

        Returns:
            [B, C, h, w] scaled latent (no gradient).
        """
        if moments.shape[1] != 2 * self.latent_channels:
            raise ValueError(
                f"VAE moments must have {2 * self.latent_channels} channels (mean||logvar), "
                f"got {tuple(moments.shape)}"
            )
        moments = moments.detach()
        mean, logvar = moments.float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        if eps is None:  # drawn in the logical shape, so a seed gives the same eps whatever the layout
            eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
        return self.scaling_factor * (mean + std * eps.to(mean.dtype))

    def draw_noise(self, batch: int, latent_hw: tuple[int, int], generator: torch.Generator,
                   device: torch.device | str, offset: int = 0, total: int | None = None) -> dict[str, torch.Tensor]:
        """Timesteps and noises of one step from ``generator``, for samples ``offset:offset+batch``.

        All ``total`` samples of the (global) batch are drawn and this slice returned, so a
        batch split over ranks gets exactly the noise one process would draw for the whole
        batch. Returns ``{'t' [B], 'noise' [B,C,h,w], 'posterior_noise' [B,C,h,w]}``.
        """
        total = batch if total is None else total
        shape = (total, self.latent_channels, *latent_hw)
        t = torch.randint(0, self.num_train_timesteps, (total,), generator=generator, device=device)
        noise = torch.randn(shape, generator=generator, device=device)
        post = torch.randn(shape, generator=generator, device=device)
        sl = slice(offset, offset + batch)
        return {"t": t[sl], "noise": noise[sl], "posterior_noise": post[sl]}

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε: [B, C, h, w]."""
        a = self.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1).to(z0.dtype)
        s = self.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1).to(z0.dtype)
        return a * z0 + s * noise

    def forward(
        self,
        cond: torch.Tensor,
        x_vae: torch.Tensor | None = None,
        vae_moments: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        posterior_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoising loss L_ldm = mean((ε̂(x_t, t, c) − ε)²).

        Args:
            cond: [B, L, context_dim] condition tokens (L = 1 in DCAC).
            x_vae: [B, 3, S, S] VAE view in [-1, 1] (or give ``vae_moments``).
            vae_moments: [B, 2C, h, w] cached posterior moments.
            t: [B] timesteps; default uniform in {0..T-1} (global RNG of the device).
            noise: [B, C, h, w] ε; default standard normal.
            posterior_noise: [B, C, h, w] ε_post of the VAE posterior sample; default standard normal.

        Returns:
            Scalar loss (fp32).
        """
        if (x_vae is None) == (vae_moments is None):
            raise ValueError("pass exactly one of x_vae or vae_moments")
        if cond.dim() != 3 or cond.shape[-1] != self.context_dim:
            raise ValueError(f"cond must be [B, L, {self.context_dim}], got {tuple(cond.shape)}")
        if vae_moments is None:
            vae_moments = self.encode_moments(x_vae)
        z0 = self.sample_latents(vae_moments, posterior_noise)
        b = z0.shape[0]
        if cond.shape[0] != b:
            raise ValueError(f"cond batch {cond.shape[0]} != image batch {b}")
        if t is None:
            t = torch.randint(0, self.num_train_timesteps, (b,), device=z0.device)
        if noise is None:
            noise = torch.randn(z0.shape, device=z0.device, dtype=z0.dtype)
        x_t = self.add_noise(z0, noise, t)
        eps_hat = self.unet(x_t, t, encoder_hidden_states=cond).sample
        return F.mse_loss(eps_hat.float(), noise.float())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """diffusers activation checkpointing on the UNet (results unchanged)."""
        if enable:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()


def build_diffusion_branch(
    unet: str | os.PathLike | dict = "sd15",
    vae: str | os.PathLike | dict = "sd15",
    sd_weights: str | os.PathLike = "",
    sd_use_ema: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 1.0,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    qkv_random_bias: bool = False,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    grad_checkpointing: bool = False,
) -> DiffusionBranch:
    """Build UNet + VAE from local configs, load SD weights (optional), add LoRA.

    Order: build → load base weights (``sd_weights``: LDM single file or diffusers folder; '' → random,
    WARNING) → optional random q/k/v biases → LoRA.
    """
    u = build_unet(unet)
    v = build_vae(vae)
    if sd_weights:
        load_sd_weights(u, v, sd_weights, use_ema=sd_use_ema)
    else:
        logger.warning("Stable Diffusion UNet and VAE are RANDOMLY initialised (no sd_weights given)")
    if qkv_random_bias:
        add_random_qkv_bias(u)
    n_lora = add_lora(u, rank=lora_rank, alpha=lora_alpha, targets=lora_targets)
    logger.info(
        "LoRA r=%d alpha=%g on %d target names: %d parameters",
        lora_rank,
        lora_alpha,
        len(lora_targets),
        n_lora,
    )
    branch = DiffusionBranch(
        u, v, num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end
    )
    if grad_checkpointing:
        branch.set_grad_checkpointing(True)
    return branch
