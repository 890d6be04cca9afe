"""Offline weight loading for DCAC: CLIP visual tower, Stable Diffusion v1.5, official DCAC checkpoints.

Every loader reads local files only (never the network), uses ``torch.load(weights_only=True)`` or
safetensors, reports matched / missing / unexpected keys, and raises :class:`WeightLoadError` on
anything that would leave a model silently half-loaded.

The single exception to ``weights_only`` is OpenAI's own ``ViT-B-16.pt``: it is a *TorchScript
archive* (serialised code + weights), which ``torch.load(weights_only=True)`` refuses. It is read with
``torch.jit.load(path, map_location="cpu")`` — only when the file is recognised as a TorchScript zip —
and only its ``state_dict()`` is kept. Load TorchScript files only from a trusted source (OpenAI's
release); alternatively convert it once to a plain state dict / safetensors file and pass that.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from dcac_plugin._torchreid import torchreid_checkpoint_globals
from dcac_plugin.shipped import RESOURCES

logger = logging.getLogger(__name__)

_MAX_LISTED = 20


class WeightLoadError(RuntimeError):
    """A weight file is missing, unreadable, or does not match the model it is loaded into."""


@dataclass
class LoadReport:
    """What a weight loader did.

    Attributes:
        source: the file that was read.
        loaded: model keys that received a tensor.
        missing: model keys that the file did not provide.
        unexpected: file keys (after prefix handling) with no slot in the model.
        ignored: file keys skipped on purpose (e.g. ``denoiser.*`` of an official checkpoint).
        notes: free-form remarks (resizes, dtype casts).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One-line human-readable summary."""
        parts = [
            f"{self.source}: loaded {len(self.loaded)} tensors",
            f"missing {len(self.missing)}{_fmt_keys(self.missing)}",
            f"unexpected {len(self.unexpected)}{_fmt_keys(self.unexpected)}",
            f"ignored {len(self.ignored)}",
        ]
        if self.notes:
            parts.append("notes: " + "; ".join(self.notes))
        return ", ".join(parts)


def _fmt_keys(keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(sorted(keys)[:_MAX_LISTED])
    more = f", ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f" [{shown}{more}]"


#: Config paths under this prefix name files shipped inside the package (the tiny priors): they are
#: found from any working directory and in an installed package, not only in a repository checkout.
PACKAGE_PREFIX = "dcac_plugin/resources/"


def resolve_weight_path(path: str | os.PathLike) -> str:
    """``path`` itself when it exists (or is empty); a ``dcac_plugin/resources/...`` path that does not
    exist relative to the working directory resolves to the installed package's own file."""
    p = str(path)
    if not p or Path(p).expanduser().exists() or not p.replace(os.sep, "/").startswith(PACKAGE_PREFIX):
        return p
    shipped = RESOURCES / p.replace(os.sep, "/")[len(PACKAGE_PREFIX):]
    return str(shipped) if shipped.exists() else p


def _check_file(path: str | os.PathLike, what: str) -> Path:
    if not path:
        raise WeightLoadError(f"no {what} path given; pass a local file path")
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightLoadError(
            f"{what} file not found: '{p}'. Weights are never downloaded; place the file locally "
            f"and pass its path."
        )
    return p


_AGAIN = "copy or download it again (compare its size and sha256 with the source)"


