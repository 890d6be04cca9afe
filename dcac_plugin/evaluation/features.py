"""``evaluate_features``: rank metrics (optionally after k-reciprocal re-ranking) straight from features."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from dcac_plugin.evaluation.kernels import compute_distance_chunk
from dcac_plugin.evaluation.ranking import (
    NoValidQueryError,
    _check_ids,
    _evaluate_blocks,
    _prep_features,
    _query_chunks,
    _resolve_device,
)
from dcac_plugin.evaluation.rerank import SparseReranker
from dcac_plugin.protocols import TORCHREID_RERANK, RerankParams

__all__ = ["evaluate_features", "iter_distance_blocks"]


def iter_distance_blocks(q: torch.Tensor, g: torch.Tensor, chunks: Iterable[tuple[int, int]],
                         metric: str = "euclidean", rerank: RerankParams | None = None,
                         device: Any = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The evaluator's query-gallery distances, one query-row block ``(a, b, dist [b - a, G])`` per chunk.

    The one generator of ranking distances: :func:`evaluate_features` ranks these blocks, and
    :func:`dcac_plugin.inference.search.distance_blocks` (search, ranked-list pictures) yields them.

    Args:
        q, g: prepared ``[Q, D]`` / ``[G, D]`` float32 features (already L2-normalised if asked).
        chunks: ``(a, b)`` query-row ranges, in order.
        metric: ``'euclidean'`` (squared) or ``'cosine'``.
        rerank: k-reciprocal re-ranking with these parameters (``None``: plain distances).
        device: where re-ranking runs (default: ``q``'s device).
    """
    if rerank is not None:
        rr = SparseReranker.from_features(q, g, **rerank.kwargs(), metric=metric, chunk_size=None,
                                          device=device if device is not None else q.device)
        for a, b in chunks:
            yield a, b, rr.final_block(a, b)
        return
    gn = g.pow(2).sum(1) if metric == "euclidean" else None
    for a, b in chunks:
        yield a, b, compute_distance_chunk(q[a:b], g, metric, gn)


def evaluate_features(qf: Any, gf: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                      metric: str = "euclidean", normalize: bool = False, max_rank: int = 50,
                      chunk_size: int | None = None, device: Any = None, use_metric_cuhk03: bool = False,
                      rerank: bool = False, k1: int = TORCHREID_RERANK.k1, k2: int = TORCHREID_RERANK.k2,
                      lambda_value: float = TORCHREID_RERANK.lambda_value) -> dict[str, Any]:
    """Rank metrics straight from features, chunk by chunk (never the full ``[Q, G]`` matrix).

    Args:
        qf, gf: ``[Q, D]`` / ``[G, D]`` features (tensor or numpy; cast to float32).
        q_pids, g_pids, q_camids, g_camids: integer ids as in :func:`evaluate_rank`.
        metric: ``'euclidean'`` (squared, like torchreid) or ``'cosine'``.
        normalize: L2-normalise features first (torchreid's ``normalize_feature``).
        max_rank: CMC length.
        chunk_size: query rows per chunk (default: about 64M distances per chunk).
        device: torch device (default: ``qf``'s device, CPU for numpy input).
        use_metric_cuhk03: CUHK03 single-gallery-shot CMC.
        rerank: apply k-reciprocal re-ranking (:mod:`dcac_plugin.evaluation.rerank`) before ranking,
            with ``k1``, ``k2``, ``lambda_value``; memory grows with ``(Q + G) * k``, not ``(Q + G)^2``.

    Returns:
        ``{'mAP', 'rank1', 'rank5', 'rank10', 'mINP'}`` in percent (floats) and ``'cmc'``: list of
        ``min(max_rank, G)`` CMC values in percent. ``rankK`` for ``K`` beyond the CMC length is the
        last CMC value.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"unknown distance metric {metric!r}; use 'euclidean' or 'cosine'")
    fallback = qf.device if isinstance(qf, torch.Tensor) else torch.device("cpu")
    dev = _resolve_device(device, fallback)
    q = _prep_features(qf, "qf", dev, normalize)
    g = _prep_features(gf, "gf", dev, normalize)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"qf has dim {q.shape[1]} but gf has dim {g.shape[1]}; features must match")
    num_q, num_g = q.shape[0], g.shape[0]
    qp, gp, qc, gc = _check_ids(q_pids, g_pids, q_camids, g_camids, num_q, num_g, dev)
    if num_g == 0 or num_q == 0:
        raise NoValidQueryError(f"empty query ({num_q}) or gallery ({num_g}) set; nothing to evaluate")
    if not (torch.isfinite(q).all() and torch.isfinite(g).all()):
        raise ValueError("features contain NaN or inf; check the model output before evaluation")
    chunks = list(_query_chunks(num_q, num_g, chunk_size))
    params = RerankParams(k1, k2, lambda_value) if rerank else None
    blocks = iter_distance_blocks(q, g, chunks, metric, params, dev)
    with torch.no_grad():
        cmc, mAP, mINP = _evaluate_blocks(blocks, qp, gp, qc, gc, max_rank, use_metric_cuhk03)
    pct = [100.0 * float(c) for c in cmc]

    def rank_k(k: int) -> float:
        return pct[min(k, len(pct)) - 1]

    return {"mAP": 100.0 * mAP, "rank1": rank_k(1), "rank5": rank_k(5), "rank10": rank_k(10),
            "mINP": 100.0 * mINP, "cmc": pct}
