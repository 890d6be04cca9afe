"""torch.distributed (DDP) support: process-group setup from torchrun's environment, rank helpers,
padded all-gather and a BatchNorm whose statistics span the global batch.

Launch with ``torchrun --nproc_per_node N tools/train.py ...``: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them.
NCCL is used on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn.functional import all_reduce

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 logs, checkpoints, evaluates and writes results."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def init_from_env(use_gpu: bool) -> tuple[bool, torch.device]:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Returns:
        ``(distributed, device)``; the device is ``cuda:LOCAL_RANK`` on CUDA, else CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = use_gpu and torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world <= 1:
        return False, device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    logger.info("distributed: rank %d of %d on %s", dist.get_rank(), dist.get_world_size(), device)
    return True, device


def cleanup() -> None:
    """Destroy the process group if this module created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x [n_r, ...]`` of every rank in rank order (ranks may hold different n_r).

    Not differentiable; used for the prototype memory (rebuild and update).
    """
    if not is_distributed():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    top = max(sizes_i)
    padded = x.new_zeros((top, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.zeros_like(padded) for _ in sizes_i]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:s] for o, s in zip(out, sizes_i, strict=True)])


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics are computed over the global batch of all ranks.

    Identical to ``nn.BatchNorm1d`` in one process; under DDP the mean and variance are
    all-reduced (differentiably), so each rank normalises with the statistics of the
    concatenated batch, as one process on that batch would. Works with gloo (CPU) and NCCL.
    State-dict compatible with ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not (self.training and is_distributed()):
            return super().forward(x)
        xf = x.float()
        count = torch.tensor([float(x.shape[0])], device=x.device)
        stats = torch.cat([xf.sum(0), (xf * xf).sum(0), count])
        stats = all_reduce(stats)
        c = self.num_features
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
        y = (xf - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)


def convert_bnneck(module: nn.Module) -> int:
    """Swap every ``nn.BatchNorm1d`` in ``module`` for :class:`GlobalBatchNorm1d` (weights kept).

    Returns the number of layers converted.
    """
    converted = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm1d:
            new = GlobalBatchNorm1d(child.num_features, eps=child.eps, momentum=child.momentum,
                                    affine=child.affine, track_running_stats=child.track_running_stats)
            new.load_state_dict(child.state_dict())
            if child.affine:
                new.weight.requires_grad_(child.weight.requires_grad)
                new.bias.requires_grad_(child.bias.requires_grad)
            new.to(device=child.weight.device if child.affine else None)
            setattr(module, name, new)
            converted += 1
        else:
            converted += convert_bnneck(child)
    return converted
