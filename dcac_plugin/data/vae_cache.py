"""On-disk cache of VAE posterior moments (docs/METHOD.md §4.2-4.3, docs/DECISIONS.md item 15).

The VAE view of an image is deterministic (resize + normalise, no augmentation), so the frozen VAE
encoder's posterior moments (mean ‖ logvar) are a pure function of (image bytes, VAE encoder weights,
VAE-view transform). :class:`VAEMomentCache` computes them once and stores them; training then draws a
fresh posterior sample ``mean + std·ε`` every step from the cached moments
(``DiffusionBranch.forward(cond, vae_moments=...)``), which is the original's semantics. Sampled
latents are never cached (that would freeze the posterior noise).

File: ``<cache_dir>/vae_moments_<key>.safetensors`` holding one fp32 tensor ``moments``
``[M, 2C, h, w]`` (rows in sorted, de-duplicated path order) and, in the safetensors metadata, the
full key, the path list (JSON) and a format version. The key is a SHA-256 over

* the sorted list of ``(path, size in bytes, sha1 of the file bytes)``,
* the VAE ``encoder.*`` and ``quant_conv.*`` tensors (name, dtype, shape and raw bytes, in key order),
* ``repr(transform)`` (must be stable across runs: no ``<... at 0x...>`` addresses),

so any changed image, VAE weight or VAE-view transform gives a new key and a rebuild. Files of other
keys in ``cache_dir`` are left alone (they may belong to another dataset or config sharing the
folder); delete them by hand when no longer needed. A file with the right name whose content does not
verify (unreadable, wrong key, wrong paths, wrong shape/dtype, non-finite values) is rebuilt with a
WARNING naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from dcac_plugin.data.reader import read_image

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"
_TENSOR_NAME = "moments"
_FILE_PREFIX = "vae_moments_"
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


class MissingVAEMomentError(KeyError):
    """A looked-up image path is not in the VAE moment cache."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class VAECacheError(RuntimeError):
    """The VAE moment cache cannot be built (bad transform output, unstable transform repr, ...)."""


def _file_sha1(path: str, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size in bytes, sha1 hex) of a file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"image file not found while keying the VAE moment cache: {path!r}. Fix: restore the file, or "
            "remove it from the dataset"
        )
    h = hashlib.sha1()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            size += len(b)
            h.update(b)
    return size, h.hexdigest()


