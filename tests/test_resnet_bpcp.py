"""CIFAR ResNets (resnet56_cifar, preresnet56_v2) and the BPCP schedule: sizes, block removal, gates.

Full-size models are only measured (on the meta device); everything that runs uses width ≤ 0.25,
two or three blocks per stage and 8-px inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medprune.compress.context import CompressContext, PruneOptions
from medprune.compress.bpcp import BPCP, BlockGates, remove_gated_blocks, straight_through_gates
from medprune.compress.schedules import create_schedule
from medprune.errors import ConfigError, PruningError
from medprune.models import count_macs, create_model, stage_cost_table
from medprune.models.resnet import BasicBlock, PreActBottleneck

BLOCK_TYPES = (BasicBlock, PreActBottleneck)


def on_meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def small(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **{"num_classes": 3, "width": 0.125, "blocks_per_stage": 3, **kwargs})


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def block_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, BLOCK_TYPES)]


def randomise_bn_stats(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


# ------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize(("name", "params", "macs", "nominal_params", "nominal_macs", "tolerance"), [
    ("resnet56_cifar", 855_770, 125_747_840, 0.85e6, 125e6, 0.03),
    ("preresnet56_v2", 590_426, 87_214_592, 0.56e6, 87e6, 0.08),
])
def test_width_one_sizes_match_the_papers(name: str, params: int, macs: int, nominal_params: float,
                                          nominal_macs: float, tolerance: float) -> None:
    model = on_meta(name, num_classes=10)
    counted = sum(count_macs(model, (3, 32, 32)).values())
    assert n_params(model) == params and counted == macs
    assert abs(params / nominal_params - 1) <= tolerance
    assert abs(macs / nominal_macs - 1) <= tolerance


@pytest.mark.parametrize(("name", "widths", "blocks", "removable"), [
    ("resnet56_cifar", [16, 16, 32, 64], 27, 25),
    ("preresnet56_v2", [16, 64, 128, 256], 18, 15),
])
def test_stage_layout_at_32_px(name: str, widths: list[int], blocks: int, removable: int) -> None:
    model = on_meta(name, num_classes=10)
    rows = stage_cost_table(model, (3, 32, 32))
    assert [(r.name, r.channels, r.height) for r in rows] == [
        ("stem", widths[0], 32), ("stage1", widths[1], 32), ("stage2", widths[2], 16), ("stage3", widths[3], 8),
        ("head", 10, 1)]
    assert len(block_names(model)) == blocks and len(model.residual_blocks()) == removable


def test_blocks_per_stage_builds_resnet20() -> None:
    model = on_meta("resnet56_cifar", num_classes=10, blocks_per_stage=3)
    assert len(block_names(model)) == 9
    assert 0.26e6 < n_params(model) < 0.28e6  # ResNet-20: 0.27 M


@pytest.mark.parametrize("name", ["resnet56_cifar", "preresnet56_v2"])
def test_keep_blocks_removes_exactly_those_blocks_and_keeps_names(name: str) -> None:
    full = small(name)
    mask = [[True, False, True], [True, True, False], [True, False, False]]
    short = small(name, keep_blocks=mask)
    assert block_names(full) == [f"stage{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    assert block_names(short) == ["stage1.0", "stage1.2", "stage2.0", "stage2.1", "stage3.0"]
    assert set(short.state_dict()) < set(full.state_dict())
    assert short.medprune_spec["kwargs"]["keep_blocks"] == mask
    assert short(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    first_block_fixed = name == "preresnet56_v2"  # 16 → 64 channels; resnet56's stage1.0 keeps 16
    assert [n for n, _ in short.residual_blocks()] == ["stage1.0"] * (not first_block_fixed) + ["stage1.2", "stage2.1"]


def test_resnet56_stage1_may_lose_every_block() -> None:
    model = small("resnet56_cifar", keep_blocks=[[False] * 3, [True] * 3, [True] * 3])
    assert len(model.stage1) == 0 and len(block_names(model)) == 6
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize(("name", "mask", "block"), [
    ("resnet56_cifar", [[True] * 3, [False, True, True], [True] * 3], "stage2.0"),
    ("resnet56_cifar", [[True] * 3, [True] * 3, [False, True, True]], "stage3.0"),
    ("preresnet56_v2", [[False, True, True], [True] * 3, [True] * 3], "stage1.0"),
])
def test_removing_a_shape_changing_block_is_a_config_error_naming_it(name: str, mask: list, block: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{name}': keep_blocks\[\d\]\[0\] removes block {block}, which changes"):
        small(name, keep_blocks=mask)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keep_blocks": [[True] * 3, [True] * 3]}, "keep_blocks must be 3 lists of 3 booleans"),
    ({"keep_blocks": [[True] * 3, [True] * 3, [True, "no", True]]}, "keep_blocks must be 3 lists"),
    ({"blocks_per_stage": 0}, "blocks_per_stage must be an integer >= 1"),
])
def test_bad_block_settings_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"'resnet56_cifar': {message}"):
        small("resnet56_cifar", **kwargs)


@pytest.mark.parametrize("name", ["resnet56_cifar", "preresnet56_v2"])
def test_no_pretrained_weights(name: str) -> None:
    with pytest.raises(ConfigError, match="no pretrained weights exist; set pretrained: false"):
        create_model(name, pretrained=True)


@pytest.mark.parametrize("name", ["resnet56_cifar", "preresnet56_v2"])
def test_gate_scales_the_residual_branch(name: str) -> None:
    model = small(name).eval()
    randomise_bn_stats(model)
    block = model.stage2[1]
    x = torch.randn(2, block.conv1.in_channels, 4, 4)
    with torch.no_grad():
        full = block(x)
        block.gate = torch.tensor(0.0)
        off = block(x)
        block.gate = torch.tensor(0.5)
        half = block(x)
    assert torch.allclose(off, F.relu(x) if name == "resnet56_cifar" else x)
    if name == "preresnet56_v2":  # no activation after the sum: exactly linear in the gate
        torch.testing.assert_close(half, (full + x) / 2)


# ------------------------------------------------------------------------------------------ gates
def test_straight_through_gradient_is_dl_dg_times_sigmoid_slope() -> None:
    alpha = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], requires_grad=True)
    g = straight_through_gates(alpha, torch.Generator().manual_seed(0))
    assert set(g.tolist()) <= {0.0, 1.0}
    weights = torch.tensor([0.3, -1.2, 2.0, 0.5, -0.7])
    (g * weights).sum().backward()  # ∂L/∂g = weights
    s = torch.sigmoid(alpha.detach())
    torch.testing.assert_close(alpha.grad, weights * s * (1 - s))


def test_gate_draws_follow_sigmoid_and_the_seed() -> None:
    alpha = torch.tensor([-1.0, 0.0, 2.0])
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack([straight_through_gates(alpha, gen) for _ in range(4000)])
    assert torch.allclose(draws.mean(0), torch.sigmoid(alpha), atol=0.03)
    again = [straight_through_gates(alpha, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(again[0], again[1])


def test_block_gates_sample_in_train_mode_and_penalise_gamma_sum() -> None:
    model = small("preresnet56_v2")
    gates = BlockGates(model, gamma=0.3, seed=1)
    assert [n for n, _ in model.named_parameters() if "bpcp" in n] == ["bpcp_gates.alpha"]
    with torch.no_grad():
        gates.alpha.copy_(torch.tensor([-3.0, 0.2, 1.0, -0.1, 2.0, 0.0]))
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    model.train()
    out = model(x)
    sampled = [b.gate for _, b in model.residual_blocks()]
    assert all(g.item() in (0.0, 1.0) for g in sampled)
    torch.testing.assert_close(gates.extra_loss(None, out, y), 0.3 * sum(sampled))
    # the trainer's loss: the gates' gradient flows through every block to α by the straight-through rule
    loss = F.cross_entropy(out, y) + gates.extra_loss(None, out, y)
    grad_g, grad_alpha = torch.autograd.grad(loss, [gates.last_gates, gates.alpha])
    s = torch.sigmoid(gates.alpha.detach())
    torch.testing.assert_close(grad_alpha, grad_g * s * (1 - s))
    assert grad_g.abs().min() > 0
    gates.after_step(None)
    assert all(b.gate is None for _, b in model.residual_blocks())

    model.eval()
    with torch.no_grad():
        model(x)
    assert [b.gate.item() for _, b in model.residual_blocks()] == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    gates.close()
    assert not model._forward_pre_hooks


def test_block_gates_need_a_residual_registry_model() -> None:
    with pytest.raises(PruningError, match="residual_blocks"):
        BlockGates(create_model("small_cnn", width=0.125))
    model = small("resnet56_cifar")
    BlockGates(model)
    with pytest.raises(PruningError, match="already carries BPCP gates"):
        BlockGates(model)
    with pytest.raises(PruningError, match="carries no BPCP gates"):
        remove_gated_blocks(small("resnet56_cifar"))


@pytest.mark.parametrize("name", ["resnet56_cifar", "preresnet56_v2"])
def test_remove_gated_blocks_equals_the_gated_model_in_eval(name: str) -> None:
    model = small(name, seed=4)
    randomise_bn_stats(model, seed=4)
    gates = BlockGates(model, seed=0)
    names = [n for n, _ in model.residual_blocks()]
    off = {names[0], names[-1], names[len(names) // 2]}
    with torch.no_grad():
        gates.alpha.copy_(torch.tensor([-1.5 if n in off else 0.4 for n in names]))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    model.eval()
    with torch.no_grad():
        gated = model(x)
    short = remove_gated_blocks(model)
    assert not any("bpcp" in k for k in short.state_dict())
    assert set(block_names(short)) == set(block_names(model)) - off
    assert not short.training and not short._forward_pre_hooks
    assert all(b.gate is None for _, b in short.residual_blocks())
    with torch.no_grad():
        torch.testing.assert_close(short(x), gated, rtol=1e-5, atol=1e-5)
    spec = short.medprune_spec
    twin = create_model(spec["name"], **spec["kwargs"])
    assert block_names(twin) == block_names(short) and n_params(twin) == n_params(short)
    assert sum(not k for stage in spec["kwargs"]["keep_blocks"] for k in stage) == len(off)
    # the gated model is left as it was
    assert gates.alpha.shape == (len(names),) and len(block_names(model)) == 9


def test_remove_gated_blocks_rejects_channel_pruned_weights() -> None:
    model = small("resnet56_cifar")
    BlockGates(model)
    model.fc = nn.Linear(model.fc.in_features + 1, 3)
    with pytest.raises(PruningError, match="do not fit its registry architecture"):
        remove_gated_blocks(model)


# ------------------------------------------------------------------------------------------ schedule
def sgd_finetune(steps: int, lr: float, seed: int = 0) -> tuple[list[str], object]:
    """A real training loop on synthetic data, calling the hooks as the Trainer does."""
    tags: list[str] = []
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)

    def finetune(model: nn.Module, epochs: int, hooks: list, tag: str) -> nn.Module:
        tags.append(tag)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        model.train()
        for _ in range(epochs * steps):
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            for hook in hooks:
                loss = loss + hook.extra_loss(None, out, y)
            loss.backward()
            opt.step()
            for hook in hooks:
                hook.after_step(None)
        return model

    return tags, finetune


def test_bpcp_with_a_strong_penalty_switches_blocks_off() -> None:
    model = small("resnet56_cifar", blocks_per_stage=2)
    tags, finetune = sgd_finetune(steps=10, lr=0.2)
    ctx = CompressContext(model=model, example_inputs=torch.randn(2, 3, 8, 8), criterion=None,
                          options=PruneOptions(ratio=0.0), finetune=finetune, finetune_epochs=1)
    out = BPCP(gate_epochs=2, gamma=2.0, seed=0)(ctx)
    assert tags == ["bpcp_gates", "bpcp_finetune"]
    alpha = model.bpcp_gates.alpha.detach()  # the gated model was trained in place
    assert alpha.mean() < -0.5
    event = next(e for e in ctx.events if e["event"] == "bpcp_blocks")
    assert event["removed"] == [n for n, a in zip(model.bpcp_gates.block_names, alpha.tolist()) if a < 0]
    assert len(event["removed"]) >= 2
    assert len(block_names(out)) == len(block_names(model)) - len(event["removed"])
    assert not any("bpcp" in n for n, _ in out.named_parameters())
    assert out.medprune_spec["kwargs"]["keep_blocks"] == event["keep_blocks"]
    assert out(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_bpcp_without_gate_training_keeps_every_block() -> None:
    model = small("preresnet56_v2", blocks_per_stage=2)
    ctx = CompressContext(model=model, example_inputs=torch.randn(2, 3, 8, 8), criterion=None,
                          options=PruneOptions(ratio=0.0))
    out = create_schedule("bpcp", gate_epochs=3)(ctx)
    assert block_names(out) == block_names(model)
    assert ctx.events[0]["removed"] == []


def test_bpcp_channel_step_scores_a_residual_stream_by_the_max_over_its_batchnorms() -> None:
    torch.manual_seed(0)
    model = create_model("preresnet56_v2", num_classes=3, width=0.25, blocks_per_stage=2)
    # stage 1's stream (16 channels) is normalised by stage1.1.bn1 and stage2.0.bn1: channels 0-7 are
    # strong in one of them only (max 1.0, mean 0.5), channels 8-15 moderate in both (max = mean = 0.6)
    a, b = model.stage1[1].bn1, model.stage2[0].bn1
    with torch.no_grad():
        a.weight.copy_(torch.tensor([1.0, 0.0] * 4 + [0.6] * 8))
        b.weight.copy_(torch.tensor([0.0, 1.0] * 4 + [0.6] * 8))
    ctx = CompressContext(model=model, example_inputs=torch.randn(2, 3, 8, 8), criterion=None,
                          options=PruneOptions(ratio=0.5, round_to=None))
    out = BPCP(gate_epochs=0, channel_ratio=0.5)(ctx)
    assert out.stage1[1].bn1.weight.tolist() == [1.0, 0.0] * 4
    assert out.stage2[0].bn1.weight.tolist() == [0.0, 1.0] * 4
    assert out.stage1[0].conv3.out_channels == out.stage1[0].shortcut.out_channels == 8
    assert out.stage1[1].conv3.out_channels == 8
    assert next(e for e in ctx.events if e["event"] == "bpcp_channels")["params_after"] < n_params(
        create_model("preresnet56_v2", num_classes=3, width=0.25, blocks_per_stage=2))


@pytest.mark.parametrize(("options", "key"), [
    ({"gamma": -0.1}, "gamma"), ({"gate_epochs": 1.5}, "gate_epochs"), ({"channel_ratio": 1.0}, "channel_ratio"),
    ({"seed": True}, "seed"),
])
def test_bad_bpcp_options_name_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"schedule 'bpcp': {key} must"):
        create_schedule("bpcp", **options)
