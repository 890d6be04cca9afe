"""Pieces shared by the ranking and re-ranking modules: the lazy numba compiler and distances.

Kept apart so that :mod:`~dcac_plugin.evaluation.ranking` and :mod:`~dcac_plugin.evaluation.rerank`
both import from here and never from each other.
"""

from __future__ import annotations

import functools
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
            import numba  # heavy, and optional at run time: the pure-torch path serves without it
        except ImportError:
            logger.info("numba not importable; using the pure-torch path for %s", fn.__name__)
            _KERNELS[key] = None
            return None
        fn.__globals__["prange"] = numba.prange
        opts = dict(parallel=True, nogil=True)
        try:
            compiled = numba.njit(cache=True, **opts)(fn)
        except RuntimeError as err:  # no writable cache location (read-only install, no NUMBA_CACHE_DIR)
            logger.info("numba cache unavailable (%s); compiling %s in memory", err, fn.__name__)
            compiled = numba.njit(cache=False, **opts)(fn)
        _KERNELS[key] = _with_torch_threads(compiled, numba)
    return _KERNELS[key]


def _with_torch_threads(kernel: Any, numba: Any) -> Any:
    """Run ``kernel`` on torch's thread count and leave torch's count as it was.

    numba's OpenMP threading layer sets the process's OpenMP thread count to its own default (every
    core) at its first parallel call, which silently changes torch's count too (a training after an
    evaluation then ran up to 20x slower on a loaded 2-core machine). One thread decision: torch's.
    """

    @functools.wraps(kernel)
    def call(*args: Any) -> Any:
        n = torch.get_num_threads()
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        try:
            return kernel(*args)
        finally:
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)

    return call


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
