"""Per-sample seeds: SeededSampler, SeededDataset and sample_seed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, DistributedSampler

from mmfusion.data import SeededDataset, SeededSampler, sample_seed, train_transforms


def noisy(x: int) -> float:
    """A "transform" whose output is its random draw (module-level: picklable for workers)."""
    return x + torch.rand(()).item()


def test_sample_seed_is_a_deterministic_31_bit_function_of_its_arguments() -> None:
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50  # no collisions among neighbours
    assert all(0 <= x < 2**31 for x in seeds)
    assert sample_seed(7, 2, 11) == sample_seed(7, 2, 11)
    with pytest.raises(ValueError, match="index: expected a non-negative int, got -1"):
        sample_seed(0, 0, -1)
    with pytest.raises(ValueError, match="epoch: expected a non-negative int, got 1.5"):
        sample_seed(0, 1.5, 0)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), replicas=st.integers(1, 4), seed=st.integers(0, 2**16),
       epoch=st.integers(0, 5), shuffle=st.booleans(), drop_last=st.booleans())
def test_sampler_is_torchs_distributed_sampler_plus_seeds(
    n: int, replicas: int, seed: int, epoch: int, shuffle: bool, drop_last: bool
) -> None:
    for rank in range(replicas):
        ours = SeededSampler(n, seed=seed, shuffle=shuffle, num_replicas=replicas, rank=rank,
                             drop_last=drop_last)
        torchs = DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=shuffle,
                                    seed=seed, drop_last=drop_last)
        ours.set_epoch(epoch)
        torchs.set_epoch(epoch)
        keys = list(ours)
        assert [i for i, _ in keys] == list(torchs) and len(keys) == len(ours)
        assert all(s == sample_seed(seed, epoch, i) for i, s in keys)


def test_sampler_bad_input() -> None:
    with pytest.raises(TypeError, match="dataset: expected a sized data set or a length"):
        SeededSampler(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dataset: expected a non-negative length, got -2"):
        SeededSampler(-2)


def test_seeded_item_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    data = SeededDataset(list(range(10)), transform=noisy)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = data[(3, 99)], data[(3, 99)]
    assert a == b and data[(3, 100)] != a
    assert torch.equal(torch.get_rng_state(), state)  # forked and restored
    data[3]  # a plain index draws from the global generator, like torchvision
    assert not torch.equal(torch.get_rng_state(), state)


def test_augmentation_does_not_depend_on_the_workers() -> None:
    gen = torch.Generator().manual_seed(0)
    images = [
        {"us": torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8, generator=gen),
         "swe": torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8, generator=gen),
         "label": i % 5}
        for i in range(12)
    ]
    data = SeededDataset(images, train_transforms(32, max_shift=6), return_index=True)
    sampler = SeededSampler(data, seed=5)
    sampler.set_epoch(3)

    def epoch(workers: int) -> list[dict]:
        torch.manual_seed(workers)  # the global state must not matter
        loader = DataLoader(data, batch_size=5, sampler=sampler, num_workers=workers)
        return list(loader)

    alone, pooled = epoch(0), epoch(2)
    assert len(alone) == len(pooled) == 3
    for x, y in zip(alone, pooled, strict=True):
        assert torch.equal(x["index"], y["index"])
        for m in ("us", "swe"):
            assert torch.equal(x[m], y[m])
    sampler.set_epoch(4)
    other = list(DataLoader(data, batch_size=5, sampler=sampler))
    assert not all(torch.equal(x["us"], y["us"]) for x, y in zip(alone, other, strict=True))


def test_return_index_and_bad_keys() -> None:
    data = SeededDataset([{"x": 1}, {"x": 2}], return_index=True)
    assert data[(1, 0)] == {"x": 2, "index": 1} and data[0] == {"x": 1, "index": 0}
    with pytest.raises(TypeError, match=r"key: expected an index or \(index, seed\) ints, got \(1,\)"):
        data[(1,)]
    with pytest.raises(TypeError, match="return_index: items must be mappings"):
        SeededDataset([1, 2], return_index=True)[(0, 0)]
    with pytest.raises(TypeError, match="dataset: expected a map-style data set"):
        SeededDataset(iter([1, 2]))
    with pytest.raises(TypeError, match="transform: expected a callable or None, got int"):
        SeededDataset([1], transform=3)  # type: ignore[arg-type]
