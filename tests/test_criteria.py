"""Channel-importance criteria and class-balanced calibration batches, checked against numbers."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from medprune.compress.calibration import class_balanced_batches
from medprune.compress.importance import Criterion, create_criterion, list_criteria
from medprune.errors import ConfigError, DataError, PruningError, RegistryError


# ---------------------------------------------------------------------------------------- helpers
def _conv(weight: list[list[float]], bias: list[float] | None = None) -> nn.Conv2d:
    """A 1-input-channel conv with kernel (1, k) whose filters are the given rows."""
    w = torch.tensor(weight, dtype=torch.float32)
    conv = nn.Conv2d(1, w.shape[0], (1, w.shape[1]), bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(w.view(w.shape[0], 1, 1, -1))
        if bias is not None:
            conv.bias.copy_(torch.tensor(bias))
    return conv


def _bn(gamma: list[float], beta: list[float]) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(len(gamma))
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    return bn


def _pointwise(weight: np.ndarray, bias: np.ndarray | None = None) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight).float().view(*weight.shape, 1, 1))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias).float())
    return conv


def _minmax(v: np.ndarray) -> np.ndarray:
    return (v - v.min()) / (v.max() - v.min())


def _batch(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x).float(), torch.zeros(x.shape[0], dtype=torch.long)


class ConvBnNet(nn.Module):
    """conv-bn-relu-conv-pool-linear; conv1's group holds conv1 out, bn1 and conv2 in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class ResidualNet(nn.Module):
    """Two convs added: their output channels are coupled in one group."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(2, 3, 1)
        self.head = nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.a(x) + self.b(x))


def _calibration(seed: int = 0, n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def _group(model: nn.Module, layer: nn.Module, n: int, example: torch.Tensor) -> tp.dependency.Group:
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    return dg.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=list(range(n)))


# ---------------------------------------------------------------------------------------- data-free
def test_l1_l2_fpgm_hand_computed() -> None:
    conv = _conv([[1.0, -2.0], [3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(create_criterion("l1").layer_scores(conv), torch.tensor([3.0, 7.0, 0.0]))
    assert torch.allclose(create_criterion("l2").layer_scores(conv), torch.tensor([math.sqrt(5), 5.0, 0.0]))
    d01, d02, d12 = math.sqrt(40), math.sqrt(5), 5.0
    expected = torch.tensor([d01 + d02, d01 + d12, d02 + d12])
    assert torch.allclose(create_criterion("fpgm").layer_scores(conv), expected)

    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
    assert torch.allclose(create_criterion("l1").layer_scores(lin), torch.tensor([2.0, 2.5]))
    # weight criteria do not score BatchNorm; BN criteria do not score convs
    assert create_criterion("l2").layer_scores(nn.BatchNorm2d(3)) is None
    assert create_criterion("bn_scale").layer_scores(conv) is None


def test_bn_scale_and_bn_expectation_closed_form() -> None:
    bn = _bn([-2.0, 0.5, 0.0, 1.0, 0.0], [0.0, 1.0, 0.7, 0.0, -0.3])
    assert torch.allclose(create_criterion("bn_scale").layer_scores(bn), torch.tensor([2.0, 0.5, 0.0, 1.0, 0.0]))

    def expect(gamma: float, beta: float) -> float:
        t = beta / abs(gamma)
        cdf = 0.5 * (1 + math.erf(t / math.sqrt(2)))
        return beta * cdf + abs(gamma) * math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

    expected = torch.tensor([expect(-2, 0), expect(0.5, 1), 0.7, 1 / math.sqrt(2 * math.pi), 0.0])
    scores = create_criterion("bn_expectation").layer_scores(bn)
    assert torch.allclose(scores, expected, atol=1e-6)
    # independently: E[max(0, z)], z ~ N(1, 0.5²), by numerical integration
    z = np.linspace(1 - 10 * 0.5, 1 + 10 * 0.5, 200_001)
    pdf = np.exp(-0.5 * ((z - 1) / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi))
    assert float(scores[1]) == pytest.approx(float(np.sum(np.maximum(z, 0) * pdf) * (z[1] - z[0])), rel=1e-5)


def test_data_free_information_criteria_hand_computed() -> None:
    # layer range [0, 3], 3 bins with edges 1 and 2
    conv = _conv([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    cap = create_criterion("info_capacity", bins=3, data_free=True)
    assert not cap.data_driven
    # entropies: counts [1,1,2] → 1.5 bit, [2,0,2] → 1 bit, [0,4,0] → 0 bit
    assert torch.allclose(cap.layer_scores(conv), torch.tensor([1.0, 2 / 3, 0.0]))

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 6))
    conv = nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
    corr = np.abs(np.corrcoef(w))
    expected = _minmax(1 - (corr.sum(1) - 1) / 3)
    ind = create_criterion("info_independence", data_free=True)
    assert torch.allclose(ind.layer_scores(conv), torch.from_numpy(expected).float(), atol=1e-6)

    fused = create_criterion("capacity_independence", lam=0.5, bins=4, data_free=True).layer_scores(conv)
    cap4 = create_criterion("info_capacity", bins=4, data_free=True).layer_scores(conv)
    assert torch.allclose(fused, cap4 + 0.5 * ind.layer_scores(conv))


# ---------------------------------------------------------------------------------------- taylor
def test_taylor_linear_hand_computed_gradients() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 4))
    x = rng.normal(size=(5, 4))
    y = np.array([0, 2, 1, 2, 0])
    model = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
    crit = create_criterion("taylor")
    crit.calibrate(model, [(torch.from_numpy(x).float(), torch.from_numpy(y))])
    # cross-entropy gradient: dL/dW = (softmax(xWᵀ) − onehot)ᵀ x / N
    logits = x @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]).T @ x / len(x)
    expected = np.abs(w * grad).sum(1)
    assert np.allclose(crit.layer_scores(model).numpy(), expected, rtol=1e-5)
    assert model.weight.grad is None


def _bn_only_signal_model() -> nn.Sequential:
    """conv (zero weights) → BN: the conv's w·∂L/∂w is 0, only γ and β carry Taylor signal."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[1].running_mean.fill_(-1.0)
        model[1].weight.copy_(torch.tensor([0.7, -1.3]))
        model[1].bias.copy_(torch.tensor([0.2, 0.4]))
    return model.eval()


