"""Gallery search with the evaluator's distances (and optional k-reciprocal re-ranking).

Distances are :func:`dcac_plugin.evaluation.compute_distance_chunk` with the run's metric
(``'euclidean'`` = squared euclidean, ``'cosine'`` = 1 - cos) on the features the evaluation uses
(L2-normalised when ``test.normalize_feature``); with re-ranking they are the final re-ranked
distances of :class:`dcac_plugin.evaluation.SparseReranker` (``test.rerank_k1/k2/lambda``). Ties
are broken by gallery order, as in the evaluator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcac_plugin.evaluation.features import iter_distance_blocks
from dcac_plugin.protocols import TORCHREID_RERANK, RerankParams

__all__ = ["distance_blocks", "search_topk"]

_CHUNK_ELEMS = 1 << 24  # distances per block (64 MB of float32)


def distance_blocks(qf: torch.Tensor, gf: torch.Tensor, metric: str = "euclidean", normalize: bool = False,
                    rerank: bool = False, k1: int = TORCHREID_RERANK.k1, k2: int = TORCHREID_RERANK.k2,
                    lambda_value: float = TORCHREID_RERANK.lambda_value,
                    chunk_size: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Query-row blocks ``(a, b, dist [b - a, G])`` of the evaluator's query-gallery distances, on CPU.

    The blocks come from :func:`dcac_plugin.evaluation.features.iter_distance_blocks`, the
    evaluator's own generator; this adds the checks and the CPU placement search needs.

    Args:
        qf: ``[Q, D]`` query features. gf: ``[G, D]`` gallery features.
        metric: ``'euclidean'`` (squared) or ``'cosine'``.
        normalize: L2-normalise the features first (the evaluator's ``normalize``).
        rerank: k-reciprocal re-ranking with ``k1``, ``k2``, ``lambda_value``.
        chunk_size: query rows per block (default: about 16M distances per block).
    """
    q = qf.float().cpu()
    g = gf.float().cpu()
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"query features {tuple(q.shape)} and gallery features {tuple(g.shape)} must be 2-D "
                         "with the same dimension (same model)")
    if normalize:
        q, g = F.normalize(q, p=2, dim=1), F.normalize(g, p=2, dim=1)
    num_q, num_g = q.shape[0], g.shape[0]
    step = chunk_size or max(1, _CHUNK_ELEMS // max(num_g, 1))
    chunks = [(a, min(num_q, a + step)) for a in range(0, num_q, step)]
    params = RerankParams(k1, k2, lambda_value) if rerank else None
    yield from iter_distance_blocks(q, g, chunks, metric, params, torch.device("cpu"))


def search_topk(qf: torch.Tensor, gf: torch.Tensor, topk: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """The ``topk`` nearest gallery items of every query.

    Args:
        qf, gf: features ``[Q, D]`` / ``[G, D]``.
        topk: matches per query (clipped to ``G``).
        **kwargs: :func:`distance_blocks` options (metric, normalize, rerank, k1, k2, lambda_value).

    Returns:
        ``(indices [Q, k] int64, distances [Q, k] float32)``, nearest first, ties in gallery order.
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    k = min(topk, gf.shape[0])
    idx_out = np.zeros((qf.shape[0], k), dtype=np.int64)
    dist_out = np.zeros((qf.shape[0], k), dtype=np.float32)
    for a, b, d in distance_blocks(qf, gf, **kwargs):
        s = torch.sort(d, dim=1, stable=True)
        idx_out[a:b] = s.indices[:, :k].numpy()
        dist_out[a:b] = s.values[:, :k].numpy()
    return idx_out, dist_out
