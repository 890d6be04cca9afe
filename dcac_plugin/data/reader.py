"""An image reader that fails loudly and shows every image as a viewer would.

torchreid's ``read_image`` retries forever when PIL cannot decode a file, so one corrupt JPEG
hangs the data loader. :func:`read_image` raises :class:`CorruptImageError` naming the file
instead; :func:`install_reader` puts it in place of torchreid's reader.

Every mode PIL opens becomes the 8-bit RGB the models expect through :func:`to_rgb` (training,
evaluation and extraction alike): 16-bit samples are scaled to 8 bits (PIL's own conversion
clips them, which shows a 16-bit grayscale PNG almost white), float images are read in [0, 1],
and transparent pixels are composited on mid grey (:data:`ALPHA_BACKGROUND`), not dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import numpy as np
from PIL import Image

from dcac_plugin._torchreid import tr

logger = logging.getLogger(__name__)

#: what transparent pixels are composited on: mid grey, the centre of the models' normalisation
#: (a viewer's neutral background), so that a cut-out person is not pasted on black or white.
ALPHA_BACKGROUND = (128, 128, 128)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class CorruptImageError(ValueError):
    """An image file exists but cannot be decoded."""


def to_rgb(img: Image.Image) -> Image.Image:
    """The 8-bit RGB picture a viewer would show for an image of any PIL mode.

    * ``RGB``: unchanged (a copy). ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``,
      ``RGBX``: PIL's conversion.
    * ``I;16*`` and ``I`` (how PIL opens 16-bit PNG/TIFF grayscale): samples in [0, 65535]
      scaled by 255/65535 (rounded), so a 16-bit picture equals its 8-bit version.
    * ``F``: samples in [0, 1] scaled by 255 (the float-image convention); when some sample
      exceeds 1 they are taken as [0, 255]. NaN is black.
    * With transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, a ``P``/``L``/``RGB`` image with a
      transparent colour): alpha-composited on :data:`ALPHA_BACKGROUND` (mid grey).

    Args:
        img: a loaded PIL image, W x H.

    Returns:
        A mode ``RGB`` image of the same size.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if mode in _SIXTEEN_BIT:
        arr = np.asarray(img).astype(np.float64)
        out = np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(out, "L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if arr.size == 0 or arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        if mode == "La":
            img = img.convert("LA")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an RGB PIL image.

    Args:
        path: image file.

    Returns:
        The decoded image, mode ``RGB`` (size W x H as stored), converted by :func:`to_rgb`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptImageError: the file cannot be decoded (truncated or not an image).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            errno.ENOENT,
            f"image file not found: {path!r}. Fix: restore the file, or remove it from the dataset "
            "folder / list file that refers to it",
            path,
        )
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(
            f"cannot decode image {path!r} ({type(exc).__name__}: {exc}). Fix: re-extract or re-download "
            "this file from the original dataset archive, or delete it (and its list-file line, if any)"
        ) from exc


def install_reader() -> None:
    """Make torchreid's image datasets use :func:`read_image` (idempotent).

    ``ImageDataset.__getitem__`` looks ``read_image`` up in the globals of its own module
    (``torchreid/data/datasets/dataset.py``, which imported it at module level), so that
    module's attribute is replaced; ``torchreid.utils.tools.read_image`` is replaced too.
    """
    targets = [sys.modules[tr.data.ImageDataset.__module__]]
    tools = getattr(getattr(tr, "utils", None), "tools", None)
    if tools is not None and hasattr(tools, "read_image"):
        targets.append(tools)
    for module in targets:
        if getattr(module, "read_image", None) is not read_image:
            module.read_image = read_image
            logger.debug("installed dcac_plugin read_image into %s", module.__name__)
