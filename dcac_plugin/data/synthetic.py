"""A synthetic multi-domain re-ID benchmark written in the real datasets' on-disk layouts.

Four domains mimic Market-1501, DukeMTMC-reID, MSMT17 and CUHK03-NP: same folders, file-name
conventions, list files and camera counts, so torchreid's own dataset classes (and the plugin's
``cuhk03_np`` / ``msmt17_trainval``) read them unchanged. Images are 128x64 (H x W) person-like
crops drawn with numpy:

* **identity** = appearance: skin, hair, top colour and pattern (plain, stripes, two-tone,
  logo), bottom colour and type (trousers, shorts, skirt), shoes, optional hat and bag, build;
* **per image**: pose (lean, stride, arm swing), horizontal flip, position/scale jitter,
  occluders, pixel noise;
* **per camera**: illumination, colour cast, gamma, blur, background plate, framing;
* **per domain**: identity palette (saturation / brightness / share of dark clothes), colour
  mixing, contrast, background texture, noise, person aspect, JPEG quality; MSMT17 adds the
  time of day (morning / noon / afternoon) to the illumination.

Identities are disjoint between train and test within a domain, and the four domains draw
appearance from disjoint seeds. Generation is deterministic: every image comes from its own
``numpy.random.default_rng([seed, domain, ...])`` stream, so the same seed gives byte-identical
files. ``<root>/SYNTHETIC.json`` marks a generated root (and caches it).
"""

from __future__ import annotations

import colorsys
import contextlib
import json
import logging
import os
import os.path as osp
import shutil
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from dcac_plugin.utils.files import write_error
from dcac_plugin.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
MARKER = "SYNTHETIC.json"
PARTIAL_MARKER = "SYNTHETIC.partial.json"
IMG_H, IMG_W = 128, 64
DEFAULT_DOMAINS = ("market1501", "dukemtmcreid", "msmt17", "cuhk03_np")


class SyntheticRootError(FileExistsError):
    """The output root holds dataset folders that were not written by this generator."""


@dataclass(frozen=True)
class Scale:
    """Sizes of one domain."""

    train_ids: int
    imgs_per_train_id: int
    test_ids: int
    gallery_per_id: int
    max_query_per_id: int
    market_junk: int
    market_distractors: int
    duke_distractor_ids: int


SCALES: dict[str, Scale] = {
    "tiny": Scale(10, 6, 8, 4, 2, 3, 4, 2),
    "small": Scale(150, 8, 100, 6, 2, 20, 40, 15),
}


@dataclass(frozen=True)
class DomainStyle:
    """Hand-set look of one domain."""

    salt: int
    folder: str
    n_cams: int
    ext: str
    sat: tuple[float, float]
    val: tuple[float, float]
    p_dark: float
    bg_top: tuple[float, float, float]
    bg_bottom: tuple[float, float, float]
    texture: str
    mix: float
    contrast: float
    noise: float
    blur: float
    person_scale: float
    aspect: float
    pos_jitter: float
    quality: int


STYLES: dict[str, DomainStyle] = {
    "market1501": DomainStyle(11, "market1501", 6, ".jpg", (0.35, 0.9), (0.35, 0.95), 0.25,
                              (0.62, 0.66, 0.60), (0.50, 0.48, 0.44), "tiles", 0.10, 1.0, 0.035, 0.5,
                              0.86, 1.0, 0.05, 80),
    "dukemtmcreid": DomainStyle(23, "dukemtmc-reid", 8, ".jpg", (0.2, 0.6), (0.15, 0.7), 0.5,
                                (0.45, 0.50, 0.55), (0.30, 0.30, 0.30), "vstripes", 0.18, 1.15, 0.025, 0.3,
                                0.80, 1.12, 0.07, 90),
    "msmt17": DomainStyle(37, "msmt17", 15, ".jpg", (0.3, 0.8), (0.25, 0.85), 0.35,
                          (0.70, 0.68, 0.62), (0.42, 0.40, 0.36), "lines", 0.14, 0.9, 0.045, 0.7,
                          0.74, 0.92, 0.09, 75),
    "cuhk03_np": DomainStyle(53, "cuhk03-np", 2, ".png", (0.4, 1.0), (0.4, 1.0), 0.2,
                             (0.55, 0.60, 0.65), (0.62, 0.60, 0.58), "diag", 0.22, 1.1, 0.02, 0.2,
                             0.92, 1.05, 0.04, 0),
}
MSMT_TIMES = {"morning": (0.95, (1.0, 1.0, 1.08)), "noon": (1.18, (1.03, 1.02, 0.98)),
              "afternoon": (0.72, (1.12, 1.0, 0.86))}