def _safetensors_header(head: bytes, size: int) -> int | None:
    """The header length of a safetensors file from its first bytes, or ``None`` when it is not one."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    n = int.from_bytes(head[:8], "little")
    return n if 2 <= n <= 100_000_000 else None


def diagnose_weight_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a complete weight file, from its bytes alone; ``None`` when nothing is wrong.

    Recognises an empty file, an HTML/XML page saved under the weights' name (a failed download),
    a Git LFS pointer, a truncated zip archive (``torch.save`` files are zips whose index is at
    the end) and a truncated safetensors file. Each answer is one line: the cause, then the fix.
    """
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return f"'{p}' is empty (0 bytes): the copy or download did not complete; {_AGAIN}"
    with open(p, "rb") as f:
        head = f.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return (f"'{p}' is an HTML/XML page ({size} bytes), not weights: a failed download saved an error or "
                f"login page under this name; download the file again with a direct link to it")
    if text.startswith(b"version https://git-lfs"):
        return (f"'{p}' is a Git LFS pointer ({size} bytes), not the weights: fetch the file itself "
                f"(git lfs pull) or download it directly")
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(p):
        return (f"'{p}' is a truncated zip archive ({size} bytes; a torch.save file keeps its index at the end, "
                f"which is missing): the copy was cut short or the disk was full when it was written; {_AGAIN}")
    n = _safetensors_header(head, size)
    if n is not None or p.suffix == ".safetensors":
        if n is None or size < 8 + n:
            return (f"'{p}' is a truncated or damaged safetensors file ({size} bytes; its header does not fit): "
                    f"{_AGAIN}")
        with open(p, "rb") as f:
            f.seek(8)
            try:
                header = json.loads(f.read(n))
            except ValueError:
                return f"'{p}' is a damaged safetensors file (its header is not valid JSON): {_AGAIN}"
        ends = [int(v["data_offsets"][1]) for k, v in header.items()
                if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
        need = 8 + n + max(ends, default=0)
        if size < need:
            return (f"'{p}' is a truncated safetensors file ({size} of {need} bytes): the copy was cut short or the "
                    f"disk was full when it was written; {_AGAIN}")
    return None


def read_state_dict(path: str | os.PathLike, what: str = "weights", mmap: bool = False) -> dict[str, Any]:
    """Read a plain checkpoint file safely (safetensors or ``torch.load(weights_only=True)``).

    Args:
        path: ``.safetensors``, ``.pt``, ``.pth``, ``.ckpt``, ``.bin`` or ``.pth.tar`` file (a
            safetensors file is recognised by its content, whatever its name).
        what: description used in error messages.
        mmap: memory-map a zip-format ``torch.save`` file instead of reading it into memory
            (multi-GB SD checkpoints); ignored for other formats.

    Returns:
        The loaded object (usually a dict; not unwrapped).

    Raises:
        WeightLoadError: the file is missing or unreadable, with its cause in one line: empty,
            an HTML page, a Git LFS pointer, truncated (zip, safetensors or legacy pickle), damaged;
            for a complete file that ``weights_only`` refuses (pickled Python objects besides
            tensors), torch's reason and a one-line conversion to safetensors.
    """
    p = _check_file(path, what)
    head = _diagnosed_head(p, what)
    if p.suffix == ".safetensors" or _safetensors_header(head, 0) is not None:
        return _read_safetensors(p, what)
    is_zip = zipfile.is_zipfile(p)
    extra = {"mmap": True} if mmap and is_zip else {}
    try:
        # weights_only, plus the numpy scalar types torchreid pickles into its own checkpoints
        with torchreid_checkpoint_globals():
            return torch.load(str(p), map_location="cpu", weights_only=True, **extra)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise _torch_load_error(p, what, e, is_zip, head) from (e if _refused(e, is_zip, head) else None)


def _diagnosed_head(p: Path, what: str) -> bytes:
    """The file's first 16 bytes, after :func:`diagnose_weight_file` found nothing wrong with it."""
    try:
        problem = diagnose_weight_file(p)
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise WeightLoadError(f"cannot read {what} file '{p}': {e}") from None
    if problem:
        raise WeightLoadError(f"{what} file {problem}")
    return head


def _read_safetensors(p: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(p), device="cpu")
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise WeightLoadError(f"cannot read safetensors {what} file '{p}' ({e}): the file is damaged; "
                              f"{_AGAIN}") from None


def _refused(e: Exception, is_zip: bool, head: bytes) -> bool:
    """True when ``torch.load(weights_only=True)`` refused a complete torch file (rather than failing to read it)."""
    return "Weights only load failed" in str(e) and (is_zip or head[:1] == b"\x80")


def _torch_load_error(p: Path, what: str, e: Exception, is_zip: bool, head: bytes) -> WeightLoadError:
    """The error for a failed ``torch.load``: truncated / damaged, or refused with a conversion command."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if not _refused(e, is_zip, head):
        kind = "a torch.save zip archive" if is_zip else (
            "a legacy torch.save pickle" if head[:1] == b"\x80" else "not a torch.save or safetensors file")
        truncated = isinstance(e, EOFError) or "EOF" in first or "truncated" in first.lower()
        cause = "it is truncated" if truncated else "it is damaged or not a weight file"
        return WeightLoadError(f"cannot read {what} file '{p}' ({kind}, {p.stat().st_size} bytes; "
                               f"{type(e).__name__}: {first}): {cause}; {_AGAIN}")
    out = p.with_suffix(".safetensors")
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+?\.)(\s|$)", str(e))
    refusal = found.group(1) if found else first
    return WeightLoadError(
        f"{what} file '{p}' is a complete checkpoint that holds pickled Python objects besides tensors, which "
        f"torch.load(weights_only=True) refuses ({refusal}). Only if you trust its source (unpickling can "
        f"run code), convert it once to safetensors and pass '{out}' instead:\n"
        f"  python -c \"import torch; from safetensors.torch import save_file; "
        f"sd = torch.load('{p}', map_location='cpu', weights_only=False); sd = sd.get('state_dict', sd); "
        f"save_file({{k: v.contiguous() for k, v in sd.items() if torch.is_tensor(v)}}, '{out}')\""
    )


def unwrap_state_dict(obj: Any, path: str | os.PathLike = "") -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}`` containers and strip a ``module.`` prefix.

    Args:
        obj: a loaded checkpoint object.
        path: for error messages.

    Returns:
        A flat ``name -> tensor`` dict (non-tensor entries dropped).
    """
    for _ in range(3):
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            obj = obj["model"]
        else:
            break
    if not isinstance(obj, dict):
        raise WeightLoadError(f"'{path}' does not contain a state dict (got {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    if not out:
        raise WeightLoadError(f"'{path}' contains no tensors")
    return out


# ---------------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------------


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True if ``path`` is a TorchScript zip (has ``constants.pkl`` / ``code/``), not a torch.save zip."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_clip_visual_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the CLIP image-tower weights from a local file, as fp32, without the ``visual.`` prefix.

    Accepts OpenAI's TorchScript ``ViT-B-16.pt`` (read via ``torch.jit.load`` on CPU, see the module
    docstring), a plain state dict ``.pt``/``.pth``/``.bin`` (``weights_only=True``) or a
    ``.safetensors`` file; full-CLIP files (``visual.*`` keys, text tower dropped) or visual-only ones.

    Args:
        path: local weight file.

    Returns:
        ``name -> fp32 tensor`` in open_clip ``VisionTransformer`` naming (``conv1.weight``,
        ``positional_embedding`` [1+h0*w0, D], ``proj`` [D, E], ...).
    """
    p = _check_file(path, "CLIP")
    if is_torchscript_archive(p):
        logger.info("reading TorchScript CLIP archive %s via torch.jit.load (trusted OpenAI file)", p)
        try:
            sd = torch.jit.load(str(p), map_location="cpu").state_dict()
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise WeightLoadError(f"cannot read TorchScript CLIP archive '{p}': {e}") from e
    else:
        sd = read_state_dict(p, "CLIP")
    sd = unwrap_state_dict(sd, p)
    if any(k.startswith("visual.") for k in sd):
        sd = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    elif any(k.startswith("image_encoder.") for k in sd):
        sd = {k[len("image_encoder.") :]: v for k, v in sd.items() if k.startswith("image_encoder.")}
    if "conv1.weight" not in sd or "positional_embedding" not in sd:
        raise WeightLoadError(
            f"'{p}' has no CLIP visual tower (expected keys 'visual.conv1.weight', "
            f"'visual.positional_embedding', ...); found e.g. {sorted(sd)[:5]}"
        )
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def resize_pos_embed_bilinear(
    pos: torch.Tensor, new_grid: tuple[int, int] = (16, 8), old_grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """Resize a ViT positional-embedding table the way CLIP-ReID / DCAC do (docs/METHOD.md §3.2).

    The CLS row is kept; the patch rows are reshaped row-major to the old grid (square if
    ``old_grid`` is None), resized with ``F.interpolate(mode="bilinear", align_corners=False)``
    (no antialias) and flattened row-major (row = height index).

    Args:
        pos: [1 + h0*w0, D] table.
        new_grid: (h, w) target grid, e.g. (16, 8) for 256x128 input with stride 16.
        old_grid: (h0, w0); inferred as a square when None.

    Returns:
        [1 + h*w, D] table, same dtype as ``pos``.
    """
    if pos.dim() != 2:
        raise ValueError(f"positional embedding must be [1+h*w, D], got shape {tuple(pos.shape)}")
    n = pos.shape[0] - 1
    if old_grid is None:
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"cannot infer a square grid from {n} patch positions; pass old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid {old_grid} does not match {n} patch positions")
    cls, grid = pos[:1], pos[1:]
    if tuple(old_grid) == tuple(new_grid):
        return pos.clone()
    d = pos.shape[1]
    g = grid.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2).float()
    g = F.interpolate(g, size=tuple(new_grid), mode="bilinear", align_corners=False)
    g = g.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], d).to(pos.dtype)
    return torch.cat([cls, g], dim=0)


def load_clip_into_visual(
    visual: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "CLIP weights"
) -> LoadReport:
    """Load a visual-tower state dict into an open_clip ``VisionTransformer`` strictly.

    The positional embedding is resized with :func:`resize_pos_embed_bilinear` when the grid differs.

    Args:
        visual: the open_clip visual tower (its ``grid_size`` gives the target grid).
        state_dict: from :func:`load_clip_visual_state_dict`.
        source: name for messages.

    Returns:
        A :class:`LoadReport`; raises :class:`WeightLoadError` on any missing/unexpected key or shape.
    """
    sd = dict(state_dict)
    report = LoadReport(source=str(source))
    target = visual.state_dict()
    _fit_pos_embed(sd, target["positional_embedding"], visual, source, report)
    _check_visual_keys(sd, target, source)
    visual.load_state_dict(sd, strict=True)
    report.loaded = sorted(target)
    logger.info("CLIP visual weights: %s", report.summary())
    return report


def _fit_pos_embed(sd: dict[str, torch.Tensor], want: torch.Tensor, visual: nn.Module, source: str,
                   report: LoadReport) -> None:
    """Resize ``sd``'s positional embedding to the tower's grid in place (noted in ``report``)."""
    pos = sd.get("positional_embedding")
    if pos is not None and pos.shape != want.shape:
        if pos.shape[1] != want.shape[1]:
            raise WeightLoadError(
                f"{source}: positional_embedding width {pos.shape[1]} != model width {want.shape[1]}"
            )
        grid = tuple(int(g) for g in visual.grid_size)
        sd["positional_embedding"] = resize_pos_embed_bilinear(pos, grid)
        report.notes.append(
            f"positional_embedding resized {tuple(pos.shape)} -> {tuple(want.shape)} (bilinear)"
        )


def _check_visual_keys(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source: str) -> None:
    """WeightLoadError unless ``sd`` has exactly the tower's keys and shapes."""
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in sd and sd[k].shape != target[k].shape
    ]
    if missing or unexpected or bad:
        raise WeightLoadError(
            f"{source} does not match the CLIP visual tower: missing {len(missing)}{_fmt_keys(missing)}, "
            f"unexpected {len(unexpected)}{_fmt_keys(unexpected)}, shape mismatches {bad[:_MAX_LISTED]}. "
            f"Check the vision config (width/layers/patch size) matches the weight file."
        )


