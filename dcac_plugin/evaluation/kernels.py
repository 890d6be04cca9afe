"""Pieces shared by the ranking and re-ranking modules: the lazy numba compiler and distances.

Kept apart so that :mod:`~dcac_plugin.evaluation.ranking` and :mod:`~dcac_plugin.evaluation.rerank`
both import from here and never from each other.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["compute_distance_chunk", "numba_kernel"]

# Set to False to force the pure-torch path (tests run both). The kernels are used on CPU when numba imports.
_USE_NUMBA = True
_KERNELS: dict[str, Any] = {}


def numba_kernel(fn: Any) -> Any | None:
    """Compile ``fn`` (a module-level function using the global ``prange``) with numba, once.

    Returns None when numba is not importable or :data:`_USE_NUMBA` is False (callers then use their
    pure-torch path). Compiled code is cached on disk (``cache=True``); without a writable cache
    location it is compiled in memory instead.
    """
    if not _USE_NUMBA:
        return None
    key = f"{fn.__module__}.{fn.__name__}"
    if key not in _KERNELS:
        try:
            import numba
        except ImportError:
            logger.info("numba not importable; using the pure-torch path for %s", fn.__name__)
            _KERNELS[key] = None
            return None
        fn.__globals__["prange"] = numba.prange
        opts = dict(parallel=True, nogil=True)
        try:
            _KERNELS[key] = numba.njit(cache=True, **opts)(fn)
        except RuntimeError as err:  # no writable cache location (read-only install, no NUMBA_CACHE_DIR)
            logger.info("numba cache unavailable (%s); compiling %s in memory", err, fn.__name__)
            _KERNELS[key] = numba.njit(cache=False, **opts)(fn)
    return _KERNELS[key]


def compute_distance_chunk(qf: torch.Tensor, gf: torch.Tensor, metric: str = "euclidean",
                           g_sqnorm: torch.Tensor | None = None) -> torch.Tensor:
    """Distances ``[B, G]`` between ``qf`` ``[B, D]`` and ``gf`` ``[G, D]`` as torchreid computes them.

    ``'euclidean'`` is the *squared* euclidean distance (``|q|^2 + |g|^2 - 2 q.g``), ``'cosine'``
    is ``1 - cos``. ``g_sqnorm`` (``[G]``, euclidean only) may be passed to avoid recomputing it.
    """
    if metric == "euclidean":
        gn = g_sqnorm if g_sqnorm is not None else gf.pow(2).sum(1)
        d = qf.pow(2).sum(1, keepdim=True) + gn[None, :]
        return d.addmm_(qf, gf.t(), beta=1, alpha=-2)
    if metric == "cosine":
        return 1 - torch.mm(F.normalize(qf, p=2, dim=1), F.normalize(gf, p=2, dim=1).t())
    raise ValueError(f"unknown distance metric {metric!r}; use 'euclidean' or 'cosine'")
