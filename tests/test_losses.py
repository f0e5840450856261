"""ConsistencyLoss (eq. 2) and EnsembleLoss (eq. 1, 3) against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion import ConsistencyLoss, EnsembleLoss


def test_consistency_hand_formula_three_modalities():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 3.0], [1.0, 1.0]])
    c = torch.tensor([[2.0, 2.0], [0.0, 0.0]])
    # |a-b| mean = (1+3+0+0)/4 = 1; |a-c| = (2+2+1+1)/4 = 1.5; |b-c| = (1+1+1+1)/4 = 1
    loss = ConsistencyLoss()({"a": a, "b": b, "c": c})
    assert loss.item() == pytest.approx(3.5)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 4), b=st.integers(1, 4), d=st.integers(1, 6), seed=st.integers(0, 999))
def test_consistency_invariants(m, b, d, seed):
    torch.manual_seed(seed)
    feats = {f"m{i}": torch.randn(b, d) for i in range(m)}
    loss = ConsistencyLoss()(feats)
    expected = sum(
        (feats[i] - feats[j]).abs().mean() for i, j in itertools.combinations(feats, 2)
    ) if m > 1 else torch.tensor(0.0)
    torch.testing.assert_close(loss, torch.as_tensor(expected, dtype=torch.float32))
    reversed_feats = dict(reversed(list(feats.items())))
    torch.testing.assert_close(ConsistencyLoss()(reversed_feats), loss)  # symmetric
    same = {k: feats["m0"] for k in feats}
    assert ConsistencyLoss()(same).item() == 0.0


def test_consistency_ignores_absent_pairs():
    f = {"us": torch.tensor([[0.0], [0.0]]), "swe": torch.tensor([[1.0], [5.0]])}
    avail = {"us": torch.tensor([True, True]), "swe": torch.tensor([True, False])}
    assert ConsistencyLoss()(f, avail).item() == pytest.approx(1.0)
    none = {"us": torch.tensor([False, False]), "swe": torch.tensor([True, True])}
    assert ConsistencyLoss()(f, none).item() == 0.0


def test_consistency_errors():
    with pytest.raises(ValueError, match="same feature size"):
        ConsistencyLoss()({"a": torch.zeros(2, 3), "b": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="same batch size"):
        ConsistencyLoss()({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="non-empty"):
        ConsistencyLoss()({})


def test_ensemble_loss_is_the_sum_of_its_parts():
    torch.manual_seed(0)
    logits = {k: torch.randn(4, 5) for k in ("us", "swe", "joint")}
    feats = {"us": torch.randn(4, 8), "swe": torch.randn(4, 8)}
    y = torch.tensor([0, 1, 4, 2])
    out = EnsembleLoss(alpha=0.2)(logits, y, feats)
    ce = {k: F.cross_entropy(v, y) for k, v in logits.items()}
    lc = (feats["us"] - feats["swe"]).abs().mean()
    for k in ce:
        torch.testing.assert_close(out.components[f"ce_{k}"], ce[k])
    torch.testing.assert_close(out.components["consistency"], lc)
    torch.testing.assert_close(out.total, sum(ce.values()) + 0.2 * lc)


def test_ensemble_loss_uniform_logits():
    out = EnsembleLoss()({"joint": torch.zeros(3, 5)}, torch.tensor([0, 1, 2]))
    assert out.total.item() == pytest.approx(math.log(5))


def test_single_loss_uses_only_the_named_branch():
    logits = {"us": torch.randn(2, 5), "joint": torch.randn(2, 5)}
    y = torch.tensor([1, 2])
    out = EnsembleLoss(alpha=0.0, branches=("joint",))(logits, y)
    assert set(out.components) == {"ce_joint"}
    torch.testing.assert_close(out.total, F.cross_entropy(logits["joint"], y))


def test_ensemble_loss_masks_absent_modality_samples():
    logits = {"us": torch.tensor([[5.0, 0.0], [0.0, 5.0]]), "joint": torch.zeros(2, 2)}
    y = torch.tensor([0, 0])
    avail = {"us": torch.tensor([True, False])}
    out = EnsembleLoss()(logits, y, available=avail)
    torch.testing.assert_close(out.components["ce_us"], F.cross_entropy(logits["us"][:1], y[:1]))


def test_ensemble_loss_bad_labels():
    loss = EnsembleLoss()
    logits = {"joint": torch.zeros(2, 5)}
    with pytest.raises(ValueError, match=r"target: labels must lie in \[0, 5\)"):
        loss(logits, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"target: expected shape \[2\]"):
        loss(logits, torch.tensor([[0, 1]]))
    with pytest.raises(TypeError, match="target: expected an integer tensor"):
        loss(logits, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="missing branch"):
        EnsembleLoss(branches=("us",))(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="alpha"):
        EnsembleLoss(alpha=-1)