# ---------------------------------------------------------------------------------------------
# Stable Diffusion
# ---------------------------------------------------------------------------------------------

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."


def _strict_load_base(module: nn.Module, sd: dict[str, torch.Tensor], what: str, source: str) -> LoadReport:
    """Strict load of base weights into a module that may already carry PEFT LoRA layers.

    ``x.weight`` in ``sd`` lands in ``x.base_layer.weight`` when the layer is LoRA-wrapped;
    ``lora_*`` slots are not expected in ``sd``. Frozen extra parameters registered by the plugin
    (``_dcac_extra_state``) are not expected either.
    """
    target = module.state_dict()
    extra = set(getattr(module, "_dcac_extra_state", ()))
    name_map: dict[str, str] = {}
    for k in target:
        if "lora_" in k or k in extra:
            continue
        name_map[k.replace(".base_layer.", ".")] = k
    report = LoadReport(source=source)
    report.missing = sorted(k for k in name_map if k not in sd)
    report.unexpected = sorted(k for k in sd if k not in name_map)
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(target[name_map[k]].shape)}"
        for k in name_map
        if k in sd and torch.is_tensor(sd[k]) and sd[k].shape != target[name_map[k]].shape
    ]
    nones = [k for k in name_map if k in sd and sd[k] is None]
    if report.missing or report.unexpected or bad or nones:
        raise WeightLoadError(
            f"{what} weights from '{source}' do not match the model: missing {len(report.missing)}"
            f"{_fmt_keys(report.missing)}, unexpected {len(report.unexpected)}"
            f"{_fmt_keys(report.unexpected)}, shape mismatches {bad[:_MAX_LISTED]}, empty "
            f"{nones[:_MAX_LISTED]}. Check that the {what} config "
            f"matches the checkpoint (SD v1.x geometry for 'sd15')."
        )
    with torch.no_grad():
        for k, v in sd.items():
            t = target[name_map[k]]
            t.copy_(v.to(dtype=t.dtype))
    report.loaded = sorted(name_map)
    return report


