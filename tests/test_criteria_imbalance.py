"""Imbalance-aware criteria on a layer whose answer is known, checked against hand computation.

The layer is an identity 1×1 convolution followed by ReLU, so its three feature maps are exactly
the three input channels we build:

* ``general``  — active on every image (values in [0.5, 1.5));
* ``minority`` — active only on the minority class's images, zero on the others;
* ``redundant`` — a faint copy of ``general`` (half of it, plus a little noise).

A criterion that protects the minority class must rank ``minority`` above ``redundant``. Every
score below is recomputed by hand (numpy, from the definitions in DESIGN.md §5 as implemented),
and what each criterion does with the minority channel is asserted, so a change of behaviour is
a failing test, not a surprise in a benchmark.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medprune.compress.importance import create_criterion
from medprune.errors import ConfigError, PruningError

GENERAL, MINORITY, REDUNDANT = 0, 1, 2


def _model() -> nn.Module:
    m = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.eye(3)[:, :, None, None])
        m[4].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-1.0, 2.0, -0.5]]))
        m[4].bias.zero_()
    return m.eval()


def _batches(seed: int = 0, per_class: int = 4, hw: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two class-balanced batches (label 1 is the minority class)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        xs, ys = [], []
        for label in (0, 1):
            for _ in range(per_class):
                general = 0.5 + torch.rand(hw, hw, generator=g)
                minority = (0.5 + torch.rand(hw, hw, generator=g)) * float(label == 1)
                redundant = 0.5 * general + 0.02 * torch.rand(hw, hw, generator=g)
                xs.append(torch.stack([general, minority, redundant]))
                ys.append(label)
        out.append((torch.stack(xs), torch.tensor(ys)))
    return out


def _maps(batches) -> np.ndarray:
    """Feature maps (channels, values): the identity conv + ReLU passes the inputs through."""
    x = torch.cat([b[0] for b in batches]).double().numpy()
    return np.maximum(x, 0.0).transpose(1, 0, 2, 3).reshape(3, -1)


def _minmax(v: np.ndarray) -> np.ndarray:
    return (v - v.min()) / (v.max() - v.min())


def _scores(name: str, batches, **options) -> np.ndarray:
    model = _model()
    crit = create_criterion(name, **options)
    crit.calibrate(model, batches)
    return crit.layer_scores(model[0]).double().numpy()


# ----------------------------------------------------------------------------- beta_rank


def test_beta_rank_paper_equation_by_hand_ranks_a_faint_copy_first_and_the_minority_channel_last() -> None:
    """β = σ_in / σ_out rewards a small output spread: the faint redundant copy scores highest, and the
    minority channel — idle on half of the balanced calibration images, so its spread is the largest —
    scores lowest. Per class it is no better: on the majority class its output is constant (scored 0)."""
    batches = _batches()
    maps = _maps(batches)
    sigma_in = maps.reshape(-1).std()  # every input value the filter reads (all channels of a 1×1 conv)
    sigma_out = maps.std(axis=1)
    expected = _minmax(1.0 * sigma_in / sigma_out)  # L1 of each identity filter is 1
    got = _scores("beta_rank", batches)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[REDUNDANT] == pytest.approx(1.0) and got[MINORITY] == pytest.approx(0.0)
    per_class = _scores("class_conditional", batches, base="beta_rank", combine="max")
    assert per_class[MINORITY] == pytest.approx(0.0)  # class-conditional scoring cannot rescue this equation


def test_beta_rank_code_variant_by_hand_ranks_the_minority_channel_first() -> None:
    batches = _batches()
    maps = _maps(batches)
    expected = _minmax(maps.std(axis=1) / maps.reshape(-1).std())
    got = _scores("beta_rank", batches, variant="code")
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.argmax(got) == MINORITY and np.argmin(got) == REDUNDANT


# ----------------------------------------------------------------------------- information capacity / independence


def _entropy_by_hand(batches, bins: int = 32) -> np.ndarray:
    first = _maps(batches[:1])
    lo, hi = first.min(), first.max()
    pad = 0.25 * (hi - lo)
    low, width = lo - pad, (hi - lo) + 2 * pad
    maps = _maps(batches)
    idx = np.clip(np.floor((maps - low) / width * bins), 0, bins - 1).astype(int)
    out = []
    for row in idx:
        p = np.bincount(row, minlength=bins) / row.size
        p = p[p > 0]
        out.append(-(p * np.log2(p)).sum())
    return np.array(out)


def _independence_by_hand(batches) -> np.ndarray:
    corr = np.corrcoef(_maps(batches))
    corr = np.nan_to_num(corr, nan=1.0)
    return 1.0 - (np.abs(corr).sum(1) - np.abs(np.diag(corr))) / 2


def test_info_capacity_by_hand_nearly_loses_the_minority_channel_pooled() -> None:
    batches = _batches()
    expected = _minmax(_entropy_by_hand(batches))
    got = _scores("info_capacity", batches)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # half of its values are the ReLU's zeros: barely above the faint copy, far below the general channel
    assert got[GENERAL] == pytest.approx(1.0) and got[MINORITY] < 0.1


def test_info_independence_by_hand_ranks_the_minority_channel_first() -> None:
    batches = _batches()
    expected = _minmax(_independence_by_hand(batches))
    got = _scores("info_independence", batches)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.argmax(got) == MINORITY


def test_capacity_independence_is_the_sum_of_the_normalised_parts() -> None:
    batches = _batches()
    for lam in (0.0, 1.0, 2.5):
        expected = _minmax(_entropy_by_hand(batches)) + lam * _minmax(_independence_by_hand(batches))
        np.testing.assert_allclose(_scores("capacity_independence", batches, lam=lam), expected, atol=1e-6)


# ----------------------------------------------------------------------------- class-conditional scoring


@pytest.mark.parametrize("base", ["info_capacity", "capacity_independence", "taylor", "beta_rank"])
@pytest.mark.parametrize("combine", ["max", "mean", "worst_class_weighted"])
def test_class_conditional_combines_per_class_scores_by_its_rule(base: str, combine: str) -> None:
    """Scores equal the base criterion calibrated on each class's images alone, min-max normalised within the
    layer, combined by the rule; worst_class_weighted weighs each class by the model's mean cross-entropy on it."""
    batches = _batches()
    model = _model()
    per_class = {}
    for k in (0, 1):
        alone = [(x[y == k], y[y == k]) for x, y in batches]
        crit = create_criterion(base)
        crit.calibrate(model, alone)
        per_class[k] = _minmax(crit.layer_scores(model[0]).double().numpy())
    stacked = np.stack([per_class[0], per_class[1]])
    if combine == "max":
        expected = stacked.max(0)
    elif combine == "mean":
        expected = stacked.mean(0)
    else:
        with torch.no_grad():
            x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
            ce = nn.functional.cross_entropy(model(x), y, reduction="none").double().numpy()
        loss = np.array([ce[y.numpy() == k].mean() for k in (0, 1)])
        expected = (loss / loss.sum()) @ stacked
    got = _scores("class_conditional", batches, base=base, combine=combine)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("base", ["info_capacity", "capacity_independence", "taylor"])
