"""Fast, memory-bounded re-ID evaluation: CMC/mAP/mINP and k-reciprocal re-ranking."""

from dcac_plugin.evaluation.features import evaluate_features
from dcac_plugin.evaluation.kernels import compute_distance_chunk
from dcac_plugin.evaluation.ranking import NoValidQueryError, RankAccumulator, evaluate_rank
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