def test_taylor_includes_batchnorm_which_torch_pruning_ignores() -> None:
    model = _bn_only_signal_model()
    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0])
    example = torch.randn(1, 1, 2, 2)
    group = _group(model, model[0], 2, example)

    crit = create_criterion("taylor", reduction="sum")
    crit.calibrate(model, [(x, y)])
    ours = crit(group)

    F.cross_entropy(model(x), y).backward()
    bn = model[1]
    expected = (bn.weight * bn.weight.grad).abs() + (bn.bias * bn.bias.grad).abs()
    assert float(expected.detach().min()) > 0
    assert torch.allclose(ours, expected.detach(), rtol=1e-5)

    # Torch-Pruning 1.6 checks the GroupNorm handler in its BatchNorm branch: restricted to the
    # BatchNorm of this group it finds nothing to score, although γ and β carry all the signal
    theirs = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None, bias=True,
                                                 target_types=[nn.BatchNorm2d])
    assert theirs(group) is None


def test_taylor_restores_frozen_parameters_and_training_mode() -> None:
    model = _bn_only_signal_model().train()
    for p in model.parameters():
        p.requires_grad_(False)
    crit = create_criterion("taylor")
    crit.calibrate(model, [(torch.randn(2, 1, 2, 2), torch.tensor([0, 1]))])
    assert model.training
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert float(crit.layer_scores(model[1]).sum()) > 0
    assert torch.equal(model[1].running_mean, torch.full((2,), -1.0))  # eval mode: BN stats untouched


