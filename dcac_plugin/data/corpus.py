"""A captioned image corpus for pretraining the tiny CLIP and Stable-Diffusion priors.

Drawn by the synthetic benchmark's renderer (:mod:`dcac_plugin.data.synthetic`) but as a fifth,
separate domain that the benchmark never contains: its own style (palette, background texture
``dots``, 12 cameras, colour mixing, contrast, noise), its own seed stream (salt
:data:`CORPUS_SALT`, not used by any benchmark domain) and so its own identities, cameras and
backgrounds. Every image carries a caption written from the generator's own attributes of its
identity, e.g. ``"a person in a red striped long-sleeved top and blue trousers, with a hat and a
backpack"``.

The corpus lives in memory / one ``.npz`` file: ``images`` [N, 128, 64, 3] uint8 (the re-ID view
size), ``vae_images`` [N, S, S, 3] uint8 (the diffusion view: the image squashed to S x S with
bicubic resampling, as :func:`dcac_plugin.data.transforms.vae_transform` makes it), ``identity``
[N] and ``captions`` [N]. Identities ``0 .. train_ids-1`` are for training, the next
``heldout_ids`` only for the sanity figures.
"""

from __future__ import annotations

import colorsys
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dcac_plugin.data.synthetic import STYLES, DomainStyle, _camera, _domain_mix, _identity, _render, _rng

logger = logging.getLogger(__name__)

CORPUS_VERSION = "1"
#: Seed-stream salt of the corpus domain; the benchmark domains use 11, 23, 37 and 53.
CORPUS_SALT = 71
CORPUS_STYLE = DomainStyle(CORPUS_SALT, "pretrain-corpus", 12, ".png", (0.25, 0.95), (0.2, 0.95), 0.3,
                           (0.58, 0.55, 0.66), (0.40, 0.44, 0.38), "dots", 0.12, 1.05, 0.03, 0.45,
                           0.82, 1.04, 0.06, 0)
assert CORPUS_SALT not in {s.salt for s in STYLES.values()}

_HUES = ((0.04, "red"), (0.10, "orange"), (0.18, "yellow"), (0.45, "green"), (0.53, "teal"), (0.72, "blue"),
         (0.82, "purple"), (0.95, "pink"), (1.01, "red"))
_PATTERNS = ("plain", "striped", "vertically striped", "two-tone", "logo")
_BOTTOMS = ("trousers", "shorts", "skirt")


def colour_name(rgb: np.ndarray) -> str:
    """Plain English name of an RGB colour in [0, 1] (hue bins; black/grey/white when unsaturated)."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in np.clip(rgb, 0, 1)))
    if s < 0.2 or v < 0.22:
        return "black" if v < 0.3 else ("grey" if v < 0.75 else "white")
    if 0.03 < h < 0.12 and v < 0.55:
        return "brown"
    return next(name for bound, name in _HUES if h < bound)


def caption(ident: dict[str, Any]) -> str:
    """Caption of one identity from its generator attributes (top, bottom, hat, bag)."""
    top = colour_name(ident["top"])
    pat = _PATTERNS[ident["pattern"]]
    sleeves = "long-sleeved" if ident["long_sleeves"] else "short-sleeved"
    if pat == "plain":
        top_desc = f"{top} {sleeves} top"
    elif pat == "two-tone":
        top_desc = f"{top} and {colour_name(ident['top2'])} {sleeves} top"
    elif pat == "logo":
        top_desc = f"{top} {sleeves} top with a {colour_name(ident['top2'])} logo"
    else:
        top_desc = f"{top} {pat} {sleeves} top"
    text = f"a person in a {top_desc} and {colour_name(ident['bottom'])} {_BOTTOMS[ident['bottom_type']]}"
    extras = []
    if ident["hat"] is not None:
        extras.append(f"a {colour_name(ident['hat'])} hat")
    if ident["bag"] == 1:
        extras.append(f"a {colour_name(ident['bag_colour'])} backpack")
    elif ident["bag"] == 2:
        extras.append(f"a {colour_name(ident['bag_colour'])} handbag")
    if extras:
        text += ", with " + " and ".join(extras)
    return text


@dataclass(frozen=True)
class CorpusSpec:
    """Size and seed of a corpus."""

    seed: int = 7
    train_ids: int = 1800
    heldout_ids: int = 125
    imgs_per_id: int = 8
    vae_size: int = 64

    @property
    def num_ids(self) -> int:
        return self.train_ids + self.heldout_ids


class CorpusDomain:
    """The corpus domain's cameras, colour mix and identities (deterministic in ``seed``)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.st = CORPUS_STYLE
        self.cams = [_camera(_rng(self.seed, CORPUS_SALT, 0, c), self.st) for c in range(1, self.st.n_cams + 1)]
        self.mix = _domain_mix(_rng(self.seed, CORPUS_SALT, 1), self.st)

    def ident(self, index: int) -> dict[str, Any]:
        """Appearance attributes of identity ``index``."""
        return _identity(_rng(self.seed, CORPUS_SALT, 2, index), self.st)

    def image(self, index: int, k: int) -> Image.Image:
        """Image ``k`` of identity ``index`` (camera drawn per image)."""
        rng = _rng(self.seed, CORPUS_SALT, 4, index, k)
        cam = self.cams[int(rng.integers(self.st.n_cams))]
        return _render(self.ident(index), cam, self.st, self.mix, rng)


def make_corpus(spec: CorpusSpec = CorpusSpec()) -> dict[str, np.ndarray]:
    """Render the corpus in memory.

    Returns:
        ``images`` [N, 128, 64, 3] uint8, ``vae_images`` [N, S, S, 3] uint8, ``identity`` [N] int32,
        ``captions`` [N] str, with N = ``num_ids * imgs_per_id``; identity-major order.
    """
    dom = CorpusDomain(spec.seed)
    n = spec.num_ids * spec.imgs_per_id
    images = np.empty((n, 128, 64, 3), np.uint8)
    vae = np.empty((n, spec.vae_size, spec.vae_size, 3), np.uint8)
    ids = np.repeat(np.arange(spec.num_ids, dtype=np.int32), spec.imgs_per_id)
    caps = []
    t0 = time.perf_counter()
    j = 0
    for i in range(spec.num_ids):
        text = caption(dom.ident(i))
        for k in range(spec.imgs_per_id):
            img = dom.image(i, k)
            images[j] = np.asarray(img)
            vae[j] = np.asarray(img.resize((spec.vae_size, spec.vae_size), Image.BICUBIC))
            caps.append(text)
            j += 1
        if (i + 1) % 500 == 0:
            logger.info("corpus: %d/%d identities (%.0f s)", i + 1, spec.num_ids, time.perf_counter() - t0)
    return {"images": images, "vae_images": vae, "identity": ids, "captions": np.array(caps)}


def load_or_make_corpus(path: str | os.PathLike, spec: CorpusSpec = CorpusSpec()) -> dict[str, np.ndarray]:
    """Read the corpus from ``path`` (``.npz``) when it was written with ``spec``; else render and write it."""
    p = Path(path)
    key = np.array([CORPUS_VERSION, str(spec)])
    if p.is_file():
        with np.load(p, allow_pickle=False) as z:
            if list(z["spec"]) == list(key):
                logger.info("corpus: reading %s", p)
                return {k: z[k] for k in ("images", "vae_images", "identity", "captions")}
        logger.info("corpus: %s was written with another spec; rendering again", p)
    data = make_corpus(spec)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp.npz")
    np.savez(tmp, spec=key, **data)
    os.replace(tmp, p)
    return data
