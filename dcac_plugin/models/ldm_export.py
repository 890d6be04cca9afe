"""diffusers → original-LDM ("CompVis") key conversion for SD-style UNet/VAE state dicts.

The inverse of diffusers' ``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint``, written
for any ``layers_per_block`` and block count (SD v1.x and the tiny test models). Used by the tests to
write original-layout single-file checkpoints, and usable to export a fine-tuned UNet back to the
CompVis layout.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_diffusers_to_ldm(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``UNet2DConditionModel`` state dict to CompVis ``openaimodel`` names.

    Args:
        state_dict: base UNet weights (no LoRA keys).
        config: the UNet config (needs ``layers_per_block`` and ``up_block_types``).

    Returns:
        ``{"model.diffusion_model.<ldm name>": tensor}``.
    """
    lpb = int(config["layers_per_block"])
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for k, v in state_dict.items():
        if "lora_" in k or ".base_layer." in k:
            raise ValueError(f"unet_diffusers_to_ldm expects base weights only, got {k!r}")
        new = _unet_block_name(k, lpb, up_attn) or _unet_outer_name(k)
        if new is None:
            raise ValueError(f"no LDM name for UNet key {k!r}")
        out["model.diffusion_model." + new] = v
    return out


def _unet_block_name(k: str, lpb: int, up_attn: list[bool]) -> str | None:
    """LDM name of a down/up block key (``input_blocks.*`` / ``output_blocks.*``); None for other keys."""
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = (lpb + 1) * i + j + 1
        return f"input_blocks.{idx}.0.{_resnet(rest, _UNET_RESNET)}" if kind == "resnets" else \
            f"input_blocks.{idx}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
        return f"input_blocks.{(lpb + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = (lpb + 1) * i + j
        return f"output_blocks.{idx}.0.{_resnet(rest, _UNET_RESNET)}" if kind == "resnets" else \
            f"output_blocks.{idx}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
        i = int(m[1])
        return f"output_blocks.{(lpb + 1) * i + lpb}.{2 if up_attn[i] else 1}.conv.{m[2]}"
    return None


def _unet_outer_name(k: str) -> str | None:
    """LDM name of a mid-block, time-embedding or in/out conv key; None for other keys."""
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", k):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2], _UNET_RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", k):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"time_embedding\.linear_([12])\.(.+)", k):
        return f"time_embed.{0 if m[1] == '1' else 2}.{m[2]}"
    if m := re.match(r"conv_in\.(.+)", k):
        return f"input_blocks.0.0.{m[1]}"
    if m := re.match(r"conv_norm_out\.(.+)", k):
        return f"out.0.{m[1]}"
    if m := re.match(r"conv_out\.(.+)", k):
        return f"out.2.{m[1]}"
    return None


def vae_diffusers_to_ldm(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKL`` state dict to CompVis ``first_stage_model`` names.

    Mid-block attention linears become 1x1 conv weights [C, C, 1, 1] as in the original.

    Returns:
        ``{"first_stage_model.<ldm name>": tensor}``.
    """
    n = len(config["up_block_types"])
    res = {"conv_shortcut": "nin_shortcut"}
    out = {}
    for k, v in state_dict.items():
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{_resnet(m[3], res)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            new = f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{_resnet(m[3], res)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
            new = f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", k):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{_resnet(m[3], res)}"
        elif m := re.match(
            r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.+)", k
        ):
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and m[3] == "weight" and v.dim() == 2:
                v = v[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)", k):
            new = f"{m[1]}.norm_out.{m[2]}"
        elif re.match(r"(encoder|decoder)\.(conv_in|conv_out)\.", k) or k.startswith(
            ("quant_conv.", "post_quant_conv.")
        ):
            new = k
        else:
            raise ValueError(f"no LDM name for VAE key {k!r}")
        out["first_stage_model." + new] = v
    return out


def export_ldm_checkpoint(unet: torch.nn.Module, vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One original-layout state dict (``model.diffusion_model.*`` + ``first_stage_model.*``) from
    plain (LoRA-free) diffusers UNet and VAE modules."""
    sd = unet_diffusers_to_ldm(unet.state_dict(), unet.config)
    sd.update(vae_diffusers_to_ldm(vae.state_dict(), vae.config))
    return sd