# ---------------------------------------------------------------------------------------- activation criteria
def test_info_capacity_running_histograms_hand_computed() -> None:
    conv = _pointwise(np.eye(3))  # output = input
    # channel 1 is channel 0 at 1/1000 of the amplitude: it carries the same pattern far more faintly
    b1 = np.array([[0, 3, 5, 8], [0, 0.003, 0.005, 0.008], [0, 0, 8, 8]], dtype=float).reshape(1, 3, 2, 2)
    crit = create_criterion("info_capacity", bins=4)
    crit.calibrate(conv, [_batch(b1)])
    # one range for the layer: [0, 8] widened to [-2, 10], bin edges -2, 1, 4, 7, 10
    # counts [1,1,1,1] → 2 bit, [4,0,0,0] → 0 bit, [2,0,0,2] → 1 bit
    assert torch.allclose(crit.layer_scores(conv), torch.tensor([1.0, 0.0, 0.5]))

    # a second batch is counted into the first batch's bins; out-of-range values land in edge bins
    b2 = np.array([[-20, 20, 2, 2], [0.003] * 4, [8, 8, 8, 8]], dtype=float).reshape(1, 3, 2, 2)
    crit.calibrate(conv, [_batch(b1), _batch(b2)])
    h0 = -(2 * 0.25 * math.log2(0.25) + 3 / 8 * math.log2(3 / 8) + 1 / 8 * math.log2(1 / 8))  # [2,3,1,2]
    h2 = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # [2,0,0,6]
    assert torch.allclose(crit.layer_scores(conv), torch.tensor([1.0, 0.0, h2 / h0]))


def test_info_capacity_is_not_blind_to_amplitude() -> None:
    # a range per channel made a faint copy of a channel (here 1e-3 of it) score as high as the channel
    conv = _pointwise(np.eye(3))
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(4, 1, 5, 5))
    x = np.concatenate([signal, 1e-3 * signal, 0.5 * rng.normal(size=(4, 1, 5, 5))], axis=1)
    crit = create_criterion("info_capacity", bins=16)
    crit.calibrate(conv, [_batch(x)])
    scores = crit.layer_scores(conv)
    assert float(scores[0]) == 1.0 and float(scores[1]) == 0.0
    assert 0.0 < float(scores[2]) < 1.0


class _ConvBnRelu(nn.Module):
    """Identity 1×1 conv → BatchNorm (given γ, β; running mean 0, variance 1, eps 0) → ReLU."""

    def __init__(self, gamma: list[float], beta: list[float], residual: bool = False) -> None:
        super().__init__()
        self.conv = _pointwise(np.eye(len(gamma)))
        self.bn = _bn(gamma, beta).eval()
        self.bn.eps = 0.0
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        if self.residual:
            out += x.flip(1)  # in place, as torchvision's BasicBlock does
        return self.relu(out)


def test_information_criteria_read_the_feature_map_after_bn_and_activation() -> None:
    # channel 1 is driven below zero by its BatchNorm shift: the next layer only ever sees 0 from it
    model = _ConvBnRelu([1.0, 1.0, 1.0], [0.0, -100.0, 0.0])
    x = np.array([[0, 3, 5, 8], [0, 3, 5, 8], [0, 0, 8, 8]], dtype=float).reshape(1, 3, 2, 2)
    cap = create_criterion("info_capacity", bins=4)
    cap.calibrate(model, [_batch(x)])
    # feature maps [0,3,5,8], [0,0,0,0], [0,0,8,8] on the range [-2, 10]: 2, 0 and 1 bit
    assert torch.allclose(cap.layer_scores(model.conv), torch.tensor([1.0, 0.0, 0.5]))
    ind = create_criterion("info_independence")
    ind.calibrate(model, [_batch(x)])
    # the constant channel counts as fully correlated; channels 0 and 2 correlate 0.857 with each other
    assert torch.allclose(ind.layer_scores(model.conv), torch.tensor([1.0, 0.0, 1.0]))
    fused = create_criterion("capacity_independence", lam=1.0, bins=4)
    fused.calibrate(model, [_batch(x)])
    assert torch.allclose(fused.layer_scores(model.conv), torch.tensor([2.0, 0.0, 1.5]))


def test_feature_map_stops_before_an_in_place_residual_addition() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 3, 4, 4))
    model = _ConvBnRelu([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], residual=True)
    crit = create_criterion("capacity_independence", bins=8)
    crit.calibrate(model, [_batch(x)])
    # conv → BN, then `out += ...` changes the tensor in place: the feature map is the BN output (= x)
    plain = _pointwise(np.eye(3))
    ref = create_criterion("capacity_independence", bins=8)
    ref.calibrate(plain, [_batch(x)])
    assert torch.allclose(crit.layer_scores(model.conv), ref.layer_scores(plain))
    # (the block output would score differently)
    after = create_criterion("capacity_independence", bins=8)
    after.calibrate(plain, [_batch(np.maximum(x + x[:, ::-1], 0))])
    assert not torch.allclose(after.layer_scores(plain), ref.layer_scores(plain))


