"""Issue 24, items 27-28: the phantom ceiling that matches a run (modalities, test class mix)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmfusion.liver import PhantomConfig, bayes_ceiling, phantom_ceilings

COHORT_COUNTS = [int(c) for c in PhantomConfig().stage_prevalence]  # 162, 287, 284, 197, 94


def labels_from_counts(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(5), counts)


def test_cohort_mix_and_both_modalities_give_the_old_joint_ceiling() -> None:
    """The number runner.py used for every run is the right one for exactly this case."""
    got = phantom_ceilings(("us", "swe"), labels_from_counts(COHORT_COUNTS), 0.7)
    assert got["bayes_ceiling_per_view"] == pytest.approx(0.728905, abs=1e-12)
    assert got["accuracy_over_ceiling"] == pytest.approx(0.7 / 0.728905)
    assert got["prior_per_view"]["F0"] == pytest.approx(162 / 1024)
    assert got["bayes_ceiling_per_patient"] is None and got["prior_per_patient"] is None
    json.dumps(got, allow_nan=False)


def test_balanced_paper_split_has_a_higher_ceiling_than_its_accuracy() -> None:
    """The paper protocol's test set: 1,556 pairs per stage; seed 0 reached 0.738."""
    got = phantom_ceilings(("us", "swe"), labels_from_counts([1556] * 5), 0.738)
    assert got["prior_per_view"] == {f"F{c}": 0.2 for c in range(5)}
    assert got["bayes_ceiling_per_view"] == pytest.approx(0.765, abs=0.005)
    assert got["accuracy_over_ceiling"] < 1.0  # 0.738 is below its own ceiling


@pytest.mark.parametrize(
    ("modalities", "swe_input", "latents"),
    [
        (("us",), "frame", ("texture",)),
        (("swe",), "box", ("stiffness",)),
        (("swe",), "box_kpa", ("stiffness",)),
        (("swe",), "frame", ("stiffness", "texture")),  # the frame shows B-mode around the box
        (("swe", "us"), "box", ("stiffness", "texture")),
        (("us", "swe"), "frame", ("stiffness", "texture")),
    ],
)
def test_the_ceiling_follows_the_modalities_and_the_swe_input(
    modalities: tuple[str, ...], swe_input: str, latents: tuple[str, ...]
) -> None:
    labels = labels_from_counts([10, 30, 20, 5, 1])
    got = phantom_ceilings(modalities, labels, 0.5, swe_input=swe_input, n_samples=20_000)
    expected = bayes_ceiling(20_000, per_view=True, latents=latents, prior=[10, 30, 20, 5, 1])
    assert got["bayes_ceiling_per_view"] == expected
    assert got["latents"] == list(latents) and got["swe_input"] == swe_input


def test_single_modality_ceilings_are_lower_than_the_joint_one() -> None:
    labels = labels_from_counts(COHORT_COUNTS)
    swe = phantom_ceilings(("swe",), labels, 0.5, swe_input="box")["bayes_ceiling_per_view"]
    us = phantom_ceilings(("us",), labels, 0.5)["bayes_ceiling_per_view"]
    both = phantom_ceilings(("us", "swe"), labels, 0.5)["bayes_ceiling_per_view"]
    # the documented per-view values 0.507 / 0.657 / 0.729
    assert swe == pytest.approx(0.507, abs=0.002) and us == pytest.approx(0.657, abs=0.002)
    assert swe < us < both


def test_per_patient_ceiling_uses_the_test_patients_mix() -> None:
    # patients a, b (F0, two and three views) and c (F4, one view): patient mix 2:0:0:0:1
    labels = np.array([0, 0, 0, 0, 0, 4])
    groups = ["a", "a", "b", "b", "b", "c"]
    got = phantom_ceilings(("us", "swe"), labels, 1.0, test_groups=groups, n_samples=20_000)
    assert got["prior_per_patient"] == pytest.approx({"F0": 2 / 3, "F1": 0, "F2": 0, "F3": 0,
                                                      "F4": 1 / 3})
    assert got["prior_per_view"]["F0"] == pytest.approx(5 / 6)
    assert got["bayes_ceiling_per_patient"] == bayes_ceiling(20_000, prior=[2, 0, 0, 0, 1])


def test_bad_input_names_the_argument() -> None:
    labels = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"modalities: expected one or more distinct names"):
        phantom_ceilings(("us", "doppler"), labels, 0.5)
    with pytest.raises(ValueError, match=r"modalities: expected a sequence of names"):
        phantom_ceilings("us", labels, 0.5)
    with pytest.raises(ValueError, match=r"swe_input: expected one of \('frame', 'box'"):
        phantom_ceilings(("swe",), labels, 0.5, swe_input="colour")
    with pytest.raises(ValueError, match=r"test_labels: expected stages 0..4, got values 0..5"):
        phantom_ceilings(("us",), [0, 5], 0.5)
    with pytest.raises(ValueError, match=r"test_labels: expected a non-empty 1-D sequence"):
        phantom_ceilings(("us",), [], 0.5)
    with pytest.raises(ValueError, match=r"accuracy: expected a number in \[0, 1\], got 73.8"):
        phantom_ceilings(("us",), labels, 73.8)
    with pytest.raises(ValueError, match=r"test_groups: patient 'a' has pairs of stages 0 and 1"):
        phantom_ceilings(("us",), labels, 0.5, test_groups=["a", "a", "b"])
    with pytest.raises(ValueError, match=r"test_groups: expected one patient id per test label"):
        phantom_ceilings(("us",), labels, 0.5, test_groups=["a"])
