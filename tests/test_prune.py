"""The pruning engine: real removal, exact counts, equivalence, the Torch-Pruning gaps, save/load."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from medprune.compress import (keep_count, list_criteria, load_model, prune_channels, prune_model, save_model)
from medprune.compress.importance import create_criterion
from medprune.errors import CheckpointError, PruningError
from medprune.models import create_model, list_models


def _plain_tp(model: nn.Module, x, ignored) -> nn.Module:
    """Torch-Pruning 1.6.1 with its defaults, as a user would call it."""
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=ignored)
    pruner.step()
    return model


def _tiny(name: str) -> tuple[nn.Module, torch.Tensor]:
    kwargs = {"num_classes": 3, "in_chans": 1}
    if name.startswith("inception"):
        kwargs["width"] = 0.125
    model = create_model(name, **kwargs)
    size = model.min_input_size[1:] if name.startswith("inception") else (32, 32)
    return model, torch.randn(2, 1, *size)


def _batches(x: torch.Tensor, k: int = 3, n: int = 2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(x.shape, generator=g), torch.arange(x.shape[0]) % k) for _ in range(n)]


# --------------------------------------------------------------------------- widths
def test_keep_count_rounds_to_multiples_and_never_empties():
    assert keep_count(64, 0.5) == 32
    assert keep_count(64, 0.7) == 16  # 19.2 -> nearest multiple of 8
    assert keep_count(64, 0.3) == 48  # 44.8 -> 48
    assert keep_count(6, 0.5) == 3  # fewer channels than round_to: exact
    assert keep_count(10, 0.99) == 8  # never below one multiple
    assert keep_count(3, 0.9, round_to=None) == 1  # never empty
    assert keep_count(100, 0.99, round_to=None, max_layer_ratio=0.9) == 10
    with pytest.raises(PruningError):
        keep_count(8, 1.0)


# --------------------------------------------------------------------------- every model × every criterion
@pytest.mark.slow
@pytest.mark.parametrize("criterion", list_criteria())
@pytest.mark.parametrize("name", list_models("classification"))
def test_every_model_prunes_with_every_criterion_and_exports(name, criterion, tmp_path):
    from medprune.compress.export import export_onnx

    torch.manual_seed(0)
    model, x = _tiny(name)
    model.train()
    crit = create_criterion(criterion)
    result = prune_model(model, x, criterion=crit, ratio=0.5, calibration=_batches(x) if crit.data_driven else None)
    assert result.macs_after < result.macs_before
    assert result.params_after < result.params_before
    assert model.training  # back in the mode it came in
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        assert logits.shape == (2, 3)
        sum(o.sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        model.zero_grad(set_to_none=True)
    exported = export_onnx(model, x[:1], tmp_path / "m.onnx")
    assert exported.passed and exported.max_abs_diff < 1e-3


# --------------------------------------------------------------------------- exactness
def test_removing_channels_whose_output_is_zero_leaves_outputs_unchanged():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_chans=1, width=0.5).eval()
    x = torch.randn(4, 1, 32, 32)
    conv, bn = model.features[0][0][0], model.features[0][0][1]
    dead = [1, 4, 7]
    with torch.no_grad():
        conv.weight[dead] = 0.0
        bn.running_mean[dead] = 0.0
        bn.bias[dead] = 0.0  # BN(0) = 0, ReLU(0) = 0: these channels emit exactly zero
    before = model(x)
    result = prune_channels(model, x, {"features.0.0.0": dead})
    assert conv.out_channels == 16 - 3 and model.features[0][1][0].in_channels == 13
    assert result.removed == {"features.0.0.0": dead}
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_exact_channel_counts_in_a_concat_heavy_model():
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=2, in_chans=1, width=0.25)
    x = torch.randn(2, 1, 75, 75)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    prune_model(model, x, criterion="l1", ratio=0.5, round_to=8)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name != "Conv2d_1a_3x3.conv":
            assert m.out_channels == keep_count(widths[name], 0.5, round_to=8), name
    assert model.Conv2d_1a_3x3.conv.out_channels == widths["Conv2d_1a_3x3.conv"]  # first conv protected
    # a block's consumers see exactly the concatenation of its four branches
    b = model.Mixed_5b
    concat = b.branch1x1.conv.out_channels + b.branch5x5_2.conv.out_channels + \
        b.branch3x3dbl_3.conv.out_channels + b.branch_pool.conv.out_channels
    assert model.Mixed_5c.branch1x1.conv.in_channels == concat
    assert model.fc.in_features == sum(getattr(model.Mixed_7c, n).conv.out_channels for n in
                                       ("branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a",
                                        "branch3x3dbl_3b", "branch_pool"))


def test_global_and_per_layer_ratios_and_protection():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2, in_chans=1)
    x = torch.randn(2, 1, 32, 32)
    result = prune_model(model, x, criterion="l2", ratio=0.5, layer_ratios={"features.3.*": 0.25},
                         protect=["first_conv", "features.1.0.0"], round_to=None)
    kept = result.kept
    assert kept["features.0.0.0"] == (32, 32)  # first conv
    assert kept["features.1.0.0"] == (64, 64)  # protected by name
    assert kept["features.3.0.0"] == (256, 192)  # own ratio
    assert kept["features.2.0.0"] == (128, 64)
    assert kept["fc"] == (2, 2)  # the classifier's outputs are never pruned
    g = create_model("small_cnn", num_classes=2, in_chans=1)
    res_g = prune_model(g, x, criterion="l2", ratio=0.5, global_pruning=True, round_to=None)
    total_before = sum(b for n, (b, a) in res_g.kept.items() if n != "fc" and n != "features.0.0.0")
    total_after = sum(a for n, (b, a) in res_g.kept.items() if n != "fc" and n != "features.0.0.0")
    assert abs(total_after / total_before - 0.5) < 0.02
    with pytest.raises(PruningError, match="matches no conv"):
        prune_model(create_model("small_cnn", num_classes=2, in_chans=1), x, protect=["nonexistent.*"])


def test_data_driven_criterion_without_calibration_names_the_fix():
    model, x = _tiny("small_cnn")
    with pytest.raises(PruningError, match="calibration"):
        prune_model(model, x, criterion="beta_rank")


# --------------------------------------------------------------------------- Torch-Pruning gaps (DESIGN §4)
def _unet():
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    # MONAI's default: InstanceNorm(affine) followed by LeakyReLU(inplace=True)
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(8, 8, 16, 32, 64, 8))


def test_gap1_instancenorm_inplace_unet():
    x = torch.randn(2, 1, 32, 32)
    plain = _unet()
    with pytest.raises(TypeError):  # plain Torch-Pruning crashes on the concatenated skips
        _plain_tp(plain, x, [plain.final_conv])
    model = _unet()
    inplace_before = sum(getattr(m, "inplace", False) is True for m in model.modules())
    result = prune_model(model, x, criterion="l2", ratio=0.5, round_to=None)
    assert result.macs_reduction > 2.5
    assert sum(getattr(m, "inplace", False) is True for m in model.modules()) == inplace_before
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {m.num_features for m in norms} <= {m.out_channels for m in convs}
    model.eval()
    assert model(x).shape == (2, 2, 32, 32)


def test_gap2_train_only_branch_inception_aux():
    x = torch.randn(2, 1, 299, 299)
    plain = create_model("inception_v3", num_classes=2, in_chans=1, width=0.125, aux_logits=True)
    _plain_tp(plain, x, [plain.fc, plain.AuxLogits.fc])
    plain.train()
    with pytest.raises(RuntimeError):
        plain(x)
    model = create_model("inception_v3", num_classes=2, in_chans=1, width=0.125, aux_logits=True)
    prune_model(model, x, criterion="l2", ratio=0.5)
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 2)


def _frcnn():
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    return FasterRCNN(backbone, num_classes=3, min_size=96, max_size=96)


@pytest.mark.slow
def test_gap3_faster_rcnn_rpn_head_behind_fpn():
    images = [torch.rand(3, 96, 96), torch.rand(3, 96, 96)]
    plain = _frcnn().eval()
    _plain_tp(plain, [images], [plain.roi_heads.box_predictor])
    with pytest.raises(RuntimeError):
        plain(images)
    model = _frcnn().eval()
    result = prune_model(model, images, criterion="l2", ratio=0.5, round_to=None)
    fpn_width = model.backbone.fpn.layer_blocks[0][0].out_channels
    assert fpn_width == 128 and model.rpn.head.conv[0][0].in_channels == fpn_width
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # classes kept
    assert not model.training
    detections = model(images)
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4
    assert result.macs_reduction > 1.5


def test_gap4_mode_and_frozen_parameters_are_restored():
    def net():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
        m[0].weight.requires_grad_(False)
        return m.train()

    x = torch.randn(2, 1, 12, 12)
    plain = net()
    _plain_tp(plain, x, [plain[8]])
    assert not plain.training and plain[0].weight.requires_grad  # the gap
    model = net()
    running = model[1].running_mean.clone()
    prune_model(model, x, ratio=0.5, protect=(), round_to=None)
    assert model.training and not model[0].weight.requires_grad
    assert model[3].weight.requires_grad
    assert model[0].out_channels == 8
    # tracing and the self-check ran the model in train mode; BN statistics are not polluted
    kept = [i for i in range(16) if i < 16]
    assert model[1].running_mean.shape == (8,) and torch.all(torch.isin(model[1].running_mean, running[kept]))


# --------------------------------------------------------------------------- save / load (gap 5)
@pytest.mark.parametrize("name", ["small_cnn", "inception_v3", "resnet56_cifar"])
def test_save_load_round_trip_is_exact(name, tmp_path):
    torch.manual_seed(0)
    model, x = _tiny(name)
    prune_model(model, x, criterion="l1", ratio=0.4)
    model.eval()
    expected = model(x)
    plain = create_model(model.medprune_spec["name"], **model.medprune_spec["kwargs"])
    with pytest.raises(RuntimeError):  # a pruned state_dict does not load into the original class
        plain.load_state_dict(model.state_dict())
    path = save_model(model, tmp_path / "pruned.pt")
    again = load_model(path)
    assert not again.training
    assert torch.equal(again(x), expected)
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["model_spec"]["structure"]


def test_save_model_refuses_a_model_it_cannot_rebuild(tmp_path):
    with pytest.raises(CheckpointError, match="create_model"):
        save_model(nn.Linear(2, 2), tmp_path / "x.pt")