_YY, _XX = np.mgrid[0:IMG_H, 0:IMG_W].astype(np.float32)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _colour(rng: np.random.Generator, st: DomainStyle) -> np.ndarray:
    if rng.random() < st.p_dark:  # black / grey / white clothes
        g = rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.35, 0.6), rng.uniform(0.8, 0.95)])
        return np.full(3, g, np.float32) + rng.uniform(-0.03, 0.03, 3).astype(np.float32)
    return _hsv(rng.random(), rng.uniform(*st.sat), rng.uniform(*st.val))


def _identity(rng: np.random.Generator, st: DomainStyle) -> dict[str, Any]:
    """Appearance attributes of one person (drawn once per identity)."""
    skin = _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    return {
        "skin": skin,
        "hair": _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.05, 0.5)),
        "hairline": rng.uniform(0.055, 0.09),
        "top": _colour(rng, st),
        "top2": _colour(rng, st),
        "pattern": int(rng.choice(5, p=[0.4, 0.18, 0.12, 0.15, 0.15])),
        "period": rng.uniform(0.025, 0.06),
        "top_len": rng.uniform(0.3, 0.45),
        "long_sleeves": bool(rng.random() < 0.6),
        "bottom": _colour(rng, st),
        "bottom_type": int(rng.choice(3, p=[0.65, 0.2, 0.15])),
        "shoes": _colour(rng, st) * 0.6,
        "hat": _colour(rng, st) if rng.random() < 0.2 else None,
        "bag": int(rng.choice(3, p=[0.5, 0.3, 0.2])),
        "bag_colour": _colour(rng, st),
        "bag_side": 1.0 if rng.random() < 0.5 else -1.0,
        "build": rng.uniform(0.85, 1.2),
        "height": rng.uniform(0.92, 1.05),
    }


def _camera(rng: np.random.Generator, st: DomainStyle) -> dict[str, Any]:
    """Per-camera shift: illumination, colour cast, gamma, blur, framing, background plate."""
    ph, pw = IMG_H + 24, IMG_W + 24
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    top = np.clip(np.array(st.bg_top) + rng.normal(0, 0.08, 3), 0, 1).astype(np.float32)
    bottom = np.clip(np.array(st.bg_bottom) + rng.normal(0, 0.08, 3), 0, 1).astype(np.float32)
    horizon = rng.uniform(0.3, 0.7)
    t = np.clip((yy / ph - horizon) * 4 + 0.5, 0, 1)[..., None]
    plate = top * (1 - t) + bottom * t
    low = np.asarray(Image.fromarray((rng.random((5, 3, 3)) * 255).astype(np.uint8)).resize(
        (pw, ph), Image.BILINEAR), np.float32) / 255.0
    plate = plate + 0.25 * (low - 0.5)
    period = rng.uniform(6, 14)
    if st.texture == "tiles":
        tex = ((np.floor(yy / period) + np.floor(xx / period)) % 2) - 0.5
    elif st.texture == "vstripes":
        tex = np.sin(xx / period * np.pi + rng.uniform(0, 6)) * (yy < horizon * ph + 10)
    elif st.texture == "lines":
        tex = ((yy % period) < 1.5).astype(np.float32) - 0.2
    elif st.texture == "dots":  # the pretraining corpus's own background (dcac_plugin.data.corpus)
        tex = (((yy % period) - period / 2) ** 2 + ((xx % period) - period / 2) ** 2 < (period / 4) ** 2) - 0.3
    else:  # diagonal
        tex = np.sin((xx + yy) / period * np.pi)
    plate = np.clip(plate + rng.uniform(0.05, 0.12) * tex[..., None], 0, 1).astype(np.float32)
    return {
        "gain": rng.uniform(0.7, 1.25),
        "cast": rng.uniform(0.82, 1.18, 3).astype(np.float32),
        "gamma": rng.uniform(0.8, 1.25),
        "blur": max(0.0, st.blur + rng.uniform(-0.3, 0.6)),
        "scale": rng.uniform(0.92, 1.06),
        "dx": rng.uniform(-0.04, 0.04) * IMG_W,
        "light": rng.uniform(-0.25, 0.25),
        "plate": plate,
    }


