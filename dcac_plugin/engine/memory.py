"""Prototype (cluster) memory and the prototypical contrastive loss, PCL (docs/METHOD.md §6.2).

As in the original ("ClusterMemoryAMP" with hard update), the memory update happens inside the
autograd **backward** of the loss: the gradient w.r.t. z is computed with the memory as it was in
the forward pass, then, for every label present in the batch, the sample with the lowest cosine
similarity to its current prototype (the hardest; first one on ties) updates it once:
``M_k ← normalise(momentum·M_k + (1 − momentum)·z_hard)`` with momentum 0.2 (weight of the OLD
prototype). Calling ``loss(...)`` without a later ``backward()`` therefore leaves the memory
untouched (e.g. under ``torch.no_grad()``); with a GradScaler the update happens even on skipped
steps, like the original (docs/DECISIONS.md item 21). Under DDP the update uses the global batch
(all-gathered), keeping the memory identical on every rank.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcac_plugin.distributed import all_gather_cat

logger = logging.getLogger(__name__)


def _hard_update(memory: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """In place: per present label, blend the lowest-cosine sample into its prototype (vectorised)."""
    z = z.detach().to(memory.dtype)
    n, b = memory.shape[0], z.shape[0]
    sims = (z * memory[labels]).sum(dim=1)  # [B] cosine to current prototype
    min_sim = torch.full((n,), float("inf"), device=z.device, dtype=sims.dtype)
    min_sim = min_sim.scatter_reduce(0, labels, sims, reduce="amin", include_self=True)
    is_min = sims == min_sim[labels]
    pos = torch.arange(b, device=z.device)
    big = torch.full((n,), b, device=z.device, dtype=torch.long)
    first = big.scatter_reduce(0, labels, torch.where(is_min, pos, torch.full_like(pos, b)), reduce="amin")
    present = first < b
    rows = present.nonzero(as_tuple=True)[0]
    new = momentum * memory[rows] + (1.0 - momentum) * z[first[rows]]
    memory[rows] = F.normalize(new, dim=1)


def _sequential_update(memory: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """In place, non-hard variant: every sample updates its prototype, in batch order."""
    z = z.detach().to(memory.dtype)
    for x, y in zip(z, labels.tolist(), strict=True):
        memory[y] = F.normalize(momentum * memory[y] + (1.0 - momentum) * x, dim=0)


class _MemoryLogits(torch.autograd.Function):
    """logits = z · Mᵀ; backward: grad_z = grad · M (pre-update M), then the memory update."""

    @staticmethod
    def forward(ctx, z, labels, memory, momentum, hard):  # noqa: D102
        ctx.memory = memory
        ctx.momentum = momentum
        ctx.hard = hard
        ctx.save_for_backward(z, labels)
        return z.mm(memory.t().to(z.dtype))

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        z, labels = ctx.saved_tensors
        memory = ctx.memory
        grad_z = grad_out.mm(memory.to(grad_out.dtype)) if ctx.needs_input_grad[0] else None
        with torch.no_grad():
            # Under DDP every rank applies the update of the global batch (rank order), so the
            # memories stay identical and equal to one process on the concatenated batch.
            z, labels = all_gather_cat(z.detach()), all_gather_cat(labels)
            if ctx.hard:
                _hard_update(memory, z, labels, ctx.momentum)
            else:
                _sequential_update(memory, z, labels, ctx.momentum)
        return grad_z, None, None, None, None


class PrototypeMemory(nn.Module):
    """Per-identity unit-norm prototypes M [N, dim] (a buffer, saved in ``state_dict``) and the PCL.

    Args:
        num_classes: N.
        dim: feature dim (512).
        temperature: T of CE(z·Mᵀ/T) (0.01).
        momentum: weight of the old prototype in the update (0.2).
        hard_update: hardest-sample update (True, used) or every sample in batch order.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int = 512,
        temperature: float = 0.01,
        momentum: float = 0.2,
        hard_update: bool = True,
    ) -> None:
        super().__init__()
        if num_classes <= 0 or dim <= 0:
            raise ValueError(f"num_classes and dim must be positive, got {num_classes}, {dim}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.hard_update = bool(hard_update)
        self.register_buffer("features", torch.zeros(num_classes, dim))
        self.register_buffer("built", torch.zeros((), dtype=torch.bool))
        self._built = False  # host-side mirror of ``built`` (no device sync per step)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D105
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._built = bool(self.built)

    @torch.no_grad()
    def build(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """(Re)build every prototype: mean of the L2-normalised features of each label, re-normalised.

        Args:
            features: [M, dim] eval-mode BNNeck features of the whole training set.
            labels: [M] labels in [0, N).

        Raises:
            ValueError: wrong shapes, labels out of range, or a label with no feature (every
                identity must have a prototype; the sampler draws all of them).
        """
        if features.dim() != 2 or features.shape[1] != self.dim or labels.shape != (features.shape[0],):
            raise ValueError(
                f"build expects features [M, {self.dim}] and labels [M], got {tuple(features.shape)} and "
                f"{tuple(labels.shape)}"
            )
        labels = labels.to(device=self.features.device, dtype=torch.long)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
            )
        f = F.normalize(features.to(self.features.device).float(), dim=1)
        sums = torch.zeros(self.num_classes, self.dim, device=f.device).index_add_(0, labels, f)
        counts = torch.bincount(labels, minlength=self.num_classes)
        absent = (counts == 0).nonzero(as_tuple=True)[0]
        if absent.numel():
            raise ValueError(
                f"{absent.numel()} of {self.num_classes} labels have no feature "
                f"(e.g. {absent[:10].tolist()}); "
                f"build the memory from the whole training set"
            )
        self.features.copy_(F.normalize(sums / counts.unsqueeze(1).float(), dim=1))
        self.built.fill_(True)
        self._built = True

    def logits(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Similarity logits z·Mᵀ / T [B, N] (z re-normalised); backward updates the memory."""
        if not self._built:
            raise RuntimeError("PrototypeMemory used before build(): rebuild it at the start of each epoch")
        if z.dim() != 2 or z.shape[1] != self.dim or labels.shape != (z.shape[0],):
            raise ValueError(
                f"expects z [B, {self.dim}] and labels [B], got {tuple(z.shape)}, {tuple(labels.shape)}"
            )
        z = F.normalize(z, dim=1)
        labels = labels.to(device=self.features.device, dtype=torch.long)
        out = _MemoryLogits.apply(z, labels, self.features, self.momentum, self.hard_update)
        return out / self.temperature

    def loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """PCL = CE(z·Mᵀ/T, y) (no smoothing); the memory update happens in ``backward()``.

        Args:
            z: [B, dim] features (re-normalised here).
            labels: [B] ground-truth labels.

        Returns:
            Scalar loss (fp32).
        """
        logits = self.logits(z, labels)
        return F.cross_entropy(logits.float(), labels.to(logits.device, torch.long))

    def snapshot(self) -> torch.Tensor:
        """Detached clone [N, dim] of the memory, for 'pcl'/'fc+pcl' conditioning (docs/DECISIONS.md item 10)."""
        return self.features.detach().clone()
