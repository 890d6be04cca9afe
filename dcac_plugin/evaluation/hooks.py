"""Evaluation hooks: what runs after a target has been evaluated, given what the evaluation saw.

An engine evaluates each target, then calls every hook of its ``eval_hooks`` with a
:class:`TargetEvaluation`: the features, ids and dataset items of the target, the metrics, and the
evaluation's settings, from which :meth:`TargetEvaluation.distance_blocks` gives the distances the
evaluator ranked. Drawing ranked lists (:class:`dcac_plugin.inference.visrank.VisrankHook`) is one
such hook; the engine imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from dcac_plugin.evaluation.features import iter_distance_blocks
from dcac_plugin.evaluation.ranking import _prep_features, _query_chunks
from dcac_plugin.protocols import TORCHREID_RERANK, RerankParams

__all__ = ["NAMED_HOOKS", "EvalHook", "TargetEvaluation", "build_named_hook", "run_hooks"]


@dataclass(frozen=True)
class TargetEvaluation:
    """One target's evaluation, as the hooks see it.

    Attributes:
        target: dataset name. epoch: completed epochs when it was evaluated.
        qf, gf: ``[Q, D]`` / ``[G, D]`` features as extracted (before any normalisation).
        q_pids, g_pids, q_camids, g_camids: integer ids ``[Q]`` / ``[G]``.
        metrics: ``{mAP, rank1, rank5, rank10, mINP}`` in percent.
        eval_kwargs: the keyword arguments of :func:`dcac_plugin.evaluation.evaluate_features`.
        query, gallery: dataset items ``(path, pid, camid, ...)``, in feature order.
        save_dir: the run's output folder.
    """

    target: str
    epoch: int
    qf: torch.Tensor
    gf: torch.Tensor
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray
    metrics: Mapping[str, float]
    eval_kwargs: Mapping[str, Any]
    query: Sequence[tuple]
    gallery: Sequence[tuple]
    save_dir: Path

    def distance_kwargs(self) -> dict[str, Any]:
        """The distance settings of the evaluation: ``metric``, ``normalize``, ``rerank`` and, when
        re-ranking, ``k1``/``k2``/``lambda_value`` (missing ones: :data:`TORCHREID_RERANK`, the
        evaluator's defaults); the keyword arguments of
        :func:`dcac_plugin.inference.search.distance_blocks`."""
        kw = self.eval_kwargs
        out: dict[str, Any] = dict(metric=kw.get("metric", "euclidean"), normalize=kw.get("normalize", False),
                                   rerank=kw.get("rerank", False))
        if out["rerank"]:
            out.update(RerankParams.from_kwargs(kw, TORCHREID_RERANK).kwargs())
        return out

    def distance_blocks(self, chunk_size: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Query-row blocks ``(a, b, dist [b - a, G])`` of the distances the evaluator ranked, on CPU
        (:func:`dcac_plugin.evaluation.features.iter_distance_blocks` with the evaluation's settings)."""
        kw = self.distance_kwargs()
        cpu = torch.device("cpu")
        q = _prep_features(self.qf, "qf", cpu, kw["normalize"])
        g = _prep_features(self.gf, "gf", cpu, kw["normalize"])
        params = RerankParams.from_kwargs(kw) if kw["rerank"] else None
        return iter_distance_blocks(q, g, _query_chunks(q.shape[0], g.shape[0], chunk_size), kw["metric"],
                                    params, cpu)


@runtime_checkable
class EvalHook(Protocol):
    """Called once per evaluated target, after its metrics are computed (rank 0 only under DDP)."""

    def __call__(self, evaluation: TargetEvaluation) -> Any:
        """Do something with one target's evaluation (write pictures, log, collect)."""


def run_hooks(hooks: Iterable[EvalHook], evaluation: TargetEvaluation) -> None:
    """Call every hook with ``evaluation``, in order."""
    for hook in hooks:
        hook(evaluation)


#: hooks built by name (``module:attribute``, imported when built), for the engine's
#: ``setup(visrank_topk=...)`` keyword, which predates ``eval_hooks``; evaluation and the engine
#: stay free of imports of the modules that draw.
NAMED_HOOKS: dict[str, str] = {"visrank": "dcac_plugin.inference.visrank:VisrankHook"}


def build_named_hook(name: str, **kwargs: Any) -> EvalHook:
    """The hook :data:`NAMED_HOOKS` names, built with ``kwargs`` (``build_named_hook('visrank', topk=10)``).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    if name not in NAMED_HOOKS:
        raise KeyError(f"unknown evaluation hook {name!r}; known: {sorted(NAMED_HOOKS)}")
    module, _, attr = NAMED_HOOKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)
