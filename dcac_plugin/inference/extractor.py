"""Feature extraction with a trained model: exactly the features the run's evaluation ranks.

::

    from dcac_plugin import FeatureExtractor
    fx = FeatureExtractor.from_run("output/demo/dcac_tiny_ma2ms")       # config.yaml + its checkpoint
    feats = fx(["a.jpg", "b.jpg"])                                      # [2, D] float32 (CPU)

What "the same feature" means: the image goes through the evaluation's test transform (resize to
``data.height x data.width`` with ``data.test_interpolation`` for the plugin's models, torchreid's
bilinear resize for torchreid models; then ``ToTensor`` and the run's mean/std), the model in eval
mode (plugin models: the after-BN BNNeck feature), and L2 normalisation when the run's evaluation
normalises (``test.normalize_feature``). Distances between these features with
``test.dist_metric`` are the evaluator's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from tqdm import tqdm
from yacs.config import CfgNode

from dcac_plugin._version import __version__
from dcac_plugin.config import config_hash, get_default_config, merge_config
from dcac_plugin.data.reader import CorruptImageError, read_image, to_rgb
from dcac_plugin.engine.base import _bar_disabled as engine_bar_disabled
from dcac_plugin.families import PluginFamily, family_for
from dcac_plugin.registry import register
from dcac_plugin.utils.files import latest_loadable_checkpoint, read_results
from dcac_plugin.utils.io import atomic_open
from dcac_plugin.utils.precision import check_inference_amp

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTS",
    "FeatureExtractor",
    "ImageInput",
    "list_images",
    "load_features",
    "load_run_config",
    "run_weights",
    "save_features",
]

#: Image file endings :func:`list_images` collects from a folder.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


class _BadImage:
    """Placeholder for an input image that could not be read (``skip_bad``)."""

    def __init__(self, index: int, name: str, error: str) -> None:
        self.index, self.name, self.error = index, name, error


def _bar_disabled() -> bool | None:
    """Progress bars as the engines show them: off below INFO; tqdm hides them off a terminal."""
    return engine_bar_disabled()


# ------------------------------------------------------------------------------------------------
# run folders
# ------------------------------------------------------------------------------------------------


def load_run_config(run_dir: str | os.PathLike, opts: Sequence[str] = ()) -> CfgNode:
    """The merged config of a run folder (``<run_dir>/config.yaml``), plus ``key value`` overrides."""
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.yaml; is it a run folder written by tools/train.py?")
    return merge_config(get_default_config(), str(path), list(opts))


def run_weights(run_dir: str | os.PathLike, cfg: CfgNode | None = None) -> Path:
    """The weight file a run folder's results come from.

    Order: the checkpoint recorded in ``results.json`` (``checkpoint.file``, relative to the run
    folder when not absolute) when it still exists; else the newest ``checkpoint_epN.pth`` that can be
    read (see :func:`dcac_plugin.utils.files.latest_loadable_checkpoint`); else the
    config's ``model.load_weights`` (an evaluation-only run of an external file).

    Raises:
        FileNotFoundError: none of them exists.
    """
    run = Path(run_dir)
    rec = read_results(run) or {}
    entry = (rec.get("checkpoint") or {}).get("file") if isinstance(rec.get("checkpoint"), dict) else None
    if entry:
        p = Path(entry)
        p = p if p.is_absolute() else run / p
        if p.is_file():
            return p
        logger.info("results.json names %s, which is gone; using the latest checkpoint", p)
    latest = latest_loadable_checkpoint(run)  # an unreadable newest one is moved aside, with a warning
    if latest is not None:
        return latest
    if cfg is not None and cfg.model.load_weights and Path(cfg.model.load_weights).is_file():
        return Path(cfg.model.load_weights)
    raise FileNotFoundError(
        f"no weights in run folder {run}: no checkpoint_epN.pth, no results.json checkpoint and no "
        "model.load_weights file; pass --config-file and --weights instead")


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------


def build_inference_model(cfg: CfgNode, weights: str | os.PathLike) -> tuple[torch.nn.Module, bool]:
    """Build the configured model's evaluation encoder and load ``weights`` into it.

    Plugin models (``dcac_*``, ``clip_reid_*``): only the re-ID encoder is built (no UNet/VAE, no
    CLIP or SD file read); ``weights`` is one of our checkpoints or an official DCAC ``source_*.pth``.
    torchreid models: built by name with ``num_classes`` taken from the checkpoint's classifier;
    every tensor but the classifier must be in the file. (The model's family decides:
    :meth:`dcac_plugin.families.ModelFamily.build_inference_model`.)

    Returns:
        ``(model in eval mode, whether it is one of the plugin's models)``.

    Raises:
        WeightLoadError: the file is unreadable or does not match the model.
    """
    register()
    family = family_for(cfg)
    return family.build_inference_model(cfg, weights).eval(), isinstance(family, PluginFamily)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """The one device decision: ``device`` when given, else CUDA when available, else CPU."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------


def list_images(source: str | os.PathLike) -> list[str]:
    """Image paths from a folder (recursive, sorted, endings :data:`IMAGE_EXTS`), a list file, or one image.

    A list file holds one image path per line (blank lines and ``#`` comments skipped); relative
    paths are relative to the list file's folder. A file ending in one of :data:`IMAGE_EXTS` is
    that one image. Listed files are not opened here.

    Raises:
        FileNotFoundError: ``source`` does not exist, or a folder holds no image.
        ValueError: a list file that is not UTF-8 text.
    """
    src = Path(source)
    if src.is_dir():
        paths = sorted(str(p) for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                       and not p.name.startswith("."))
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) under {src}")
        return paths
    if src.is_file() and src.suffix.lower() in IMAGE_EXTS:
        return [str(src)]
    if src.is_file():
        out = []
        try:
            text = src.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{src} is not a list file (not UTF-8 text): pass an image folder, a list file with "
                             f"one image path per line, or one image ({', '.join(IMAGE_EXTS)})") from None
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            out.append(str(p if p.is_absolute() else src.parent / p))
        if not out:
            raise FileNotFoundError(f"list file {src} names no image")
        return out
    raise FileNotFoundError(f"no such folder or list file: {src}")


