"""Reproducible random augmentation: every sample drawn under its own seed.

torchvision's ``transforms.v2`` draw from the global torch random generator, so which flip or shift
a sample gets depends on the order in which a worker process happens to load it: the same run with
another ``num_workers`` (or on another number of GPUs) augments differently. Here the sampler hands
out ``(index, seed)`` keys, the seed being a function of ``(run seed, epoch, index)`` only, and the
data set draws each sample's augmentation under its seed:

>>> from torch.utils.data import DataLoader
>>> sampler = SeededSampler(8, seed=0)                        # a DistributedSampler
>>> data = SeededDataset(list(range(8)), transform=lambda x: x + torch.rand(()).item())
>>> loader = DataLoader(data, batch_size=4, sampler=sampler)
>>> sampler.set_epoch(1)
>>> first = torch.cat(list(loader))
>>> torch.equal(first, torch.cat(list(DataLoader(data, batch_size=4, sampler=sampler, num_workers=2))))
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from mmfusion.data.transforms import zero_unavailable

__all__ = ["SeededDataset", "SeededSampler", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed for the random draws of sample ``index`` in ``epoch`` of a run seeded ``seed``.

    Derived with :class:`numpy.random.SeedSequence`, so neighbouring indices or epochs get
    unrelated seeds; independent of the order, worker and process that load the sample.

    Example:
        >>> sample_seed(0, 1, 5) == sample_seed(0, 1, 5) != sample_seed(0, 2, 5)
        True
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0]
    return int(state & 0x7FFFFFFF)


class SeededSampler(DistributedSampler):
    """:class:`~torch.utils.data.DistributedSampler` that yields ``(index, seed)`` keys.

    Everything else is torch's sampler: a permutation per epoch (``set_epoch``) from ``seed``, each
    of ``num_replicas`` processes taking its share, the list padded with repeats so every process
    gets as many samples (or cut with ``drop_last``). The defaults (one replica, rank 0) need no
    process group, so the same sampler serves one process and many.

    Args:
        dataset: The data set, or its length.
        seed: Run seed: the shuffling order and every sample's seed (:func:`sample_seed`).
        shuffle: Permute every epoch (training) or keep the order (evaluation).
        num_replicas: Number of processes.
        rank: This process's rank.
        drop_last: Drop the tail instead of padding it.
    """

    def __init__(
        self,
        dataset: Sized | int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if isinstance(dataset, bool) or not isinstance(dataset, (int, Sized)):
            raise TypeError(f"dataset: expected a sized data set or a length, got {dataset!r}")
        n = dataset if isinstance(dataset, int) else len(dataset)
        if n < 0:
            raise ValueError(f"dataset: expected a non-negative length, got {n}")
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        for index in super().__iter__():
            yield index, sample_seed(self.seed, self.epoch, index)


class SeededDataset(Dataset):
    """Wrap a data set so that item ``(index, seed)`` is drawn under ``torch.manual_seed(seed)``.

    The source item and ``transform`` both run under the seed, inside
    :func:`torch.random.fork_rng`, so the global random state is the same afterwards (the model's
    own randomness, e.g. dropout, does not depend on the data pipeline). A plain ``int`` key draws
    from the global generator as usual. Only torch's CPU generator is seeded: transforms that use
    Python's ``random`` or NumPy's global generator are not made reproducible by this wrapper.

    Items pass through as they come, ``"available"`` flags included; after ``transform``, the
    images of modalities flagged missing are reset to zeros
    (:func:`~mmfusion.data.transforms.zero_unavailable`).

    Args:
        dataset: Any map-style data set (``len`` and ``[index]``).
        transform: Optional callable applied to the item, under the same seed.
        return_index: Add ``"index"`` (the source index) to each item, which must then be a
            mapping; with a padded :class:`SeededSampler` it tells repeats apart in evaluation.
    """

    def __init__(
        self,
        dataset: Any,
        transform: Callable[[Any], Any] | None = None,
        *,
        return_index: bool = False,
    ) -> None:
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                f"dataset: expected a map-style data set (len and [index]), got {type(dataset).__name__}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable or None, got {type(transform).__name__}")
        self.dataset = dataset
        self.transform = transform
        self.return_index = return_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, tuple):
            if len(key) != 2 or not all(isinstance(k, (int, np.integer)) for k in key):
                raise TypeError(f"key: expected an index or (index, seed) ints, got {key!r}")
            index, seed = int(key[0]), int(key[1])
            with torch.random.fork_rng(devices=[]):
                # The CPU generator only (what transforms.v2 draws from): torch.manual_seed would
                # also reseed every CUDA generator, which fork_rng(devices=[]) does not restore,
                # and costs ~70x more per sample.
                torch.default_generator.manual_seed(seed)
                item = self._load(index)
        else:
            index = key
            item = self._load(index)
        if self.return_index:
            if not isinstance(item, Mapping):
                raise TypeError(
                    f"return_index: items must be mappings to add 'index', got {type(item).__name__}"
                )
            item = {**item, "index": int(index)}
        return item

    def _load(self, index: int) -> Any:
        item = self.dataset[index]
        if self.transform is None:
            return item
        item = self.transform(item)
        return zero_unavailable(item) if isinstance(item, Mapping) else item
