"""An image reader that fails loudly.

torchreid's ``read_image`` retries forever when PIL cannot decode a file, so one corrupt JPEG
hangs the data loader. :func:`read_image` raises :class:`CorruptImageError` naming the file
instead; :func:`install_reader` puts it in place of torchreid's reader.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

from PIL import Image

logger = logging.getLogger(__name__)


class CorruptImageError(ValueError):
    """An image file exists but cannot be decoded."""


def read_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an RGB PIL image.

    Args:
        path: image file.

    Returns:
        The decoded image, mode ``RGB`` (size W x H as stored).

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
            return img.convert("RGB")
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
    from dcac_plugin._torchreid import tr

    targets = [sys.modules[tr.data.ImageDataset.__module__]]
    tools = getattr(getattr(tr, "utils", None), "tools", None)
    if tools is not None and hasattr(tools, "read_image"):
        targets.append(tools)
    for module in targets:
        if getattr(module, "read_image", None) is not read_image:
            module.read_image = read_image
            logger.debug("installed dcac_plugin read_image into %s", module.__name__)
