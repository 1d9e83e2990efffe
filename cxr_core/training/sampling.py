"""Sample order and augmentation randomness as pure functions of (seed, epoch, batch).

Why not the DataLoader's default seeding: worker processes draw augmentation randomness from
their own generators, whose state depends on how many epochs they have lived through and on
``num_workers``. A run resumed after epoch 3 would then see different crops than the
uninterrupted run. Here the sampler yields ``(epoch, index)`` keys and :class:`SeededItems`
seeds torch/NumPy/Python RNGs from ``(seed, epoch, indices)`` around each batch, so epoch ``e``
sees the same order and the same augmentations however the run was interrupted, whatever
the number of workers or the world size.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_MASK64 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (SplitMix64 over the parts)."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x = z ^ (z >> 31)
    return x & _MASK64


class EpochSampler(Sampler):
    """Shuffled order per epoch, sharded over ranks like DistributedSampler, yielding (epoch, index).

    With several ranks the permutation is padded by repeating its start so every rank runs
    the same number of steps (DDP needs that); with one rank nothing is repeated.
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n = n
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.per_rank = -(-n // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator()
        g.manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g).tolist()
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]
        for index in order[self.rank : total : self.world_size]:
            yield (self.epoch, index)

    def __len__(self) -> int:
        return self.per_rank


class SeededItems(Dataset):
    """Batches of ``dataset`` drawn with RNGs seeded from ``(seed, epoch, the batch's indices)``.

    The sampler decides each epoch's batches, so this makes every augmentation draw a pure
    function of (seed, epoch, position); :class:`cxr_core.data.dataset.CXRDataset` augments a whole
    batch at once (``__getitems__``), hence one seed per batch rather than per image. The
    caller's generator states are restored afterwards, so with ``num_workers=0`` the main
    process's dropout randomness is untouched by data loading. Only the CPU generators are
    seeded: ``torch.manual_seed`` would also reseed every CUDA generator (which ``fork_rng``
    with ``devices=[]`` does not restore), and GPU dropout would then differ between 0 and
    more workers.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset) if isinstance(self.dataset, Sized) else 0

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        epoch = keys[0][0]
        indices = [int(index) for _, index in keys]
        batch_seed = mix_seed(self.seed, epoch, *indices)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(batch_seed)
            random.seed(batch_seed)
            np.random.seed(batch_seed % 2**32)
            try:
                getitems = getattr(self.dataset, "__getitems__", None)
                return getitems(indices) if getitems else [self.dataset[i] for i in indices]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def worker_init(worker_id: int) -> None:
    """Seed NumPy and Python in each DataLoader worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