def _extract_ema_unet(ckpt: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Replace every ``model.diffusion_model.X`` value by its EMA twin ``model_ema.<X without dots>``."""
    out = {}
    missing = []
    for k, v in ckpt.items():
        if k.startswith(LDM_UNET_PREFIX):
            ema_key = "model_ema." + "".join(k.split(".")[1:])
            if ema_key not in ckpt:
                missing.append(ema_key)
            else:
                out[k] = ckpt[ema_key]
        else:
            out[k] = v
    if missing:
        raise WeightLoadError(
            f"dcac.sd.use_ema True but '{source}' lacks {len(missing)} EMA tensors{_fmt_keys(missing)}; "
            f"set dcac.sd.use_ema False (non-EMA weights, as the original DCAC) or use a checkpoint with "
            f"EMA weights"
        )
    return out


def load_sd_single_file(
    unet: nn.Module, vae: nn.Module, path: str | os.PathLike, use_ema: bool = False
) -> dict[str, LoadReport]:
    """Load SD v1.x UNet + VAE weights from an original-LDM single file (``v1-5-pruned.ckpt``).

    Reads the file with :func:`read_state_dict` (safetensors or ``torch.load(weights_only=True)``,
    memory-mapped; a refusal reports torch's reason), unwraps ``state_dict``, and converts with
    diffusers' ``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint``; every UNet/VAE
    base tensor must be present (strict). The ``cond_stage_model.*`` (text encoder) and schedule
    buffers are ignored. Which UNet weights were loaded (EMA or not) is logged once; the
    ``model_ema.*`` tensors are removed before the conversion, so diffusers' own EMA message (which
    would name the non-EMA weights whatever was chosen) is never printed. The UNet may already carry
    PEFT LoRA layers (base weights are filled, LoRA slots untouched).

    Args:
        unet: diffusers ``UNet2DConditionModel``.
        vae: diffusers ``AutoencoderKL``.
        path: local ``.ckpt`` / ``.safetensors`` file in original LDM layout.
        use_ema: take the ``model_ema.*`` UNet weights instead of the non-EMA ones (the original
            DCAC uses non-EMA).

    Returns:
        ``{"unet": LoadReport, "vae": LoadReport}``.
    """
    p = _check_file(path, "Stable Diffusion single-file checkpoint")
    ckpt = _read_ldm_checkpoint(p)
    has_ema = any(k.startswith("model_ema.") for k in ckpt)
    if use_ema:
        ckpt = _extract_ema_unet(ckpt, str(p))
    ckpt = {k: v for k, v in ckpt.items() if not k.startswith("model_ema.")}
    unet_sd, vae_sd = _convert_ldm(ckpt, unet, vae, p)
    reports = {
        "unet": _strict_load_base(unet, unet_sd, "UNet", str(p)),
        "vae": _strict_load_base(vae, vae_sd, "VAE", str(p)),
    }
    logger.info("SD weights from %s: %s; UNet %d tensors, VAE %d tensors", p, _which_unet_weights(use_ema, has_ema),
                len(reports["unet"].loaded), len(reports["vae"].loaded))
    return reports


def _read_ldm_checkpoint(p: Path) -> dict[str, Any]:
    """The file's (unwrapped) state dict; WeightLoadError unless it holds both UNet and VAE tensors in LDM layout."""
    ckpt: Any = read_state_dict(p, "Stable Diffusion single-file checkpoint", mmap=True)
    while isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise WeightLoadError(f"'{p}' does not contain a state dict (got {type(ckpt).__name__})")
    n_unet = sum(k.startswith(LDM_UNET_PREFIX) for k in ckpt)
    n_vae = sum(k.startswith(LDM_VAE_PREFIX) for k in ckpt)
    if n_unet == 0 or n_vae == 0:
        raise WeightLoadError(
            f"'{p}' is not an original-LDM SD checkpoint: {n_unet} '{LDM_UNET_PREFIX}*' and {n_vae} "
            f"'{LDM_VAE_PREFIX}*' tensors. For a diffusers-format folder pass the folder (with unet/ "
            f"and vae/) instead."
        )
    return ckpt


def _convert_ldm(ckpt: dict[str, Any], unet: nn.Module, vae: nn.Module,
                 p: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """diffusers' LDM → diffusers conversion of the UNet and the VAE tensors."""
    # heavy (diffusers, 2-4 s): only an SD single-file checkpoint needs it; CLIP and re-ID weights load without
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    try:
        return convert_ldm_unet_checkpoint(ckpt, unet.config), convert_ldm_vae_checkpoint(ckpt, vae.config)
    except KeyError as e:
        raise WeightLoadError(
            f"'{p}': conversion from LDM layout failed, key {e} missing; the checkpoint does not match "
            f"the UNet/VAE config"
        ) from e


def _which_unet_weights(use_ema: bool, has_ema: bool) -> str:
    """Which UNet weights were loaded, for the log line."""
    if use_ema:
        return "EMA UNet weights (model_ema.*; dcac.sd.use_ema True)"
    if has_ema:
        return ("non-EMA UNet weights (model.diffusion_model.*, as the original DCAC; the file also holds "
                "EMA ones, which dcac.sd.use_ema True selects)")
    return "non-EMA UNet weights (model.diffusion_model.*; the file holds no EMA ones for dcac.sd.use_ema)"


def _read_diffusers_component(folder: Path, sub: str) -> dict[str, torch.Tensor]:
    d = folder / sub
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        f = d / name
        if f.is_file():
            return unwrap_state_dict(read_state_dict(f, f"diffusers {sub}"), f)
    raise WeightLoadError(
        f"no weights for '{sub}' in diffusers folder '{folder}': expected {d}/diffusion_pytorch_model"
        f".safetensors (or .bin)"
    )


def load_sd_diffusers_folder(
    unet: nn.Module, vae: nn.Module, folder: str | os.PathLike
) -> dict[str, LoadReport]:
    """Load UNet + VAE weights from a diffusers-format SD folder (``<folder>/unet``, ``<folder>/vae``).

    Note (docs/METHOD.md §15, item 4): the diffusers ``unet/`` weights of SD-1.5 may be the EMA set, unlike the
    original DCAC (non-EMA from ``v1-5-pruned.ckpt``).

    Args:
        unet: diffusers ``UNet2DConditionModel`` (may already carry LoRA layers).
        vae: diffusers ``AutoencoderKL``.
        folder: local folder.

    Returns:
        ``{"unet": LoadReport, "vae": LoadReport}``.
    """
    f = Path(folder).expanduser()
    if not f.is_dir():
        raise WeightLoadError(f"diffusers SD folder not found: '{f}'")
    reports = {
        "unet": _strict_load_base(unet, _read_diffusers_component(f, "unet"), "UNet", str(f / "unet")),
        "vae": _strict_load_base(vae, _read_diffusers_component(f, "vae"), "VAE", str(f / "vae")),
    }
    logger.info("SD weights from diffusers folder %s loaded", f)
    return reports


def load_sd_weights(
    unet: nn.Module, vae: nn.Module, path: str | os.PathLike, use_ema: bool = False
) -> dict[str, LoadReport]:
    """Dispatch: a folder → :func:`load_sd_diffusers_folder`, a file → :func:`load_sd_single_file`."""
    p = Path(path).expanduser()
    if p.is_dir():
        if use_ema:
            raise WeightLoadError(
                f"sd_use_ema=True needs an original-LDM single file with model_ema.* tensors; '{p}' is "
                f"a diffusers folder"
            )
        return load_sd_diffusers_folder(unet, vae, p)
    return load_sd_single_file(unet, vae, p, use_ema=use_ema)


# ---------------------------------------------------------------------------------------------
# Official DCAC checkpoints / torchreid checkpoints
# ---------------------------------------------------------------------------------------------


def load_official_dcac_checkpoint(
    model_or_encoder: nn.Module, path: str | os.PathLike, load_heads: bool = False, strict: bool = True
) -> LoadReport:
    """Load the re-ID encoder of an official DCAC release checkpoint (docs/METHOD.md §11.3) — or of this plugin's.

    Unwraps ``state_dict``/``model``, strips ``module.``, keeps ``encoder.image_encoder.*`` and
    ``encoder.bnneck.*`` (and ``encoder.cam_emb`` when the model has SIE); ``encoder.fc.weight`` is
    loaded only with ``load_heads=True``; everything under ``denoiser.`` (and this plugin's
    ``condition.``/``diffusion.``) is ignored.

    Args:
        model_or_encoder: a ``DCAC`` (uses ``.encoder``) or a ``CLIPReIDEncoder``.
        path: local checkpoint file (``weights_only`` load).
        load_heads: also load the classifier ``fc`` (its N must equal the model's).
        strict: raise when any encoder key is missing or unexpected (default). With ``strict=False``
            they are only reported; nothing matched still raises.

    Returns:
        A :class:`LoadReport` (keys named relative to the encoder).
    """
    encoder = getattr(model_or_encoder, "encoder", model_or_encoder)
    p = _check_file(path, "DCAC checkpoint")
    sd = unwrap_state_dict(read_state_dict(p, "DCAC checkpoint"), p)
    report = LoadReport(source=str(p))
    target = encoder.state_dict()
    wanted, fc_rows = _encoder_tensors(sd, target, load_heads, report)
    _check_encoder_match(p, sd, wanted, target, load_heads, fc_rows)
    skip = ("fc.",) if not load_heads else ()
    report.missing = sorted(k for k in target if k not in wanted and not k.startswith(skip))
    if strict and (report.missing or report.unexpected):
        raise WeightLoadError(
            f"'{p}' does not match the encoder: missing {len(report.missing)}{_fmt_keys(report.missing)}, "
            f"unexpected {len(report.unexpected)}{_fmt_keys(report.unexpected)}. Pass strict=False to load "
            f"the matching part only."
        )
    with torch.no_grad():
        for k, v in wanted.items():
            target[k].copy_(v.to(dtype=target[k].dtype))
    report.loaded = sorted(wanted)
    if fc_rows is not None:
        report.notes.append(f"checkpoint classifier has {fc_rows} identities")
    logger.info("DCAC encoder weights: %s", report.summary())
    return report


def _encoder_tensors(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], load_heads: bool,
                     report: LoadReport) -> tuple[dict[str, torch.Tensor], int | None]:
    """The checkpoint's ``encoder.*`` tensors the encoder has (named relative to it) and the classifier's
    row count (None without one); what is skipped goes to ``report.ignored`` / ``report.unexpected``."""
    wanted: dict[str, torch.Tensor] = {}
    fc_rows = None
    for k, v in sd.items():
        if not k.startswith("encoder."):
            report.ignored.append(k)
            continue
        name = k[len("encoder.") :]
        if name.startswith("fc."):
            fc_rows = v.shape[0]
            if not load_heads:
                report.ignored.append(k)
                continue
        if name not in target:
            report.unexpected.append(name)
            continue
        wanted[name] = v
    return wanted, fc_rows


def _check_encoder_match(p: Path, sd: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor],
                         target: dict[str, torch.Tensor], load_heads: bool, fc_rows: int | None) -> None:
    """WeightLoadError when the checkpoint is another model's: nothing matches, another input size or
    classifier size, or other shapes."""
    if not wanted:
        raise WeightLoadError(
            f"'{p}' is a checkpoint of another model: nothing in it matches the DCAC / CLIP-ReID encoder "
            f"(expected keys 'encoder.image_encoder.*', 'encoder.bnneck.*'; found e.g. {sorted(sd)[:5]}); pass "
            f"weights written by this plugin's dcac_*/clip_reid_* models or an official DCAC release file, or "
            f"the config (model.name) of the model that wrote it"
        )
    pos = wanted.get("image_encoder.positional_embedding")
    want_pos = target["image_encoder.positional_embedding"]
    if pos is not None and pos.shape != want_pos.shape:
        raise WeightLoadError(
            f"'{p}': positional_embedding {tuple(pos.shape)} but the model has {tuple(want_pos.shape)}; "
            f"build the model with the checkpoint's input size/stride (official: 256x128, stride 16 -> "
            f"[129, 768])"
        )
    if load_heads and fc_rows is not None and fc_rows != target["fc.weight"].shape[0]:
        raise WeightLoadError(
            f"'{p}': classifier encoder.fc.weight has {fc_rows} identities but the model has "
            f"{target['fc.weight'].shape[0]}; build the model with num_classes={fc_rows} or load with "
            f"load_heads=False (the classifier is not needed for evaluation)"
        )
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in wanted.items()
        if v.shape != target[k].shape
    ]
    if bad:
        raise WeightLoadError(f"'{p}' is a checkpoint of another model size: shape mismatches {bad[:_MAX_LISTED]}; "
                              f"pass the config (model.name, dcac.vision) of the run that wrote it")