def _to_pil(item: Any, index: int) -> Image.Image:
    """One input image as an RGB PIL image (see :class:`FeatureExtractor` for the accepted forms)."""
    if isinstance(item, (str, os.PathLike)):
        return read_image(item)
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ValueError(f"image {index}: a numpy image must be HxWx3 uint8 RGB, got shape {item.shape} "
                             f"dtype {item.dtype}")
        return Image.fromarray(item, "RGB")
    if isinstance(item, torch.Tensor):
        if item.dim() != 3 or item.shape[0] != 3 or not item.is_floating_point():
            raise ValueError(f"image {index}: a tensor image must be a float CHW [3, H, W] RGB tensor in [0, 1], "
                             f"got shape {tuple(item.shape)} dtype {item.dtype}")
        arr = (item.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy(), "RGB")
    raise TypeError(f"image {index}: unsupported input type {type(item).__name__}; pass a path, a PIL image, an "
                    "HxWx3 uint8 numpy array or a CHW float tensor in [0, 1]")


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return [images] if images.ndim == 3 else list(images)
    if isinstance(images, torch.Tensor):
        if images.dim() == 4:
            return list(images)
        return [images]
    return list(images)


def _name(item: Any, index: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<image {index}>"


class _ImageSet(torch.utils.data.Dataset):
    """Inputs -> transformed tensors (or :class:`_BadImage` with ``skip_bad``)."""

    def __init__(self, items: list[Any], transform: Any, skip_bad: bool) -> None:
        self.items, self.transform, self.skip_bad = items, transform, skip_bad

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        try:
            return i, self.transform(_to_pil(self.items[i], i))
        except (CorruptImageError, FileNotFoundError) as exc:
            if not self.skip_bad:
                raise
            return i, _BadImage(i, _name(self.items[i], i), str(exc))


def _collate(batch: list[tuple[int, Any]]) -> tuple[list[int], torch.Tensor | None, list[_BadImage]]:
    good = [(i, x) for i, x in batch if not isinstance(x, _BadImage)]
    bad = [x for _, x in batch if isinstance(x, _BadImage)]
    tensors = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], tensors, bad