def test_class_conditional_max_keeps_the_minority_channel_at_the_top(base: str) -> None:
    """The channel vital to the minority class scores 1 (its class's best) and above the faint copy."""
    got = _scores("class_conditional", _batches(), base=base, combine="max")
    assert got[MINORITY] == pytest.approx(1.0) and got[MINORITY] > got[REDUNDANT]


def test_class_conditional_refuses_what_it_cannot_score() -> None:
    with pytest.raises(ConfigError, match="data-free"):
        create_criterion("class_conditional", base="l1")
    with pytest.raises(ConfigError, match="did you mean 'beta_rank'"):
        create_criterion("class_conditional", base="beta_rnak")
    with pytest.raises(ConfigError, match="did you mean 'max'"):
        create_criterion("class_conditional", combine="maxx")
    crit = create_criterion("class_conditional", base="info_capacity")
    one_class = [(x[y == 0], y[y == 0]) for x, y in _batches()]
    with pytest.raises(PruningError, match="at least two"):
        crit.calibrate(_model(), one_class)
    probabilities = [(x, torch.rand(x.shape[0], 2)) for x, _ in _batches()]
    with pytest.raises(PruningError, match=r"class-index labels \(N,\) or masks \(N, H, W\)"):
        crit.calibrate(_model(), probabilities)


def test_class_conditional_on_masks_groups_images_by_the_classes_they_contain() -> None:
    """Segmentation: an image is in class k's group when k appears in its mask."""
    model = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.ReLU(), nn.Conv2d(3, 2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3)[:, :, None, None])
    batches = []
    for x, y in _batches():
        masks = torch.zeros(x.shape[0], 4, 4, dtype=torch.long)
        masks[y == 1, 1:3, 1:3] = 1  # the minority images hold a lesion; every image holds background
        batches.append((x, masks))
    crit = create_criterion("class_conditional", base="info_capacity", combine="max")
    crit.calibrate(model.eval(), batches)
    lesion_only = [(x[(m == 1).flatten(1).any(1)], m[(m == 1).flatten(1).any(1)]) for x, m in batches]
    alone = create_criterion("info_capacity")
    alone.calibrate(model, lesion_only)
    np.testing.assert_allclose(crit.class_scores(model[0])[1].numpy(), alone.layer_scores(model[0]).double().numpy(),
                               atol=1e-6)
    assert crit.layer_scores(model[0])[MINORITY] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- selectivity


def test_mean_activation_and_channel_selectivity_by_hand() -> None:
    from medprune.compress.importance import channel_selectivity

    batches = _batches()
    maps = _maps(batches)
    np.testing.assert_allclose(_scores("mean_activation", batches), maps.mean(axis=1), rtol=1e-6)
    x = torch.cat([b[0] for b in batches]).double().numpy()
    y = torch.cat([b[1] for b in batches]).numpy()
    mine = np.maximum(x[y == 1], 0).mean(axis=(0, 2, 3))
    rest = np.maximum(x[y == 0], 0).mean(axis=(0, 2, 3))
    sel = channel_selectivity(_model(), batches, minority=1)["0"].double().numpy()
    np.testing.assert_allclose(sel, (mine - rest) / (np.abs(mine) + np.abs(rest)), atol=1e-6)
    assert sel[MINORITY] == pytest.approx(1.0) and abs(sel[GENERAL]) < 0.05  # fires only on the minority class
    with pytest.raises(PruningError, match="class 3 has no image"):
        channel_selectivity(_model(), batches, minority=3)