def load_torchreid_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Safe equivalent of ``torchreid.utils.load_pretrained_weights`` (weights_only, local file).

    Keys are matched by name (``module.`` stripped) and shape; mismatches are reported, and a file
    that matches nothing raises.

    Args:
        model: any torchreid model.
        path: local checkpoint (torchreid ``save_checkpoint`` output or a plain state dict).

    Returns:
        A :class:`LoadReport`.
    """
    p = _check_file(path, "pretrained model")
    sd = unwrap_state_dict(read_state_dict(p, "pretrained model"), p)
    target = model.state_dict()
    report = LoadReport(source=str(p))
    matched = {}
    for k, v in sd.items():
        if k in target and target[k].shape == v.shape:
            matched[k] = v
        else:
            report.unexpected.append(k)
    if not matched:
        raise WeightLoadError(
            f"'{p}' is a checkpoint of another model: no key matches the model by name and shape (file keys "
            f"e.g. {sorted(sd)[:5]}, model keys e.g. {sorted(target)[:5]}); pass a checkpoint of this "
            f"architecture or set model.name to the one that wrote the file"
        )
    report.missing = sorted(k for k in target if k not in matched)
    model.load_state_dict(matched, strict=False)
    report.loaded = sorted(matched)
    level = logging.WARNING if report.missing or report.unexpected else logging.INFO
    logger.log(level, "pretrained weights: %s", report.summary())
    return report