# ------------------------------------------------------------------------------------------------
# the extractor
# ------------------------------------------------------------------------------------------------


class FeatureExtractor:
    """Re-ID features of images, exactly as the run's evaluation computes them.

    Args:
        cfg: the run's config (``config.yaml`` of a run folder, or a config file + overrides).
        weights: our checkpoint (``checkpoint_epN.pth``), an official DCAC ``source_*.pth`` (plugin
            models) or a torchreid checkpoint (torchreid models).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``...; default CUDA when available, else CPU.
        batch_size: images per forward pass.
        amp: ``'off'`` (default, fp32: features equal the evaluation's), ``'fp16'`` (CUDA) or
            ``'bf16'``: autocast for speed; features are returned in fp32 but differ slightly.
        workers: data-loader worker processes for reading image files (0 = in this process).

    Calling it (``fx(images, cam_ids=None)``) accepts one image or a list of them, each one of:

    * a path (``str`` / ``PathLike``): read as RGB;
    * a PIL image (converted to RGB);
    * an ``HxWx3`` ``uint8`` RGB numpy array (or a ``[N, H, W, 3]`` array);
    * a ``[3, H, W]`` float RGB tensor in ``[0, 1]`` of any size (or a ``[N, 3, H, W]`` batch): the
      *raw* image, NOT resized or normalised. It is rounded to 8 bits and goes through the same
      resize + normalisation as a file, so ``ToTensor()(pil_image)`` gives exactly that image's
      feature.

    It returns a ``[N, D]`` float32 CPU tensor. ``cam_ids`` (``[N]`` 0-based training camera ids) are
    needed only by models trained with SIE (``dcac.sie True``).
    """

    def __init__(self, cfg: CfgNode, weights: str | os.PathLike, *, device: str | torch.device | None = None,
                 batch_size: int = 64, amp: str = "off", workers: int = 0) -> None:
        check_inference_amp(amp)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.cfg = cfg
        self.weights = Path(weights)
        self.device = _resolve_device(device)
        self.amp = check_inference_amp(amp, self.device)
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        register()
        self.family = family_for(cfg)
        self.model = self.family.build_inference_model(cfg, self.weights).eval()
        self.model.to(self.device)
        self.model_name = self.family.model_name(cfg)
        self.transform = self.family.eval_transform(cfg)
        self.normalize = bool(cfg.test.normalize_feature)
        self.metric = str(cfg.test.dist_metric)
        self.image_size = (int(cfg.data.height), int(cfg.data.width))
        self.pixel_mean, self.pixel_std, self.interpolation = self.family.preprocessing(cfg)
        encoder = getattr(self.model, "encoder", None)
        self.uses_sie = getattr(encoder, "cam_emb", None) is not None
        self.feature_dim = int(self._forward(torch.zeros(1, 3, *self.image_size, device=self.device),
                                             torch.zeros(1, dtype=torch.long) if self.uses_sie else None).shape[1])
        self.run_dir: Path | None = None
        logger.info("feature extractor: %s from %s on %s (feature %d, %s %dx%d, L2 %s)", self.model_name,
                    self.weights, self.device, self.feature_dim, self.interpolation, *self.image_size,
                    "on" if self.normalize else "off")

    @property
    def is_plugin(self) -> bool:
        """One of the plugin's models (legacy; :attr:`family` says which family)."""
        return isinstance(self.family, PluginFamily)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, weights: str | os.PathLike | None = None,
                 opts: Sequence[str] = (), **kwargs: Any) -> FeatureExtractor:
        """From a run folder: its ``config.yaml`` and :func:`run_weights` (or ``weights``)."""
        cfg = load_run_config(run_dir, opts)
        fx = cls(cfg, weights or run_weights(run_dir, cfg), **kwargs)
        fx.run_dir = Path(run_dir)
        return fx

    @classmethod
    def from_config(cls, config_file: str | os.PathLike, weights: str | os.PathLike, opts: Sequence[str] = (),
                    **kwargs: Any) -> FeatureExtractor:
        """From a config file (+ ``key value`` overrides) and a weight file."""
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weight file not found: {weights}")
        cfg = merge_config(get_default_config(), str(config_file), list(opts))
        return cls(cfg, weights, **kwargs)

    # ------------------------------------------------------------------ forward
    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(device_type=self.device.type,
                              dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16)

    @torch.no_grad()
    def _forward(self, x: torch.Tensor, cam_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 3, H, W]`` transformed images -> ``[B, D]`` float32 features (L2 when the run normalises)."""
        with self._autocast():
            if self.uses_sie:
                if cam_ids is None:
                    raise ValueError("this model was trained with SIE (dcac.sie True): pass cam_ids, the 0-based "
                                     "training camera id of every image")
                f = self.model(x, cam_ids=cam_ids.to(self.device))
            else:
                f = self.model(x)
        f = f.float()
        if self.normalize:
            f = F.normalize(f, p=2, dim=1)
        return f

    def preprocess(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """The evaluation's test transform of each input: ``[N, 3, H, W]`` float32."""
        items = _as_list(images)
        return torch.stack([self.transform(_to_pil(x, i)) for i, x in enumerate(items)])

    def __call__(self, images: ImageInput | Sequence[ImageInput], cam_ids: Any = None) -> torch.Tensor:
        """Features ``[N, D]`` float32 (CPU) of one image or a list (see the class docstring)."""
        return self.extract(images, cam_ids=cam_ids)[0]

    def extract(self, images: ImageInput | Sequence[ImageInput], cam_ids: Any = None, skip_bad: bool = False,
                progress: bool = False) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
        """Features of many images in batches.

        Args:
            images: see the class docstring.
            cam_ids: ``[N]`` camera ids (SIE models only).
            skip_bad: a missing or undecodable file is skipped (and reported) instead of raising.
            progress: show a progress bar (on a terminal, at INFO level).

        Returns:
            ``(features [M, D] float32 CPU, kept input indices [M], skipped [(name, error)])``;
            ``M = N`` unless ``skip_bad`` skipped some.

        Raises:
            CorruptImageError / FileNotFoundError: an unreadable image (naming the file), unless ``skip_bad``.
        """
        items = _as_list(images)
        cams = None
        if cam_ids is not None:
            cams = torch.as_tensor(np.asarray(cam_ids), dtype=torch.long).flatten()
            if cams.numel() != len(items):
                raise ValueError(f"{cams.numel()} cam_ids for {len(items)} images")
        loader = torch.utils.data.DataLoader(_ImageSet(items, self.transform, skip_bad), batch_size=self.batch_size,
                                             shuffle=False, num_workers=self.workers, collate_fn=_collate)
        feats, kept, skipped = [], [], []
        bar = tqdm(loader, desc="features", unit="batch", leave=False,
                   disable=True if not progress else _bar_disabled())
        for idx, x, bad in bar:
            skipped += [(b.name, b.error) for b in bad]
            for b in bad:
                logger.warning("skipped %s: %s", b.name, b.error)
            if x is None:
                continue
            feats.append(self._forward(x.to(self.device), cams[idx] if cams is not None else None).cpu())
            kept += idx
        out = torch.cat(feats) if feats else torch.zeros(0, self.feature_dim)
        return out, kept, skipped

    def metadata(self) -> dict[str, Any]:
        """What produced the features: model, weights, preprocessing, normalisation, metric, the config (yaml)."""
        return {
            "model": self.model_name,
            "weights": str(self.weights.resolve()),
            "run_dir": str(self.run_dir.resolve()) if self.run_dir else None,
            "config_hash": config_hash(self.cfg),
            "feature_dim": self.feature_dim,
            "input_size": list(self.image_size),
            "interpolation": self.interpolation,
            "pixel_mean": self.pixel_mean,
            "pixel_std": self.pixel_std,
            "l2_normalized": self.normalize,
            "dist_metric": self.metric,
            "amp": self.amp,
            "device": str(self.device),
            "dcac_plugin_version": __version__,
            "config": self.cfg.dump(),
        }