def _domain_mix(rng: np.random.Generator, st: DomainStyle) -> np.ndarray:
    m = rng.random((3, 3)).astype(np.float32)
    m /= m.sum(1, keepdims=True)
    return (np.eye(3, dtype=np.float32) * (1 - st.mix) + st.mix * m).T


def _render(ident: dict[str, Any], cam: dict[str, Any], st: DomainStyle, mix: np.ndarray,
            rng: np.random.Generator, crop_rng: np.random.Generator | None = None,
            crop_jitter: float = 0.0, tod: str | None = None) -> Image.Image:
    """Draw one 128x64 RGB crop of ``ident`` seen by ``cam``.

    The steps draw from ``rng`` in a fixed order (pose, background, body parts front to back,
    occluder, photometry); changing that order changes every generated file.
    """
    pose = _pose(ident, cam, st, rng, crop_rng, crop_jitter)
    canvas = _Canvas(_background(cam, rng), pose, cam, rng)
    _paint_backpack(canvas, ident)
    _paint_legs(canvas, ident)
    _paint_arms(canvas, ident)
    _paint_torso(canvas, ident)
    _paint_head(canvas, ident)
    _occlude(canvas.img, rng)
    return _photometry(canvas.img, cam, st, mix, rng, crop_jitter, tod)


@dataclass(frozen=True)
class _Pose:
    """Body coordinates of every pixel: ``u`` across (0 = body axis, mirrored when flipped), ``v`` down
    (0 = top of the head, 1 = the feet); ``flip`` -1/+1; ``stride`` leg spread."""

    u: np.ndarray
    v: np.ndarray
    flip: float
    stride: float


def _pose(ident: dict[str, Any], cam: dict[str, Any], st: DomainStyle, rng: np.random.Generator,
          crop_rng: np.random.Generator | None, crop_jitter: float) -> _Pose:
    """Placement, size and pose of the person (with detector misalignment when ``crop_jitter`` > 0)."""
    hb = IMG_H * st.person_scale * cam["scale"] * ident["height"] * rng.uniform(0.93, 1.05)
    cx = IMG_W / 2 + cam["dx"] + rng.normal(0, st.pos_jitter * IMG_W)
    y0 = (IMG_H - hb) / 2 + rng.normal(0, st.pos_jitter * IMG_H * 0.4)
    if crop_rng is not None and crop_jitter > 0:  # detector misalignment (CUHK03 detected)
        hb *= 1 + crop_rng.uniform(-crop_jitter, crop_jitter)
        cx += crop_rng.uniform(-crop_jitter, crop_jitter) * IMG_W
        y0 += crop_rng.uniform(-crop_jitter, crop_jitter) * IMG_H * 0.5
    flip = -1.0 if rng.random() < 0.5 else 1.0
    lean = rng.normal(0, 0.04)
    stride = rng.uniform(-0.08, 0.08)
    v = (_YY - y0) / hb
    u = flip * ((_XX - cx) / (hb * st.aspect) - lean * (v - 0.5))
    return _Pose(u, v, flip, stride)