def vae_encoder_digest(vae: nn.Module) -> str:
    """SHA-256 of the VAE ``encoder.*`` and ``quant_conv.*`` tensors (name, dtype, shape, bytes).

    Args:
        vae: diffusers ``AutoencoderKL`` (or any module with ``encoder``/``quant_conv`` submodules).

    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    h.update(type(vae).__name__.encode())
    n = 0
    for name, t in vae.state_dict().items():
        if not (name.startswith("encoder.") or name.startswith("quant_conv.")):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        n += 1
    if n == 0:
        raise VAECacheError(
            f"{type(vae).__name__} has no 'encoder.*' / 'quant_conv.*' tensors to key the VAE moment cache "
            "on; pass a DiffusionBranch whose .vae is a diffusers AutoencoderKL"
        )
    return h.hexdigest()


def _transform_repr(transform: Callable) -> str:
    r = repr(transform)
    if _ADDRESS_RE.search(r):
        raise VAECacheError(
            f"repr of the VAE-view transform contains a memory address ({r!r}), so the cache key would "
            "change every run. Fix: use a transform with a stable __repr__ (e.g. dcac_plugin.data.transforms."
            "vae_transform, or a class defining __repr__)"
        )
    return r


def cache_key(paths: Sequence[str], vae: nn.Module, transform: Callable) -> str:
    """SHA-256 key of the cache for ``paths`` (sorted, unique), ``vae`` and ``transform``."""
    h = hashlib.sha256()
    h.update(f"dcac-vae-moments-v{FORMAT_VERSION}\n".encode())
    for p in paths:
        size, sha1 = _file_sha1(p)
        h.update(json.dumps([p, size, sha1]).encode() + b"\n")
    h.update(b"vae:" + vae_encoder_digest(vae).encode() + b"\n")
    h.update(b"transform:" + _transform_repr(transform).encode() + b"\n")
    return h.hexdigest()


@contextmanager
def _vae_for_encoding(vae: nn.Module, device: torch.device) -> Iterator[None]:
    """Put the VAE in eval mode, fp32, on ``device``; restore mode/device/dtype afterwards."""
    params = list(vae.parameters()) + list(vae.buffers())
    old_device = params[0].device if params else device
    old_dtype = params[0].dtype if params else torch.float32
    was_training = vae.training
    moved = old_device != device or old_dtype != torch.float32
    if moved:
        vae.to(device=device, dtype=torch.float32)
    vae.eval()
    try:
        yield
    finally:
        vae.train(was_training)
        if moved:
            vae.to(device=old_device, dtype=old_dtype)


class _ImageList(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.transform(read_image(self.paths[i]))
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[0] != 3:
            raise VAECacheError(
                f"VAE-view transform must return a [3, S, S] tensor; got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__} for {self.paths[i]!r}"
            )
        return x


class VAEMomentCache:
    """Posterior moments of the frozen VAE for a fixed image list, read from / written to disk.

    Attributes:
        key: the cache key (64 hex chars, see module docstring).
        path: the safetensors file it was read from or written to.
        moments: [M, 2C, h, w] fp32 (CPU), rows in :attr:`paths` order.
        paths: sorted unique image paths.
    """

    def __init__(
        self, moments: torch.Tensor, paths: Sequence[str], key: str, path: Path, channels_last: bool = False
    ) -> None:
        if moments.dim() != 4 or moments.shape[0] != len(paths):
            raise ValueError(f"moments {tuple(moments.shape)} do not match {len(paths)} paths")
        self.moments = moments.contiguous()
        self.channels_last = bool(channels_last)
        self.paths = list(paths)
        self.key = key
        self.path = Path(path)
        self._index = {p: i for i, p in enumerate(self.paths)}

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.fspath(path) in self._index

    def lookup(self, paths: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Moments of ``paths``, in the order given.

        Args:
            paths: image paths (the same strings the cache was built with).
            device: target device; ``None`` keeps them on the CPU.

        Returns:
            [B, 2C, h, w] float32, in the memory layout ``encode_moments`` produced at build time
            (channels-last for diffusers' AutoencoderKL), so that ``DiffusionBranch.sample_latents``
            (``randn_like`` follows the layout) draws exactly what the on-line path draws.

        Raises:
            MissingVAEMomentError: (a ``KeyError``) a path is not in the cache; the message names it.
        """
        idx = []
        for p in paths:
            i = self._index.get(os.fspath(p))
            if i is None:
                raise MissingVAEMomentError(
                    f"image {os.fspath(p)!r} is not in the VAE moment cache {str(self.path)!r} "
                    f"({len(self)} images). Fix: build the cache over every training image path (the same "
                    "strings the data loader yields as 'impath')"
                )
            idx.append(i)
        out = self.moments.index_select(0, torch.as_tensor(idx, dtype=torch.long))
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        if device is not None:
            out = out.to(device, non_blocking=True)
        return out

    # ------------------------------------------------------------------ build / load
    @classmethod
    def build_or_load(
        cls,
        image_paths: Sequence[str],
        diffusion: nn.Module,
        transform: Callable,
        cache_dir: str | os.PathLike,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
    ) -> VAEMomentCache:
        """Load the cache for these images / VAE / transform, or compute and save it.

        Args:
            image_paths: image files (duplicates allowed; stored once, sorted).
            diffusion: a ``DiffusionBranch`` (uses ``.vae`` for the key and ``.encode_moments``).
            transform: PIL image → [3, S, S] tensor in [-1, 1] (``vae_transform(S)``).
            cache_dir: folder of the cache files (created if needed).
            batch_size: images per VAE forward while building.
            device: device the VAE runs on while building (it is moved there and back if needed).
            num_workers: DataLoader workers decoding images while building.

        Returns:
            The cache (moments on the CPU).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        paths = sorted(dict.fromkeys(os.fspath(p) for p in image_paths))
        if not paths:
            raise ValueError("VAE moment cache needs at least one image path, got none")
        t0 = time.perf_counter()
        key = cache_key(paths, diffusion.vae, transform)
        cache_dir = Path(cache_dir).expanduser()
        file = cache_dir / f"{_FILE_PREFIX}{key}.safetensors"
        expect_c = 2 * int(getattr(diffusion, "latent_channels", 4))
        if file.exists():
            cache = cls._try_load(file, key, paths, expect_c)
            if cache is not None:
                logger.info(
                    "VAE moment cache loaded: %d images, %.1f MB, %s (%.1f s)",
                    len(cache), file.stat().st_size / 2**20, file, time.perf_counter() - t0,
                )
                return cache
        moments, channels_last = cls._compute(
            paths, diffusion, transform, batch_size, torch.device(device), num_workers
        )
        cls._save(file, moments, paths, key, channels_last)
        logger.info(
            "VAE moment cache built: %d images, %s per image, %.1f MB on disk, %s (%.1f s)",
            len(paths), tuple(moments.shape[1:]), file.stat().st_size / 2**20, file, time.perf_counter() - t0,
        )
        return cls(moments, paths, key, file, channels_last)

    @classmethod
    def _try_load(cls, file: Path, key: str, paths: list[str], expect_c: int) -> VAEMomentCache | None:
        """Read and verify ``file``; ``None`` (after a WARNING naming it) if it does not verify."""
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                meta: dict[str, Any] = f.metadata() or {}
                problem = None
                if meta.get("format_version") != FORMAT_VERSION:
                    problem = f"format version {meta.get('format_version')!r} != {FORMAT_VERSION!r}"
                elif meta.get("key") != key:
                    problem = "stored key differs from the file name's key"
                elif json.loads(meta.get("paths", "null")) != paths:
                    problem = "stored image path list differs"
                elif meta.get("layout") not in ("contiguous", "channels_last"):
                    problem = f"unknown layout {meta.get('layout')!r}"
                elif list(f.keys()) != [_TENSOR_NAME]:
                    problem = f"tensors {list(f.keys())} != ['{_TENSOR_NAME}']"
                if problem is None:
                    moments = f.get_tensor(_TENSOR_NAME)
                    if moments.dtype != torch.float32 or moments.dim() != 4:
                        problem = f"moments are {moments.dtype} {tuple(moments.shape)}, expected fp32 4-D"
                    elif moments.shape[0] != len(paths) or moments.shape[1] != expect_c:
                        problem = f"moments shape {tuple(moments.shape)} != [{len(paths)}, {expect_c}, h, w]"
                    elif not bool(torch.isfinite(moments).all()):
                        problem = "moments contain NaN/Inf"
        except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt, loudly
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem is not None:
            logger.warning("VAE moment cache file %s is invalid (%s); rebuilding it", file, problem)
            return None
        return cls(moments, paths, key, file, meta["layout"] == "channels_last")

    @staticmethod
    @torch.no_grad()
    def _compute(
        paths: list[str],
        diffusion: nn.Module,
        transform: Callable,
        batch_size: int,
        device: torch.device,
        num_workers: int,
    ) -> tuple[torch.Tensor, bool]:
        """Moments of all ``paths`` (fp32, VAE in eval mode, no autocast).

        Returns:
            ([M, 2C, h, w] contiguous on the CPU, whether the encoder's output was channels-last).
        """
        loader = torch.utils.data.DataLoader(
            _ImageList(paths, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
        )
        chunks: list[torch.Tensor] = []
        channels_last = False
        bar = tqdm(
            total=len(paths),
            desc="VAE moments",
            unit="img",
            disable=logger.getEffectiveLevel() > logging.INFO,
        )
        with _vae_for_encoding(diffusion.vae, device), torch.autocast(device.type, enabled=False):
            for x in loader:
                m = diffusion.encode_moments(x.to(device=device, dtype=torch.float32))
                if not chunks:
                    cl = torch.channels_last
                    channels_last = not m.is_contiguous() and m.is_contiguous(memory_format=cl)
                chunks.append(m.float().cpu().contiguous())
                bar.update(x.shape[0])
        bar.close()
        moments = torch.cat(chunks).contiguous()
        if not bool(torch.isfinite(moments).all()):
            raise VAECacheError(
                "VAE posterior moments contain NaN/Inf; check the VAE weights and the transform"
            )
        return moments, channels_last

    @staticmethod
    def _save(file: Path, moments: torch.Tensor, paths: list[str], key: str, channels_last: bool) -> None:
        """Atomic safetensors write (temp file in the same folder, then ``os.replace``)."""
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
        os.close(fd)
        try:
            save_file(
                {_TENSOR_NAME: moments},
                tmp,
                metadata={
                    "format_version": FORMAT_VERSION,
                    "key": key,
                    "paths": json.dumps(paths),
                    "layout": "channels_last" if channels_last else "contiguous",
                },
            )
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, file)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
