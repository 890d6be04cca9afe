"""Per-epoch warm-up + multi-step LR schedule of DCAC / CLIP-ReID (docs/METHOD.md §7.3).

lr(e) = base · w(e) · γ^{#milestones ≤ e} for the 1-based epoch e, with the linear warm-up
w(e) = f·(1 − e/W) + e/W for e < W, else 1 (W = 10 epochs, f = 0.1). The original steps its scheduler
with the epoch index at the start of each epoch, so epoch 1 already runs at 0.19·base.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import torch


def warmup_multistep_factor(
    epoch: int,
    milestones: Sequence[int] = (30, 50),
    gamma: float = 0.1,
    warmup_epochs: int = 10,
    warmup_factor: float = 0.1,
) -> float:
    """LR multiplier during the 1-based ``epoch``.

    Args:
        epoch: 1-based epoch index.
        milestones: epochs from which the LR is multiplied by ``gamma`` (inclusive, increasing).
        gamma: decay factor.
        warmup_epochs: linear warm-up length W (0 disables it).
        warmup_factor: f, the multiplier the warm-up line starts from at e = 0.

    Returns:
        w(e) · γ^{#milestones ≤ e}.
    """
    if epoch < 1:
        raise ValueError(f"epoch is 1-based, got {epoch}")
    if list(milestones) != sorted(milestones):
        raise ValueError(f"milestones must be increasing, got {milestones}")
    w = 1.0
    if epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        w = warmup_factor * (1.0 - alpha) + alpha
    return w * gamma ** bisect_right(list(milestones), epoch)


class WarmupMultiStepLambda:
    """Picklable ``LambdaLR`` multiplier: maps LambdaLR's 0-based step count i to factor(i + 1)."""

    def __init__(
        self,
        milestones: Sequence[int] = (30, 50),
        gamma: float = 0.1,
        warmup_epochs: int = 10,
        warmup_factor: float = 0.1,
    ) -> None:
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step: int) -> float:
        return warmup_multistep_factor(
            step + 1, self.milestones, self.gamma, self.warmup_epochs, self.warmup_factor
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    milestones: Sequence[int] = (30, 50),
    gamma: float = 0.1,
    warmup_epochs: int = 10,
    warmup_factor: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepped ONCE at the END of every epoch (torchreid ``Engine.update_lr`` convention).

    Right after construction the group LRs are ``base·factor(1)`` (epoch 1); after the k-th
    ``scheduler.step()`` they are ``base·factor(k + 1)``. Base LRs are the groups' ``lr`` at
    construction (kept per group, so LR multipliers survive).

    Args:
        optimizer: e.g. Adam over ``DCAC.param_groups(...)``.
        milestones, gamma, warmup_epochs, warmup_factor: see :func:`warmup_multistep_factor`.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupMultiStepLambda(milestones, gamma, warmup_epochs, warmup_factor)
    )