# ------------------------------------------------------------------------------------------------
# feature files
# ------------------------------------------------------------------------------------------------


def save_features(path: str | os.PathLike, features: torch.Tensor | np.ndarray, paths: Sequence[str],
                  metadata: dict[str, Any], skipped: Iterable[tuple[str, str]] = ()) -> Path:
    """Write features atomically to ``.npz`` or ``.safetensors``.

    ``.npz``: arrays ``features`` [N, D] float32, ``paths`` [N] str, ``skipped`` [K] str and
    ``metadata`` (a JSON string). ``.safetensors``: tensor ``features``; the file's string metadata
    holds ``paths``, ``skipped`` and ``metadata`` as JSON. Both read back with :func:`load_features`.
    """
    out = Path(path)
    feats = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if feats.ndim != 2 or feats.shape[0] != len(paths):
        raise ValueError(f"features {feats.shape} do not match {len(paths)} paths")
    skipped = [f"{n}: {e}" for n, e in skipped]
    meta = json.dumps(metadata, sort_keys=True)
    if out.suffix == ".npz":
        with atomic_open(out, "wb") as f:
            np.savez(f, features=feats, paths=np.asarray(list(paths), dtype=str),
                     skipped=np.asarray(skipped, dtype=str), metadata=np.asarray(meta))
    elif out.suffix == ".safetensors":
        blob = save_safetensors({"features": torch.from_numpy(feats)},
                    metadata={"paths": json.dumps(list(paths)), "skipped": json.dumps(skipped), "metadata": meta})
        with atomic_open(out, "wb") as f:
            f.write(blob)
    else:
        raise ValueError(f"output {out} must end in .npz or .safetensors")
    return out


