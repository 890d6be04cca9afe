"""Correlation-aware conditioning: ID probabilities × ID-wise prompt bank → one context token (docs/METHOD.md §5)."""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

PROB_TYPES = ("fc", "pcl", "fc+pcl", "feature")
BOTTLENECKS = ("embedding", "silu", "bn", "bn+silu", "condition_net")


def build_bottleneck(kind: str, context_dim: int, init_std: float = 1.0, hidden: int = 96) -> nn.Module:
    """The condition bottleneck applied to c (docs/METHOD.md §5.3); ``'embedding'`` (used) is the identity.

    Args:
        kind: one of :data:`BOTTLENECKS`.
        context_dim: D of c.
        init_std: std of the Linear weights of ``'condition_net'``.
        hidden: hidden width of ``'condition_net'`` (96 in the original).
    """
    if kind == "embedding":
        return nn.Identity()
    if kind == "silu":
        return nn.SiLU()
    if kind == "bn":
        return nn.BatchNorm1d(context_dim)
    if kind == "bn+silu":
        return nn.Sequential(nn.BatchNorm1d(context_dim), nn.SiLU())
    if kind == "condition_net":
        net = nn.Sequential(
            nn.BatchNorm1d(context_dim),
            nn.SiLU(),
            nn.Linear(context_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.SiLU(),
            nn.Linear(hidden, context_dim, bias=False),
        )
        for m in net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=init_std)
        return net
    raise ValueError(f"unknown condition bottleneck {kind!r}; choose one of {BOTTLENECKS}")


class CorrelationAwareCondition(nn.Module):
    """c = bottleneck(p · E) as a single context token [B, 1, D] (docs/METHOD.md §5.1–5.4).

    Args:
        num_classes: N (rows of the prompt bank; ``feat_dim`` rows in ``'feature'`` mode).
        context_dim: D, the UNet cross-attention dim (768 for SD v1.5).
        feat_dim: re-ID feature dim (512), used by ``'feature'`` mode.
        prob_type: ``'fc'`` softmax(logits/τ) (default, used); ``'pcl'`` softmax(z·Mᵀ/T_mem);
            ``'fc+pcl'`` their average; ``'feature'`` p = z (no softmax).
        tau: temperature τ of ``'fc'``.
        bottleneck: see :func:`build_bottleneck`.
        init_std: E ~ init_std · N(0, 1).
        hard_label: condition on the ground-truth prompt E_y only (no gradient to the re-ID model;
            docs/DECISIONS.md item 11 — ablation only).
        memory_temperature: T_mem of ``'pcl'`` (0.01).
    """

    def __init__(
        self,
        num_classes: int,
        context_dim: int = 768,
        feat_dim: int = 512,
        prob_type: str = "fc",
        tau: float = 1.0,
        bottleneck: str = "embedding",
        init_std: float = 1.0,
        hard_label: bool = False,
        memory_temperature: float = 0.01,
    ) -> None:
        super().__init__()
        if prob_type not in PROB_TYPES:
            raise ValueError(f"unknown prob_type {prob_type!r}; choose one of {PROB_TYPES}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if hard_label and prob_type == "feature":
            raise ValueError("hard_label=True is not defined for prob_type='feature'")
        self.prob_type = prob_type
        self.tau = float(tau)
        self.hard_label = bool(hard_label)
        self.memory_temperature = float(memory_temperature)
        self.context_dim = int(context_dim)
        rows = feat_dim if prob_type == "feature" else num_classes
        self.prompt_emb = nn.Parameter(init_std * torch.randn(rows, context_dim))
        self.bottleneck = build_bottleneck(bottleneck, context_dim, init_std=init_std)

    def probabilities(
        self,
        logits: torch.Tensor,
        z: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The vector multiplied with the prompt bank: [B, N] (or z [B, feat_dim] in 'feature' mode)."""
        if self.prob_type == "feature":
            if z is None:
                raise ValueError("prob_type='feature' needs z")
            return z
        p = None
        if self.prob_type in ("fc", "fc+pcl"):
            p = F.softmax(logits.float() / self.tau, dim=1)
        if self.prob_type in ("pcl", "fc+pcl"):
            if z is None or memory is None:
                raise ValueError(
                    f"prob_type={self.prob_type!r} needs z and memory (a detached [N, D] clone of the "
                    f"prototype memory taken before the PCL loss; docs/DECISIONS.md item 10)"
                )
            q = F.softmax(z.float() @ memory.detach().float().t() / self.memory_temperature, dim=1)
            p = q if p is None else 0.5 * (p + q)
        return p

    def forward(
        self,
        logits: torch.Tensor,
        z: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the condition token.

        Args:
            logits: [B, N] classifier logits fc(BN(f)).
            z: [B, feat_dim] L2-normalised BN feature ('pcl', 'fc+pcl', 'feature').
            memory: [N, feat_dim] detached prototype memory ('pcl', 'fc+pcl').
            labels: [B] ground-truth labels (``hard_label`` only).

        Returns:
            cond: [B, 1, context_dim].
        """
        if self.hard_label:
            if labels is None:
                raise ValueError("hard_label=True needs labels")
            # p_y·E_y / p_y == E_y: the value the original computes, with no gradient to p.
            c = self.prompt_emb[labels]
        else:
            p = self.probabilities(logits, z, memory)
            c = p.to(self.prompt_emb.dtype) @ self.prompt_emb
        c = self.bottleneck(c)
        return c.unsqueeze(1)