def _background(cam: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """A random window of the camera's background plate with a small colour offset: [H, W, 3] float."""
    ox, oy = rng.integers(0, 25, 2)
    img = cam["plate"][oy:oy + IMG_H, ox:ox + IMG_W].copy()
    img += rng.normal(0, 0.03, 3).astype(np.float32)
    return img


class _Canvas:
    """The image being drawn, the person's pose and the side-light shading of its body."""

    def __init__(self, img: np.ndarray, pose: _Pose, cam: dict[str, Any], rng: np.random.Generator) -> None:
        self.img, self.rng = img, rng
        self.u, self.v, self.au = pose.u, pose.v, np.abs(pose.u)
        self.flip, self.stride = pose.flip, pose.stride
        u = pose.u
        self.shade = ((1 - 1.8 * np.minimum(u * u, 0.04)) * (1 + cam["light"] * 3 * u))[..., None]

    def paint(self, mask: np.ndarray, colour: np.ndarray) -> None:
        """Fill ``mask`` with ``colour`` (plus a small random tint), shaded."""
        c = colour + self.rng.normal(0, 0.025, 3).astype(np.float32)
        self.img[mask] = self.shade[mask] * c


def _hip(ident: dict[str, Any]) -> float:
    return 0.15 + ident["top_len"]


def _paint_backpack(cv: _Canvas, ident: dict[str, Any]) -> None:
    """A backpack, behind the body (painted first)."""
    u, v, b = cv.u, cv.v, ident["build"]
    side = ident["bag_side"] * u
    if ident["bag"] == 1:
        cv.paint((side > 0.06 * b) & (side < 0.17 * b) & (v > 0.17) & (v < 0.45), ident["bag_colour"])


def _paint_legs(cv: _Canvas, ident: dict[str, Any]) -> None:
    """Legs (trousers, shorts or bare below a skirt), shoes, and the skirt."""
    u, v, b = cv.u, cv.v, ident["build"]
    leg_top = min(_hip(ident), 0.52)
    for sgn in (-1.0, 1.0):
        lc = sgn * 0.045 * b + sgn * cv.stride * np.clip(v - 0.5, 0, None)
        leg = (np.abs(u - lc) < 0.042 * b) & (v > leg_top) & (v < 0.965)
        low = 0.68 if ident["bottom_type"] == 1 else (0.74 if ident["bottom_type"] == 2 else 0.94)
        cv.paint(leg & (v < low), ident["bottom"])
        cv.paint(leg & (v >= low), ident["skin"])
        cv.paint((np.abs(u - lc) < 0.05 * b) & (v > 0.935) & (v < 0.99), ident["shoes"])
    if ident["bottom_type"] == 2:  # skirt
        w = 0.1 * b + 0.08 * np.clip(v - leg_top, 0, None)
        cv.paint((cv.au < w) & (v > leg_top) & (v < 0.74), ident["bottom"])


def _paint_arms(cv: _Canvas, ident: dict[str, Any]) -> None:
    """Both arms with a random swing each: sleeve, then skin."""
    u, v, b = cv.u, cv.v, ident["build"]
    for sgn in (-1.0, 1.0):
        swing = cv.rng.uniform(-0.04, 0.04)
        arm = (sgn * u > 0.105 * b) & (sgn * u < 0.15 * b) & (v > 0.17 + swing) & (v < 0.47 + swing)
        sleeve_end = 0.45 + swing if ident["long_sleeves"] else 0.27 + swing
        cv.paint(arm & (v < sleeve_end), ident["top"])
        cv.paint(arm & (v >= sleeve_end), ident["skin"])


def _paint_torso(cv: _Canvas, ident: dict[str, Any]) -> None:
    """The top with its pattern, then the backpack straps or the handbag."""
    u, v, au, b = cv.u, cv.v, cv.au, ident["build"]
    tv = (v - 0.15) / ident["top_len"]
    torso = (au < 0.115 * b * (1 - 0.12 * tv)) & (v > 0.15) & (v < _hip(ident))
    cv.paint(torso, ident["top"])
    pat, per = ident["pattern"], ident["period"]
    if pat == 1:
        cv.paint(torso & ((np.floor((v - 0.15) / per) % 2) == 1), ident["top2"])
    elif pat == 2:
        cv.paint(torso & ((np.floor((u + 1) / per) % 2) == 1), ident["top2"])
    elif pat == 3:
        cv.paint(torso & (tv > 0.55), ident["top2"])
    elif pat == 4:
        cv.paint(torso & (np.abs(u + 0.02) < 0.045) & (np.abs(tv - 0.35) < 0.15), ident["top2"])
    side = ident["bag_side"] * u
    if ident["bag"] == 1:  # straps
        strap = torso & (np.abs(u - ident["bag_side"] * 0.06 * b) < 0.012) & (tv < 0.7)
        cv.paint(strap, ident["bag_colour"] * 0.7)
    elif ident["bag"] == 2:
        cv.paint((side > 0.14 * b) & (side < 0.24 * b) & (v > 0.42) & (v < 0.56), ident["bag_colour"])


def _paint_head(cv: _Canvas, ident: dict[str, Any]) -> None:
    """Neck, head, hair (more of it seen from behind) and an optional hat."""
    u, v, au = cv.u, cv.v, cv.au
    cv.paint((au < 0.03) & (v > 0.12) & (v < 0.16), ident["skin"])
    head = ((u / 0.052) ** 2 + ((v - 0.08) / 0.068) ** 2) < 1
    cv.paint(head, ident["skin"])
    cv.paint(head & (v < ident["hairline"] + 0.02 * (cv.flip < 0)), ident["hair"])
    if ident["hat"] is not None:
        cv.paint(((au < 0.058) & (v > 0.005) & (v < 0.05)) | ((au < 0.08) & (v >= 0.04) & (v < 0.055)),
                 ident["hat"])


def _occlude(img: np.ndarray, rng: np.random.Generator) -> None:
    """With probability 0.2, a flat-coloured object in front of the person (mostly at the bottom)."""
    if rng.random() < 0.2:
        h = int(rng.uniform(0.15, 0.35) * IMG_H)
        w = int(rng.uniform(0.3, 1.0) * IMG_W)
        x = int(rng.integers(0, IMG_W - w + 1))
        y = IMG_H - h if rng.random() < 0.7 else int(rng.integers(0, IMG_H - h))
        img[y:y + h, x:x + w] = np.clip(rng.random(3) * 0.8 + 0.1, 0, 1).astype(np.float32)


def _photometry(img: np.ndarray, cam: dict[str, Any], st: DomainStyle, mix: np.ndarray, rng: np.random.Generator,
                crop_jitter: float, tod: str | None) -> Image.Image:
    """Camera gain, colour cast, time of day, gamma, domain colour mixing, contrast, noise and blur."""
    gain = cam["gain"] * rng.uniform(0.9, 1.1)
    cast = cam["cast"]
    if tod is not None:
        g, c = MSMT_TIMES[tod]
        gain, cast = gain * g, cast * np.asarray(c, np.float32)
    img = np.clip(img * gain * cast, 0, 1) ** cam["gamma"]
    img = img @ mix
    img = (img - 0.5) * st.contrast + 0.5
    img = img + rng.normal(0, st.noise, img.shape).astype(np.float32)
    out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    blur = cam["blur"] + (crop_jitter * 4 if crop_jitter else 0.0)
    if blur > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    return out


def _junk(cam: dict[str, Any], st: DomainStyle, mix: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Background-only or badly cropped detection (Market's ``-1_`` junk)."""
    ident = _identity(rng, st)
    img = _render(ident, cam, st, mix, rng)
    arr = np.asarray(img)
    k = int(rng.integers(IMG_H // 4, IMG_H // 2))
    arr = np.concatenate([arr[k:], np.asarray(cam["plate"][:k, :IMG_W] * 255, np.uint8)], axis=0)
    return Image.fromarray(arr)


def _save(img: Image.Image, path: str, st: DomainStyle) -> None:
    """Write one image; a failed write (full disk...) removes the partial file and raises ``WriteError``."""
    try:
        os.makedirs(osp.dirname(path), exist_ok=True)
        if st.ext == ".png":
            img.save(path, format="PNG", compress_level=1)
        else:
            img.save(path, format="JPEG", quality=st.quality)
    except OSError as exc:
        err = write_error(path, exc)
        if err is None:
            raise
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise err from None


class _Domain:
    """Shared state of one domain while it is generated."""

    def __init__(self, name: str, scale: Scale, seed: int) -> None:
        self.name, self.scale, self.seed = name, scale, seed
        self.st = STYLES[name]
        self.cams = [_camera(_rng(seed, self.st.salt, 0, c), self.st) for c in range(1, self.st.n_cams + 1)]
        self.mix = _domain_mix(_rng(seed, self.st.salt, 1), self.st)

    def ident(self, index: int) -> dict[str, Any]:
        """Appearance of identity ``index`` (train ids first, then test ids, then distractors)."""
        return _identity(_rng(self.seed, self.st.salt, 2, index), self.st)

    def id_cams(self, index: int, max_cams: int) -> list[int]:
        """1-based cameras identity ``index`` appears in (at least 2)."""
        rng = _rng(self.seed, self.st.salt, 3, index)
        n = int(rng.integers(2, min(self.st.n_cams, max_cams) + 1))
        return sorted(int(c) + 1 for c in rng.choice(self.st.n_cams, n, replace=False))

    def image(self, index: int, k: int, cam: int, **kw: Any) -> Image.Image:
        rng = _rng(self.seed, self.st.salt, 4, index, k)
        return _render(self.ident(index), self.cams[cam - 1], self.st, self.mix, rng, **kw)

    def plan(self) -> dict[str, list[tuple[int, int, int]]]:
        """``(identity index, image k, camera)`` per split; query/gallery share identity cams."""
        sc = self.scale
        train = []
        for i in range(sc.train_ids):
            cams = self.id_cams(i, 4)
            train += [(i, k, cams[k % len(cams)]) for k in range(sc.imgs_per_train_id)]
        query, gallery = [], []
        for j in range(sc.test_ids):
            i = sc.train_ids + j
            cams = self.id_cams(i, min(4, sc.gallery_per_id))
            rng = _rng(self.seed, self.st.salt, 5, i)
            nq = self.st.n_cams if self.name == "cuhk03_np" else int(rng.integers(1, sc.max_query_per_id + 1))
            query += [(i, k, cams[k]) for k in range(min(nq, len(cams)))]
            gallery += [(i, 100 + k, cams[k % len(cams)]) for k in range(sc.gallery_per_id)]
        return {"train": train, "query": query, "gallery": gallery}


def _write_market(d: _Domain, out: str) -> dict[str, int]:
    base = osp.join(out, "market1501", "Market-1501-v15.09.15")
    plan = d.plan()
    sc = d.scale
    rng = _rng(d.seed, d.st.salt, 6)
    n_ids = sc.train_ids + sc.test_ids
    pids = [int(p) for p in rng.choice(np.arange(1, 1502), n_ids, replace=False)]
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for split, items in plan.items():
        for i, k, cam in items:
            name = f"{pids[i]:04d}_c{cam}s{1 + k % 6}_{(k + 1) * 25 + i % 25:06d}_{k % 100:02d}.jpg"
            _save(d.image(i, k, cam), osp.join(base, folders[split], name), d.st)
    gal = osp.join(base, "bounding_box_test")
    for n in range(sc.market_junk):
        r = _rng(d.seed, d.st.salt, 7, n)
        cam = int(r.integers(1, 7))
        _save(_junk(d.cams[cam - 1], d.st, d.mix, r), osp.join(gal, f"-1_c{cam}s1_{n * 25:06d}_00.jpg"), d.st)
    for n in range(sc.market_distractors):
        r = _rng(d.seed, d.st.salt, 8, n)
        cam = int(r.integers(1, 7))
        img = _render(_identity(r, d.st), d.cams[cam - 1], d.st, d.mix, r, crop_rng=r, crop_jitter=0.25)
        _save(img, osp.join(gal, f"0000_c{cam}s1_{n * 25:06d}_01.jpg"), d.st)
    return _counts(plan, d.st.n_cams, junk=sc.market_junk, distractor_images=sc.market_distractors,
                   distractor_ids=1 if sc.market_distractors else 0)


def _write_duke(d: _Domain, out: str) -> dict[str, int]:
    base = osp.join(out, "dukemtmc-reid", "DukeMTMC-reID")
    plan = d.plan()
    sc = d.scale
    first = sc.train_ids + sc.test_ids
    for j in range(sc.duke_distractor_ids):  # gallery-only identities, as in the real gallery
        i = first + j
        cams = d.id_cams(i, 4)
        plan["gallery"] += [(i, 100 + k, cams[k % len(cams)]) for k in range(2)]
    rng = _rng(d.seed, d.st.salt, 6)
    pids = [int(p) for p in rng.choice(np.arange(1, 7141), first + sc.duke_distractor_ids, replace=False)]
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for split, items in plan.items():
        for i, k, cam in items:
            name = f"{pids[i]:04d}_c{cam}_f{(k + 1) * 1000 + i:07d}.jpg"
            _save(d.image(i, k, cam), osp.join(base, folders[split], name), d.st)
    c = _counts(plan, d.st.n_cams)
    c["distractor_ids"] = sc.duke_distractor_ids
    return c


def _write_msmt(d: _Domain, out: str) -> dict[str, int]:
    base = osp.join(out, "msmt17", "MSMT17_V1")
    plan = d.plan()
    sc = d.scale
    lines: dict[str, list[str]] = {"list_train.txt": [], "list_val.txt": [], "list_query.txt": [],
                                   "list_gallery.txt": []}
    times = list(MSMT_TIMES)
    for split, items in plan.items():
        folder = "train" if split == "train" else "test"
        for i, k, cam in items:
            pid = i if split == "train" else i - sc.train_ids  # MSMT numbers test ids from 0 again
            tod = times[int(_rng(d.seed, d.st.salt, 9, i, k).integers(3))]
            rel = f"{pid:04d}/{pid:04d}_{k:03d}_{cam:02d}_0303{tod}_{(k * 7 + 15) % 10000:04d}_{k % 2}.jpg"
            _save(d.image(i, k, cam, tod=tod), osp.join(base, folder, rel), d.st)
            if split == "train":
                # every third identity gives its last image to the validation list
                val = i % 3 == 0 and k == sc.imgs_per_train_id - 1
                lines["list_val.txt" if val else "list_train.txt"].append(f"{rel} {pid}")
            else:
                lines[f"list_{split}.txt"].append(f"{rel} {pid}")
    for fname, ls in lines.items():
        atomic_write_text("".join(line + "\n" for line in ls), osp.join(base, fname))
    c = _counts(plan, d.st.n_cams)
    c["val_images"] = len(lines["list_val.txt"])
    c["train_only_images"] = len(lines["list_train.txt"])
    return c


def _write_cuhk(d: _Domain, out: str) -> dict[str, int]:
    plan = d.plan()
    sc = d.scale
    rng = _rng(d.seed, d.st.salt, 6)
    pids = [int(p) for p in rng.permutation(np.arange(1, sc.train_ids + sc.test_ids + 1))]
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for variant, jitter in (("labeled", 0.0), ("detected", 0.12)):
        base = osp.join(out, "cuhk03-np", variant)
        for split, items in plan.items():
            for i, k, cam in items:
                crop_rng = _rng(d.seed, d.st.salt, 10, i, k)
                img = d.image(i, k, cam, crop_rng=crop_rng, crop_jitter=jitter)
                _save(img, osp.join(base, folders[split], f"{pids[i]:04d}_c{cam}_{k + 1}.png"), d.st)
    return _counts(plan, d.st.n_cams)


def _counts(plan: dict[str, list], n_cams: int, junk: int = 0, distractor_images: int = 0,
            distractor_ids: int = 0) -> dict[str, int]:
    return {
        "cams": n_cams,
        "train_cams": len({c for _, _, c in plan["train"]}),
        "train_ids": len({i for i, _, _ in plan["train"]}),
        "train_images": len(plan["train"]),
        "query_ids": len({i for i, _, _ in plan["query"]}),
        "query_images": len(plan["query"]),
        "gallery_ids": len({i for i, _, _ in plan["gallery"]}) + distractor_ids,
        "gallery_images": len(plan["gallery"]) + distractor_images,  # as torchreid loads it
        "junk_images": junk,
        "distractor_images": distractor_images,
    }


_WRITERS = {"market1501": _write_market, "dukemtmcreid": _write_duke, "msmt17": _write_msmt,
            "cuhk03_np": _write_cuhk}


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def make_synthetic(root: str | os.PathLike, scale: str = "tiny", seed: int = 0,
                   domains: tuple[str, ...] | list[str] = DEFAULT_DOMAINS) -> dict[str, dict[str, int]]:
    """Write the synthetic benchmark under ``root`` in the real datasets' layouts (cached).

    Args:
        root: data root (torchreid's ``root``); the domains go to ``root/market1501``,
            ``root/dukemtmc-reid``, ``root/msmt17``, ``root/cuhk03-np``.
        scale: ``'tiny'`` (tests, seconds) or ``'small'`` (demo: 150 train / 100 test ids per domain).
        seed: generation seed; the same seed gives byte-identical files.
        domains: which of ``market1501``, ``dukemtmcreid``, ``msmt17``, ``cuhk03_np`` to write.

    Returns:
        Counts per domain: ``cams``, ``train_ids``, ``train_images``, ``query_ids``,
        ``query_images``, ``gallery_ids``, ``gallery_images`` (as torchreid loads them: Market
        junk dropped, distractors kept), ``junk_images``, ``distractor_images``; msmt17 adds
        ``val_images`` and ``train_only_images`` (``list_train.txt``); ``train_images`` is
        train + val.

    Raises:
        ValueError: unknown scale or domain.
        SyntheticRootError: a domain folder exists in ``root`` but was not written by this
            generator (real data is never overwritten).
    """
    domains = _check_request(scale, domains)
    root = osp.abspath(osp.expanduser(os.fspath(root)))
    marker_path, partial_path = osp.join(root, MARKER), osp.join(root, PARTIAL_MARKER)
    marker = _read_json(marker_path)
    key = {"version": GENERATOR_VERSION, "scale": scale, "seed": int(seed)}
    if marker and all(marker.get(k) == v for k, v in key.items()) and set(domains) <= set(marker["domains"]):
        logger.info("synthetic benchmark already in %s (scale=%s, seed=%d): skipping", root, scale, seed)
        return {d: marker["counts"][d] for d in domains}
    _clear_root(root, domains, marker, _read_json(partial_path))
    atomic_write_json({**key, "domains": domains}, partial_path)
    counts = _write_domains(root, domains, SCALES[scale], int(seed))
    atomic_write_json({"generator": "dcac_plugin.data.synthetic", **key, "domains": domains,
                       "image_size": [IMG_H, IMG_W], "counts": counts}, marker_path)
    os.unlink(partial_path)
    return counts


def _check_request(scale: str, domains: tuple[str, ...] | list[str]) -> list[str]:
    """The requested domains without duplicates; ValueError on an unknown scale or domain."""
    if scale not in SCALES:
        raise ValueError(f"unknown synthetic scale {scale!r}; use one of {sorted(SCALES)}")
    domains = list(dict.fromkeys(domains))
    bad = [d for d in domains if d not in _WRITERS]
    if bad or not domains:
        raise ValueError(f"unknown synthetic domain(s) {bad}; choose from {list(_WRITERS)}")
    return domains


def _clear_root(root: str, domains: list[str], marker: dict[str, Any] | None,
                partial: dict[str, Any] | None) -> None:
    """Make ``root`` ready for a new generation: remove the folders a marker lists and the complete marker.

    Raises:
        SyntheticRootError: a requested domain's folder exists but no marker lists it (maybe real data).
    """
    owned: set[str] = set()  # folders this generator owns (listed in a marker) may be replaced
    for m in (marker, partial):
        if m:
            owned |= {STYLES[d].folder for d in m.get("domains", []) if d in STYLES}
    for d in domains:
        folder = osp.join(root, STYLES[d].folder)
        if osp.exists(folder) and STYLES[d].folder not in owned:
            raise SyntheticRootError(
                f"{folder} exists and was not written by the synthetic generator (no {MARKER} lists it); "
                "refusing to overwrite what may be a real dataset. Fix: choose another --root, or delete "
                "that folder yourself"
            )
    os.makedirs(root, exist_ok=True)
    for folder in sorted(owned):
        shutil.rmtree(osp.join(root, folder), ignore_errors=True)
    marker_path = osp.join(root, MARKER)
    if osp.exists(marker_path):
        os.unlink(marker_path)


def _write_domains(root: str, domains: list[str], sc: Scale, seed: int) -> dict[str, dict[str, int]]:
    """Write each domain in turn; its counts per domain."""
    counts = {}
    for d in domains:
        t0 = time.perf_counter()
        counts[d] = _WRITERS[d](_Domain(d, sc, seed), root)
        logger.info("synthetic %s: %s (%.1f s)", d, counts[d], time.perf_counter() - t0)
    return counts


def is_synthetic_root(root: str | os.PathLike) -> bool:
    """True if ``root`` holds a complete synthetic benchmark (``SYNTHETIC.json``)."""
    return _read_json(osp.join(os.fspath(root), MARKER)) is not None
