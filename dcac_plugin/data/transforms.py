"""Image transforms of the paper (docs/METHOD.md §7.5, §6.2, §4.3): the re-ID views and the VAE view."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torchvision.transforms as T
from PIL import Image

_INTERP = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def interpolation(name: str) -> T.InterpolationMode:
    """Map ``'bicubic'|'bilinear'`` to torchvision's enum, with a clear error otherwise."""
    try:
        return _INTERP[name]
    except KeyError:
        raise ValueError(f"unknown interpolation '{name}'; use one of {sorted(_INTERP)}") from None


class RandomErasing:
    """Random erasing on a normalised tensor (CLIP-ReID / DCAC variant).

    Erases one rectangle with probability ``p``: area fraction in ``[sl, sh]``, aspect ratio in
    ``[r1, 1/r1]``, up to ``attempts`` tries, filled with ``fill`` per channel (0.5 in the
    normalised space in the paper's code).

    Args:
        img: ``[C, H, W]`` tensor. Returns the same tensor, modified in place.
    """

    def __init__(self, p: float = 0.5, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                 fill: Sequence[float] = (0.5, 0.5, 0.5), attempts: int = 100) -> None:
        self.p, self.sl, self.sh, self.r1, self.fill, self.attempts = p, sl, sh, r1, tuple(fill), attempts

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if random.uniform(0, 1) >= self.p:
            return img
        _, h, w = img.shape
        area = h * w
        for _ in range(self.attempts):
            target = random.uniform(self.sl, self.sh) * area
            aspect = random.uniform(self.r1, 1 / self.r1)
            eh = int(round(math.sqrt(target * aspect)))
            ew = int(round(math.sqrt(target / aspect)))
            if ew < w and eh < h:
                x1 = random.randint(0, h - eh)
                y1 = random.randint(0, w - ew)
                for c in range(img.shape[0]):
                    img[c, x1:x1 + eh, y1:y1 + ew] = self.fill[c % len(self.fill)]
                return img
        return img


def reid_train_transform(height: int, width: int, mean: Sequence[float], std: Sequence[float],
                         flip_prob: float = 0.5, padding: int = 10, re_prob: float = 0.5) -> T.Compose:
    """Re-ID training view: bicubic resize, flip, pad+random crop, normalise, random erasing."""
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=flip_prob),
        T.Pad(padding),
        T.RandomCrop((height, width)),
        T.ToTensor(),
        T.Normalize(mean=mean, std=std),
        RandomErasing(p=re_prob, fill=mean),
    ])


def reid_test_transform(height: int, width: int, mean: Sequence[float], std: Sequence[float],
                        interp: str = "bicubic") -> T.Compose:
    """Test view: resize (bicubic by default), normalise."""
    return T.Compose([
        T.Resize((height, width), interpolation=interpolation(interp)),
        T.ToTensor(),
        T.Normalize(mean=mean, std=std),
    ])


def memory_transform(height: int, width: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Prototype-memory view: bicubic resize, normalise.

    The original's memory pass (its cluster loader, ``interpolation=3``) resizes bicubic in every
    protocol, also where its single-source test loader is bilinear (``data.test_interpolation``).
    """
    return reid_test_transform(height, width, mean, std, "bicubic")


def vae_transform(size: int = 128) -> T.Compose:
    """Diffusion view: the raw image squashed to ``size x size`` (bicubic), in [-1, 1]; no augmentation."""
    return T.Compose([
        T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ])


class PairedViews:
    """Return ``(reid_view, vae_view)`` of one PIL image; torchreid's collate batches both.

    A batch's ``data['img']`` is then ``[x [B,3,H,W], x_vae [B,3,S,S]]``.
    """

    def __init__(self, reid: T.Compose, vae: T.Compose) -> None:
        self.reid, self.vae = reid, vae

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reid(img), self.vae(img)

    def __repr__(self) -> str:
        return f"PairedViews(reid={self.reid!r}, vae={self.vae!r})"
