"""Evaluation-protocol facts (light: no torch import): dataset short codes used in protocol names
such as ``MA->MS``, and the re-ranking parameters with their two presets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: torchreid dataset name -> the code the DG literature uses.
DATASET_CODES: dict[str, str] = {
    "market1501": "MA",
    "dukemtmcreid": "D",
    "msmt17": "MS",
    "msmt17_trainval": "MS",
    "cuhk03_np": "C3",
    "cuhk03": "C3",
}


@dataclass(frozen=True)
class RerankParams:
    """k-reciprocal re-ranking parameters (Zhong et al. 2017): ``k1``, ``k2``, ``lambda_value``.

    Two presets: :data:`DCAC_RERANK` (the original DCAC code's values, the config's
    ``test.rerank_k1/k2/lambda`` defaults) and :data:`TORCHREID_RERANK` (torchreid's
    ``re_ranking`` defaults, the defaults of the plugin's re-ranking functions).
    """

    k1: int
    k2: int
    lambda_value: float

    @classmethod
    def from_config(cls, test: Any) -> RerankParams:
        """``test.rerank_k1/k2/lambda`` of a config's ``test`` node (whether ``test.rerank`` is on
        is the caller's question)."""
        return cls(int(test.rerank_k1), int(test.rerank_k2), float(test.rerank_lambda))

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], default: RerankParams | None = None) -> RerankParams:
        """From ``k1``/``k2``/``lambda_value`` keyword arguments (evaluation kwargs); what is missing
        comes from ``default`` (:data:`TORCHREID_RERANK`, as the re-ranking functions)."""
        base = default or TORCHREID_RERANK
        return cls(kwargs.get("k1", base.k1), kwargs.get("k2", base.k2),
                   kwargs.get("lambda_value", base.lambda_value))

    def kwargs(self) -> dict[str, Any]:
        """``{'k1', 'k2', 'lambda_value'}``: the keyword arguments of the re-ranking functions."""
        return {"k1": self.k1, "k2": self.k2, "lambda_value": self.lambda_value}


#: the original DCAC code's re-ranking (the config's ``test.rerank_*`` defaults).
DCAC_RERANK = RerankParams(k1=50, k2=15, lambda_value=0.3)
#: torchreid's ``re_ranking`` defaults (the defaults of :mod:`dcac_plugin.evaluation.rerank`).
TORCHREID_RERANK = RerankParams(k1=20, k2=6, lambda_value=0.3)