def load_features(path: str | os.PathLike) -> tuple[np.ndarray, list[str], dict[str, Any], list[str]]:
    """Read a :func:`save_features` file: ``(features [N, D], paths, metadata, skipped)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated, damaged or not written by :func:`save_features`
            (one line naming it, the reason and the fix).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"feature file not found: {p}")
    if p.suffix not in (".npz", ".safetensors"):
        raise ValueError(f"{p} must end in .npz or .safetensors")
    try:
        feats, paths, meta, skipped = _read_features(p)
    except Exception as exc:  # noqa: BLE001 - any failure: one line with the reason
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        size = p.stat().st_size
        raise ValueError(f"cannot read feature file {p} ({size} bytes; {type(exc).__name__}: {first}): it is "
                         f"{'empty' if size == 0 else 'truncated, damaged or not written by tools/extract.py'}; "
                         f"write it again with tools/extract.py") from None
    if feats.ndim != 2 or len(paths) != feats.shape[0]:
        raise ValueError(f"{p}: features {tuple(feats.shape)} do not match its {len(paths)} image paths; write it "
                         f"again with tools/extract.py")
    return feats, paths, meta, skipped


def _read_features(p: Path) -> tuple[np.ndarray, list[str], dict[str, Any], list[str]]:
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return (z["features"], [str(x) for x in z["paths"]], json.loads(str(z["metadata"])),
                    [str(x) for x in z["skipped"]])
    if p.suffix == ".safetensors":
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
            feats = f.get_tensor("features")
        return feats, json.loads(meta.get("paths", "[]")), json.loads(meta.get("metadata", "{}")), \
            json.loads(meta.get("skipped", "[]"))
    raise ValueError(f"{p} must end in .npz or .safetensors")  # checked by load_features