def _random_pointwise_case(seed: int = 0) -> tuple[nn.Conv2d, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=4)
    scale = np.array([1.0, 3.0, 0.5])[None, :, None, None]
    b1, b2 = rng.normal(size=(2, 3, 3, 3)) * scale, rng.normal(size=(5, 3, 3, 3)) * scale + 1.0
    return _pointwise(w, b), w, b, b1, b2


def _numpy_beta_rank(w: np.ndarray, b: np.ndarray, x: np.ndarray, variant: str = "paper") -> np.ndarray:
    out = np.einsum("oc,nchw->nohw", w, x) + b[None, :, None, None]
    sigma_in = x.std()
    sigma_out = out.transpose(1, 0, 2, 3).reshape(len(w), -1).std(1)
    beta = sigma_in / sigma_out if variant == "paper" else sigma_out / sigma_in
    return _minmax(np.abs(w).sum(1) * beta)


def _numpy_independence(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.einsum("oc,nchw->nohw", w, x) + b[None, :, None, None]
    corr = np.abs(np.corrcoef(out.transpose(1, 0, 2, 3).reshape(len(w), -1)))
    return _minmax(1 - (corr.sum(1) - 1) / (len(w) - 1))


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_beta_rank_matches_numpy_over_concatenated_batches(variant: str) -> None:
    conv, w, b, b1, b2 = _random_pointwise_case()
    crit = create_criterion("beta_rank", variant=variant)
    crit.calibrate(conv, [_batch(b1), _batch(b2)])
    both = crit.layer_scores(conv)
    expected = _numpy_beta_rank(w, b, np.concatenate([b1, b2]), variant)
    assert np.allclose(both.numpy(), expected, atol=1e-5)
    crit.calibrate(conv, [_batch(b1)])
    assert not np.allclose(crit.layer_scores(conv).numpy(), expected, atol=1e-3)
    assert np.allclose(crit.layer_scores(conv).numpy(), _numpy_beta_rank(w, b, b1, variant), atol=1e-5)


def test_beta_rank_grouped_conv_uses_each_groups_input() -> None:
    conv = nn.Conv2d(2, 2, 1, groups=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, 1.0]).view(2, 1, 1, 1))
    x = torch.stack([torch.tensor([0.0, 2.0, 0.0, 2.0]), torch.tensor([0.0, 10.0, 0.0, 10.0])]).view(1, 2, 2, 2)
    crit = create_criterion("beta_rank")
    crit.calibrate(conv, [(x, torch.zeros(1, dtype=torch.long))])
    # each filter reads only its own channel: β_i = 1/|w_i|, so L1·β = 1 for both → constant layer
    assert torch.allclose(crit.layer_scores(conv), torch.ones(2))


def test_info_independence_matches_numpy_over_concatenated_batches() -> None:
    conv, w, b, b1, b2 = _random_pointwise_case(3)
    crit = create_criterion("info_independence")
    crit.calibrate(conv, [_batch(b1), _batch(b2)])
    expected = _numpy_independence(w, b, np.concatenate([b1, b2]))
    assert np.allclose(crit.layer_scores(conv).numpy(), expected, atol=1e-5)
    crit.calibrate(conv, [_batch(b1)])
    assert not np.allclose(crit.layer_scores(conv).numpy(), expected, atol=1e-3)


def test_capacity_independence_is_normalised_sum() -> None:
    conv, _, _, b1, b2 = _random_pointwise_case(4)
    batches = [_batch(b1), _batch(b2)]
    scores = {}
    for name, opts in [("capacity_independence", {"lam": 2.0}), ("info_capacity", {}), ("info_independence", {})]:
        crit = create_criterion(name, **opts)
        crit.calibrate(conv, batches)
        scores[name] = crit.layer_scores(conv)
    expected = scores["info_capacity"] + 2.0 * scores["info_independence"]
    assert torch.allclose(scores["capacity_independence"], expected)


