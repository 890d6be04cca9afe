"""A distributed P x K identity sampler.

Same batching algorithm as torchreid's ``RandomIdentitySampler`` (docs/METHOD.md §7.4): per epoch, each
identity's image indices are shuffled (up-sampled with replacement to K when it has fewer),
cut into chunks of K; then P identities with chunks left are drawn at random and one chunk of
each forms a batch, until fewer than P identities remain. Here the draws come from a private
generator seeded with ``(seed, epoch)``, so every rank builds the same global list of batches
and takes every ``world``-th one: each replica gets full P x K batches and the global batch is
``world x batch_size``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class DistributedIdentitySampler(Sampler[int]):
    """P x K identity sampler whose batches are split across ranks.

    Args:
        data_source: torchreid train list of ``(path, pid, camid, dsetid)`` tuples.
        batch_size: images per batch on each replica (P x K).
        num_instances: K.
        num_replicas: number of ranks.
        rank: this rank.
        seed: shared seed (same on every rank).
    """

    def __init__(self, data_source: Sequence, batch_size: int, num_instances: int, num_replicas: int = 1,
                 rank: int = 0, seed: int = 0) -> None:
        if batch_size % num_instances:
            raise ValueError(f"batch_size {batch_size} must be a multiple of num_instances {num_instances}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} must be in [0, {num_replicas})")
        self.batch_size, self.num_instances = batch_size, num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.epoch = 0
        self.index_dic: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(data_source):
            self.index_dic[int(item[1])].append(index)
        self.pids = sorted(self.index_dic)
        if len(self.pids) < self.num_pids_per_batch:
            raise ValueError(f"{len(self.pids)} identities cannot fill batches of {self.num_pids_per_batch} identities")

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch`` (call before iterating, as with ``DistributedSampler``)."""
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """Every batch of this epoch, identical on all ranks."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        chunks: dict[int, list[list[int]]] = {}
        for pid in self.pids:
            idxs = list(self.index_dic[pid])
            if len(idxs) < self.num_instances:
                idxs = [rng.choice(idxs) for _ in range(self.num_instances)]
            rng.shuffle(idxs)
            k = self.num_instances
            chunks[pid] = [idxs[i:i + k] for i in range(0, len(idxs) - k + 1, k)]
        available = [pid for pid in self.pids if chunks[pid]]
        batches: list[list[int]] = []
        while len(available) >= self.num_pids_per_batch:
            selected = rng.sample(available, self.num_pids_per_batch)
            batch: list[int] = []
            for pid in selected:
                batch.extend(chunks[pid].pop(0))
                if not chunks[pid]:
                    available.remove(pid)
            batches.append(batch)
        return batches

    def _local_batches(self) -> list[list[int]]:
        batches = self.global_batches()
        per_rank = len(batches) // self.num_replicas
        return batches[self.rank: per_rank * self.num_replicas: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        for batch in self._local_batches():
            yield from batch

    def __len__(self) -> int:
        return len(self._local_batches()) * self.batch_size
