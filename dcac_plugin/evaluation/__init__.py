"""Fast, memory-bounded re-ID evaluation: CMC/mAP/mINP and k-reciprocal re-ranking."""

from dcac_plugin.evaluation.ranking import (
    NoValidQueryError,
    RankAccumulator,
    compute_distance_chunk,
    evaluate_features,
    evaluate_rank,
)
from dcac_plugin.evaluation.rerank import SparseReranker, re_ranking, re_ranking_features

__all__ = [
    "NoValidQueryError",
    "RankAccumulator",
    "SparseReranker",
    "compute_distance_chunk",
    "evaluate_features",
    "evaluate_rank",
    "re_ranking",
    "re_ranking_features",
]
