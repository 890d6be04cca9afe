"""The one door into torchreid.

PyPI's ``torchreid==0.2.5`` is a repackage of upstream 1.4.0 whose code lives under
``torchreid.reid.*`` and whose submodules cannot be imported as ``torchreid.utils`` etc.;
an upstream install exposes the same code directly under ``torchreid``. Everything in this
plugin reaches torchreid through :data:`tr` with attribute access only
(``tr.models.build_model``, ``tr.data.ImageDataManager``...), never ``from torchreid.x import``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

with warnings.catch_warnings():
    # 0.2.5 ships no Cython evaluator and warns at import; the plugin has its own evaluator.
    warnings.simplefilter("ignore")
    try:  # PyPI 0.2.5 layout
        import torchreid.reid as tr  # type: ignore[import-not-found]
    except ImportError:  # upstream 1.4.0 layout
        import torchreid as tr  # type: ignore[no-redef]

TORCHREID_VERSION: str = getattr(tr, "__version__", "unknown")


def _module(path: str) -> Any:
    """Return ``tr.<path>`` by attribute access (e.g. ``"data.datasets"``)."""
    obj: Any = tr
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def image_dataset_registry() -> dict:
    """torchreid's name -> class registry of image datasets (a module-global dict)."""
    return vars(_module("data.datasets"))["__image_datasets"]


def model_factory() -> dict:
    """torchreid's name -> constructor registry of models (a module-global dict)."""
    return vars(tr.models)["__model_factory"]


def _numpy_safe_globals() -> list:
    """numpy types that torchreid's own checkpoints pickle (``rank1`` is a numpy scalar)."""
    out: list = [np.dtype]
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    if core is not None:
        out.append(core.multiarray.scalar)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float32DType", "Float64DType", "Int64DType", "Int32DType"):
            if hasattr(dtypes, name):
                out.append(getattr(dtypes, name))
    return out


@contextlib.contextmanager
def torchreid_checkpoint_globals() -> Iterator[None]:
    """Allow ``torch.load(weights_only=True)`` to read torchreid-written checkpoints.

    torchreid stores ``rank1`` as a ``numpy.float32``; torch >= 2.6 refuses that under
    ``weights_only=True``. This allow-lists exactly those numpy types — nothing else.
    """
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        yield


def load_torchreid_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by torchreid's ``save_checkpoint`` safely (weights only)."""
    with torchreid_checkpoint_globals():
        return torch.load(path, map_location=map_location, weights_only=True)


class _LogWriter:
    """A file-like object that forwards complete lines to a logger (for torchreid's prints)."""

    def __init__(self, log: logging.Logger, level: int) -> None:
        self.log, self.level, self.buf = log, level, ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.strip():
                self.log.log(self.level, line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self.buf.strip():
            self.log.log(self.level, self.buf.rstrip())
        self.buf = ""


@contextlib.contextmanager
def prints_to_log(level: int = logging.INFO) -> Iterator[None]:
    """Route torchreid's ``print`` output (summaries, progress) to this plugin's log."""
    writer = _LogWriter(logging.getLogger("torchreid"), level)
    with contextlib.redirect_stdout(writer):  # type: ignore[type-var]
        try:
            yield
        finally:
            writer.flush()