def test_taylor_two_batches_equal_their_concatenation() -> None:
    torch.manual_seed(0)
    model = ConvBnNet().eval()
    (x1, y1), (x2, y2) = _calibration(0, 2)
    crit = create_criterion("taylor")
    crit.calibrate(model, [(x1, y1), (x2, y2)])
    both = [crit.layer_scores(m) for m in (model.conv1, model.bn1, model.fc)]
    crit.calibrate(model, [(torch.cat([x1, x2]), torch.cat([y1, y2]))])
    for s, m in zip(both, (model.conv1, model.bn1, model.fc)):
        assert torch.allclose(s, crit.layer_scores(m), rtol=1e-4, atol=1e-7)
    crit.calibrate(model, [(x1, y1)])
    assert not torch.allclose(both[0], crit.layer_scores(model.conv1), rtol=1e-3)


def test_max_batches_limits_calibration() -> None:
    conv, w, b, b1, b2 = _random_pointwise_case()
    crit = create_criterion("beta_rank")
    crit.calibrate(conv, [_batch(b1), _batch(b2)], max_batches=1)
    assert np.allclose(crit.layer_scores(conv).numpy(), _numpy_beta_rank(w, b, b1), atol=1e-5)


# ---------------------------------------------------------------------------------------- group API
def test_group_scores_match_layer_scores() -> None:
    torch.manual_seed(0)
    model = ConvBnNet().eval()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.linspace(-1, 2, 6))
    group = _group(model, model.conv1, 6, torch.randn(1, 3, 6, 6))

    l2 = create_criterion("l2")
    assert torch.allclose(l2(group), l2.layer_scores(model.conv1))  # BN and conv2-in are not scored by l2
    assert torch.allclose(create_criterion("bn_scale")(group), model.bn1.weight.detach().abs())

    taylor = create_criterion("taylor")
    taylor.calibrate(model, _calibration())
    expected = (taylor.layer_scores(model.conv1) + taylor.layer_scores(model.bn1)) / 2
    assert torch.allclose(taylor(group), expected)

    # a subset of root indices gives one score per requested channel
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 6, 6))
    sub = dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[1, 4])
    assert torch.allclose(l2(sub), l2.layer_scores(model.conv1)[[1, 4]])


def test_reduction_over_residual_coupled_convs() -> None:
    torch.manual_seed(0)
    model = ResidualNet()
    group = _group(model, model.a, 3, torch.randn(1, 2, 4, 4))
    a = create_criterion("l1").layer_scores(model.a)
    b = create_criterion("l1").layer_scores(model.b)
    assert not torch.allclose(a, b)
    assert torch.allclose(create_criterion("l1", reduction="mean")(group), (a + b) / 2)
    assert torch.allclose(create_criterion("l1", reduction="max")(group), torch.maximum(a, b))
    assert torch.allclose(create_criterion("l1", reduction="sum")(group), a + b)
    assert create_criterion("bn_scale")(group) is None  # nothing scorable in this group


@pytest.mark.parametrize("name", list_criteria())
def test_every_criterion_scores_a_group(name: str) -> None:
    torch.manual_seed(0)
    model = ConvBnNet().train()
    with torch.no_grad():
        model.bn1.weight.uniform_(-1, 1)
        model.bn1.bias.uniform_(-1, 1)
    crit = create_criterion(name)
    assert isinstance(crit, Criterion) and crit.name == name
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    crit.calibrate(model, _calibration)  # a zero-argument callable is accepted too
    assert model.training
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    assert all(p.grad is None for p in model.parameters())
    for layer, n in [(model.conv1, 6), (model.conv2, 4)]:
        scores = crit(_group(model, layer, n, torch.randn(1, 3, 6, 6)))
        if layer is model.conv2 and not crit.can_score(layer):  # BN criteria: conv2 has no BatchNorm
            assert scores is None
            continue
        assert scores is not None and scores.shape == (n,) and scores.dtype == torch.float32
        assert bool(torch.isfinite(scores).all())
        assert float(scores.max()) > float(scores.min())  # random weights: channels are told apart


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", [n for n in list_criteria() if create_criterion(n).data_driven])
def test_data_driven_criteria_need_calibration(name: str) -> None:
    model = ConvBnNet()
    crit = create_criterion(name)
    with pytest.raises(PruningError, match="calibrat"):
        crit.layer_scores(model.conv1)
    with pytest.raises(PruningError, match="no batches"):
        crit.calibrate(model, [])


def test_stale_statistics_after_pruning_raise() -> None:
    torch.manual_seed(0)
    model = ConvBnNet().eval()
    crit = create_criterion("beta_rank")
    crit.calibrate(model, _calibration())
    _group(model, model.conv1, 6, torch.randn(1, 3, 6, 6))._DG.get_pruning_group(
        model.conv1, tp.prune_conv_out_channels, idxs=[0, 1]).prune()
    with pytest.raises(PruningError, match="conv1.*calibrate again"):
        crit.layer_scores(model.conv1)
    crit.reset()
    with pytest.raises(PruningError, match="calibrate"):
        crit.layer_scores(model.conv2)


def test_bad_names_and_options_suggest_fixes() -> None:
    with pytest.raises(RegistryError, match="did you mean .*'l1'"):
        create_criterion("l3")
    with pytest.raises(ConfigError, match="option 'bin'.*did you mean 'bins'"):
        create_criterion("info_capacity", bin=16)
    with pytest.raises(ConfigError, match="reduction 'meen'.*did you mean 'mean'"):
        create_criterion("l2", reduction="meen")
    with pytest.raises(ConfigError, match="variant"):
        create_criterion("beta_rank", variant="papers")
    with pytest.raises(ConfigError, match="bins"):
        create_criterion("info_capacity", bins=1)


# ---------------------------------------------------------------------------------------- calibration batches
class _ToyDataset(torch.utils.data.Dataset):
    def __init__(self, labels: list[int], with_labels_attr: bool = True) -> None:
        self._labels = labels
        if with_labels_attr:
            self.labels = list(labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return torch.full((1, 2, 2), float(i)), self._labels[i], i


def test_class_balanced_batches_balance_and_repeat() -> None:
    labels = [1] * 10 + [0] * 200  # 1:20 imbalance
    make = class_balanced_batches(_ToyDataset(labels), batch_size=32, num_batches=50, seed=3)
    first = list(make())
    assert len(first) == 50 and first[0][0].shape == (32, 1, 2, 2)
    drawn = torch.cat([y for _, y in first])
    assert abs(float(drawn.float().mean()) - 0.5) < 0.05
    # labels match the drawn images (image value = item index)
    idx = torch.cat([x[:, 0, 0, 0] for x, _ in first]).long()
    assert torch.equal(torch.tensor(labels)[idx], drawn)
    second = list(make())
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    other = list(class_balanced_batches(_ToyDataset(labels), batch_size=32, num_batches=50, seed=4)())
    assert not torch.equal(other[0][0], first[0][0])


def test_class_balanced_batches_read_labels_without_attribute_and_warn_on_missing_class(caplog) -> None:
    ds = _ToyDataset([0, 0, 0, 2], with_labels_attr=False)
    with caplog.at_level(logging.WARNING):
        make = class_balanced_batches(ds, batch_size=8, num_batches=40, num_classes=3)
    assert "class(es) [1]" in caplog.text
    drawn = torch.cat([y for _, y in make()])
    assert set(drawn.tolist()) == {0, 2} and abs(float((drawn == 2).float().mean()) - 0.5) < 0.08


def test_class_balanced_batches_bad_input() -> None:
    with pytest.raises(DataError, match="empty"):
        class_balanced_batches(_ToyDataset([]), batch_size=4, num_batches=2)
    with pytest.raises(DataError, match="sample 1 has label 5"):
        class_balanced_batches(_ToyDataset([0, 5]), batch_size=4, num_batches=2, num_classes=2)


def test_failed_calibration_leaves_no_hooks_or_statistics() -> None:
    model = ConvBnNet().train()
    bad = [(torch.randn(2, 3, 6, 6), torch.zeros(2, dtype=torch.long)), (torch.randn(2, 5, 6, 6), None)]
    crit = create_criterion("info_independence")
    with pytest.raises(RuntimeError):
        crit.calibrate(model, bad)
    assert model.training and all(not m._forward_hooks for m in model.modules())
    with pytest.raises(PruningError, match="calibrate"):
        crit.layer_scores(model.conv1)
