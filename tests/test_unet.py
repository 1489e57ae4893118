"""Segmentation models (MONAI's U-Nets): sizes, pruning with every criterion, save/load, ONNX, fine-tuning.

Parametrized over ``list_models("segmentation")``, so a segmentation model is tested the moment it
is registered. Tiny widths (0.25) and 32-px inputs on a synthetic phantom (discs and squares);
nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medprune.compress import (create_criterion, keep_count, list_criteria, load_model, prune_model, save_model,
                               self_check)
from medprune.compress.export import export_onnx
from medprune.errors import ConfigError, PruningError
from medprune.models import (create_model, list_models, list_poolings, model_input_multiple, model_min_input_size,
                             model_task, replace_pooling)
from medprune.models.pooling import HybridWaveletPool2d, downsampling_pools

SEG_MODELS = list_models("segmentation")
K = 3  # classes
SIZE = 32
#: One layer per model whose width is known exactly after pruning at 0.5 (width 0.25, round_to=None).
HALVED = {"basic_unet": ("down_2.convs.conv_0.conv", 16, 8), "unet": ("model.1.submodule.0.conv.unit0.conv", 8, 4)}
#: Downsampling pools that replace_pooling swaps.
POOLS = {"basic_unet": 4, "unet": 0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: a second thread only adds OpenMP synchronisation, which a busy shared CPU makes very slow
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **{"num_classes": K, "in_chans": 1, "width": 0.25, **kwargs})


def phantom(n: int, size: int = SIZE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic segmentation phantom: a bright disc (class 1) and a dark square (class 2) on noise.

    Returns images ``(n, 1, size, size)`` and masks ``(n, size, size)`` (int64).
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    side = size // 4
    for i in range(n):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=g).tolist()
        masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2] = 1
        sy, sx = torch.randint(0, size - side, (2,), generator=g).tolist()
        masks[i, sy:sy + side, sx:sx + side] = 2
    images = 0.3 * torch.randn(n, 1, size, size, generator=g)
    images += (masks == 1).unsqueeze(1).float() - (masks == 2).unsqueeze(1).float()
    return images, masks


def calibration(n_batches: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [phantom(2, seed=10 + i) for i in range(n_batches)]


def convs(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}


def _true_to_size(model: nn.Module, h: int, w: int) -> bool:
    """Whether the model runs on ``(1, C, h, w)`` and returns logits of that very size."""
    with torch.no_grad():
        try:
            out = model(torch.zeros(1, model.min_input_size[0], h, w))
        except (RuntimeError, ValueError):  # InstanceNorm refuses a 1 × 1 map with a ValueError
            return False
    return tuple(out.shape) == (1, K, h, w)


def _skip_widths(model: nn.Module) -> list[tuple[int, int]]:
    """Per skip concatenation: (input width of the layer reading it, sum of the widths concatenated)."""

    def first(m: nn.Module) -> nn.Module:
        return next(iter(convs(m).values()))

    def last(m: nn.Module) -> nn.Module:
        return list(convs(m).values())[-1]

    pairs = []
    if type(model).__name__ == "BasicUNet":  # UpCat: cat([encoder map, upsampled map]) -> convs
        for up, skip in (("upcat_4", "down_3"), ("upcat_3", "down_2"), ("upcat_2", "down_1"), ("upcat_1", "conv_0")):
            block = model.get_submodule(up)
            pairs.append((block.convs.conv_0.conv.in_channels,
                          last(model.get_submodule(skip)).out_channels + block.upsample.deconv.out_channels))
    for m in model.modules():  # UNet: Sequential(down, SkipConnection(sub), up), up reads cat([down, sub])
        if isinstance(m, nn.Sequential) and len(m) == 3 and type(m[1]).__name__ == "SkipConnection":
            pairs.append((first(m[2]).in_channels, last(m[0]).out_channels + last(m[1].submodule).out_channels))
    return pairs


def _norms_follow_convs(model: nn.Module) -> list[tuple[int, int]]:
    """(conv out channels, norm features) of every MONAI Convolution block with a normalisation."""
    return [(m.conv.out_channels, m.adn.N.num_features) for m in model.modules()
            if hasattr(m, "conv") and isinstance(getattr(getattr(m, "adn", None), "N", None), nn.InstanceNorm2d)]


# --------------------------------------------------------------------------- registry, shapes, sizes
def test_registry_lists_the_unets_as_segmentation_models() -> None:
    assert {"basic_unet", "unet"} <= set(SEG_MODELS)
    assert not set(SEG_MODELS) & set(list_models("classification"))
    assert all(model_task(n) == "segmentation" for n in SEG_MODELS)
    assert model_min_input_size("basic_unet") == model_min_input_size("unet") == (32, 32)
    assert model_input_multiple("basic_unet") == 1 and model_input_multiple("unet") == 16
    assert model_input_multiple("small_cnn") == 1  # the default for every other model


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", SEG_MODELS)
def test_logits_per_pixel_and_every_parameter_gets_a_gradient(name: str, in_chans: int) -> None:
    model = tiny(name, in_chans=in_chans)
    assert model.default_input_size[0] == model.min_input_size[0] == in_chans
    x = torch.randn(2, in_chans, 48, 64, generator=torch.Generator().manual_seed(1))  # not square
    model.train()
    out = model(x)
    assert out.shape == (2, K, 48, 64)
    F.cross_entropy(out, torch.randint(0, K, (2, 48, 64), generator=torch.Generator().manual_seed(2))).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, K, 48, 64)


@pytest.mark.parametrize("name", SEG_MODELS)
def test_min_input_size_and_multiple_are_the_sizes_that_work(name: str) -> None:
    model = tiny(name).eval()
    c, h, w = model.min_input_size
    assert (h, w) == model_min_input_size(name) and model.input_multiple == model_input_multiple(name)
    step = model.input_multiple
    assert _true_to_size(model, h, w) and _true_to_size(model, h + step, w + 2 * step)
    assert not _true_to_size(model, h - 1, w - 1)  # unet even runs at 31 px, but answers with 32 × 32 logits
    if step > 1:
        assert not _true_to_size(model, h + step // 2, w) and not _true_to_size(model, h + 1, w)
    else:
        assert _true_to_size(model, h + 1, w + 3)  # odd sizes too


@pytest.mark.parametrize("name", SEG_MODELS)
def test_spec_rebuilds_the_same_model(name: str) -> None:
    model = tiny(name, seed=7, drop_rate=0.1).eval()
    spec = model.medprune_spec
    assert spec["name"] == name and spec["kwargs"]["width"] == 0.25 and spec["kwargs"]["drop_rate"] == 0.1
    torch.manual_seed(7)
    twin = create_model(spec["name"], **spec["kwargs"]).eval()
    x, _ = phantom(2)
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))


def test_registry_models_compute_what_monai_builds() -> None:
    from monai.networks.nets import BasicUNet, UNet

    x, _ = phantom(2)
    torch.manual_seed(3)
    ref = BasicUNet(spatial_dims=2, in_channels=1, out_channels=K, features=(8, 8, 16, 32, 64, 8)).eval()
    ours = tiny("basic_unet", seed=3).eval()
    ours.load_state_dict(ref.state_dict())  # same layers, same names
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    # UNet: affine InstanceNorm, and one PReLU slope per channel starting at MONAI's shared 0.25
    torch.manual_seed(4)
    ref = UNet(spatial_dims=2, in_channels=1, out_channels=K, channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2),
               num_res_units=2, norm=("instance", {"affine": True})).eval()
    ours = tiny("unet", seed=4).eval()
    prelus = [m for m in ours.modules() if isinstance(m, nn.PReLU)]
    assert prelus and all(m.num_parameters > 1 and torch.all(m.weight == 0.25) for m in prelus)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("name", SEG_MODELS)
def test_pretrained_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"model '{name}': no pretrained weights exist.*pretrained: false"):
        create_model(name, pretrained=True)


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("unet", {"num_res_units": -1}, "num_res_units must be an integer >= 0"),
    ("unet", {"num_res_units": 1.5}, "num_res_units must be an integer >= 0"),
    ("basic_unet", {"width": 0.01}, r"width 0.01 leaves 1 channel\(s\) in a decoder level"),
    ("basic_unet", {"drop_rate": 1.0}, "drop_rate must be in"),
])
def test_bad_arguments_are_config_errors_naming_them(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"model '{name}': {message}"):
        create_model(name, **kwargs)


def test_unet_without_residual_units_builds_and_prunes() -> None:
    model = tiny("unet", num_res_units=0)
    x, _ = phantom(2)
    result = prune_model(model, x, criterion="l2", ratio=0.5, round_to=None)
    assert result.macs_after < result.macs_before
    assert model(x).shape == (2, K, SIZE, SIZE)


def test_config_refuses_an_image_size_the_unet_cannot_take(tiny_seg_config_dict: dict) -> None:
    from medprune.config import config_from_dict

    tiny_config_dict = tiny_seg_config_dict
    tiny_config_dict["model"] = {"name": "unet", "kwargs": {"width": 0.25}}
    tiny_config_dict["data"]["image_size"] = [48, 64]
    config_from_dict(tiny_config_dict, "ok.yaml")
    tiny_config_dict["data"]["image_size"] = [40, 64]
    with pytest.raises(ConfigError, match=r"x.yaml: data.image_size: unet needs height and width divisible by 16, "
                                          r"got 40x64; e.g. 48x64"):
        config_from_dict(tiny_config_dict, "x.yaml")
    tiny_config_dict["data"]["image_size"] = [16, 16]
    with pytest.raises(ConfigError, match=r"data.image_size: unet needs inputs of at least 32x32 px"):
        config_from_dict(tiny_config_dict, "x.yaml")
    tiny_config_dict["model"]["name"] = "basic_unet"
    tiny_config_dict["data"]["image_size"] = [40, 33]
    config_from_dict(tiny_config_dict, "ok.yaml")


# --------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("criterion", list_criteria())
@pytest.mark.parametrize("name", SEG_MODELS)
def test_every_criterion_prunes_the_unets(name: str, criterion: str) -> None:
    model = tiny(name).train()
    x, masks = phantom(2)
    before = {n: m.out_channels for n, m in convs(model).items()}
    crit = create_criterion(criterion)
    result = prune_model(model, x, criterion=crit, ratio=0.5, round_to=None,
                         calibration=calibration() if crit.data_driven else None)
    assert result.macs_after < 0.8 * result.macs_before and result.params_after < result.params_before
    assert model.training  # back in the mode it came in
    after = {n: m.out_channels for n, m in convs(model).items()}
    assert all(after[n] in (b, keep_count(b, 0.5, round_to=None)) for n, b in before.items())
    assert sum(after[n] < b for n, b in before.items()) >= len(before) // 2
    if name in HALVED:
        layer, width, kept = HALVED[name]
        assert (before[layer], after[layer]) == (width, kept)
    skips = _skip_widths(model)
    assert all(reads == joined for reads, joined in skips) and (name not in HALVED or len(skips) == 4)
    assert all(c == n for c, n in _norms_follow_convs(model))
    self_check(model, x)
    for train in (True, False):
        model.train(train)
        out = model(x)
        assert out.shape == (2, K, SIZE, SIZE)
        F.cross_entropy(out, masks).backward()
        assert all(p.grad is not None for p in model.parameters())
        model.zero_grad(set_to_none=True)


def test_in_place_activation_after_instance_norm_is_pruned_with_its_conv() -> None:
    """DESIGN.md §4 gap 1: MONAI's default InstanceNorm(affine) → LeakyReLU(inplace=True)."""
    model = tiny("basic_unet")
    inplace = [n for n, m in model.named_modules() if getattr(m, "inplace", False) is True]
    assert len(inplace) == 18  # every conv block of BasicUNet
    norms = {n: m.num_features for n, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    x, _ = phantom(2)
    prune_model(model, x, criterion="l1", ratio=0.5, round_to=None)
    assert [n for n, m in model.named_modules() if getattr(m, "inplace", False) is True] == inplace  # restored
    assert model.down_3.convs.conv_1.adn.N.num_features == model.down_3.convs.conv_1.conv.out_channels == 16
    pruned = [n for n, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d) and m.num_features < norms[n]]
    assert len(pruned) == len(norms) - 1  # all but the first block's norm (its conv reads the image)
    assert all(c == n for c, n in _norms_follow_convs(model))


@pytest.mark.parametrize("name", SEG_MODELS)
def test_pruned_unet_saves_loads_and_exports_exactly(name: str, tmp_path: Path) -> None:
    model = tiny(name, drop_rate=0.1)
    x, _ = phantom(2)
    prune_model(model, x, criterion="l1", ratio=0.5)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    again = load_model(save_model(model, tmp_path / "pruned.pt", input_size=(1, SIZE, SIZE)))
    with torch.no_grad():
        assert torch.equal(again(x), expected)
    exported = export_onnx(model, x[:1], tmp_path / "pruned.onnx")
    assert exported.passed and exported.max_abs_diff < 1e-4


@pytest.mark.parametrize("name", SEG_MODELS)
def test_fine_tuning_after_pruning_reduces_the_loss(name: str) -> None:
    model = tiny(name)
    x, masks = phantom(4)
    prune_model(model, x[:2], criterion="taylor", ratio=0.5, round_to=None, calibration=calibration())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # built after pruning (gap 4)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(F.cross_entropy(model(x), masks))

    start = loss()
    model.train()
    for _ in range(8):
        optimizer.zero_grad()
        F.cross_entropy(model(x), masks).backward()
        optimizer.step()
    assert loss() < 0.7 * start


# --------------------------------------------------------------------------- pooling swaps
@pytest.mark.parametrize("name", SEG_MODELS)
def test_pooling_swaps_apply_to_max_pools_only(name: str, tmp_path: Path) -> None:
    model = tiny(name).eval()
    x, _ = phantom(2, size=33 if model.input_multiple == 1 else SIZE)  # odd sizes where the model takes them
    with torch.no_grad():
        before = model(x)
    sites = [n for n, _ in downsampling_pools(model)]
    if name in POOLS:
        assert len(sites) == POOLS[name]
    replace_pooling(model, "wavelet_hybrid", combine="gate")
    assert [n for n, m in model.named_modules() if isinstance(m, HybridWaveletPool2d)] == sites
    assert len(model.medprune_spec.get("transforms", [])) == (1 if sites else 0)
    with torch.no_grad():
        after = model(x)
    assert after.shape == before.shape and torch.equal(after, before) == (not sites)
    prune_model(model, x, criterion="l2", ratio=0.5)
    with torch.no_grad():
        expected = model.eval()(x)
        assert torch.equal(load_model(save_model(model, tmp_path / "m.pt"))(x), expected)


@pytest.mark.parametrize("kind", list_poolings())
def test_every_pooling_kind_keeps_basic_unet_sizes(kind: str) -> None:
    model = tiny("basic_unet").eval()
    replace_pooling(model, kind)
    for h, w in ((32, 32), (33, 47)):
        assert _true_to_size(model, h, w)


# --------------------------------------------------------------------------- criteria on InstanceNorm and masks
def _in_affine(gamma: list[float], beta: list[float]) -> nn.InstanceNorm2d:
    norm = nn.InstanceNorm2d(len(gamma), affine=True)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(gamma))
        norm.bias.copy_(torch.tensor(beta))
    return norm


@pytest.mark.parametrize("criterion", ["bn_scale", "bn_expectation"])
def test_norm_criteria_read_instance_norm_like_batch_norm(criterion: str) -> None:
    gamma, beta = [-2.0, 0.5, 0.0, 1.0], [0.0, 1.0, 0.7, -0.3]
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    crit = create_criterion(criterion)
    scores = crit.layer_scores(_in_affine(gamma, beta))
    assert torch.equal(scores, crit.layer_scores(bn))
    if criterion == "bn_scale":
        assert torch.equal(scores, torch.tensor([2.0, 0.5, 0.0, 1.0]))


@pytest.mark.parametrize("criterion", ["bn_scale", "bn_expectation"])
def test_norm_criteria_refuse_instance_norm_without_affine(criterion: str) -> None:
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    model = BasicUNet(spatial_dims=2, in_channels=1, out_channels=K, features=(8, 8, 16, 32, 64, 8),
                      norm=("instance", {"affine": False}))
    x, _ = phantom(2)
    with pytest.raises(PruningError, match=rf"criterion '{criterion}' .* [\w.]+\.adn\.N \(InstanceNorm2d\) "
                                           r"has none \(affine=False\).*\(l1, l2, fpgm, taylor\)"):
        prune_model(model, x, criterion=criterion, ratio=0.5)
    assert prune_model(model, x, criterion="l2", ratio=0.5, round_to=None).macs_reduction > 2.5  # l2 still applies


def test_feature_maps_are_read_after_instance_norm_dropout_and_in_place_activation() -> None:
    def net(beta: list[float]) -> nn.Sequential:  # MONAI's block: conv → norm → dropout → activation
        conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        return nn.Sequential(conv, _in_affine([1.0, 1.0, 1.0], beta), nn.Dropout(0.5), nn.ReLU(inplace=True))

    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(4, 6, 6, dtype=torch.int64)
    block = net([0.0, -100.0, 0.0])  # channel 1 is driven below zero: the next layer only ever sees 0 from it
    crit = create_criterion("info_capacity", bins=8)
    crit.calibrate(block, [(x, labels)])
    scores = crit.layer_scores(block[0])
    assert float(scores[1]) == 0.0 and bool((scores[[0, 2]] > 0).all())
    # the same as scoring a plain identity conv fed that feature map
    plain = net([0.0, 0.0, 0.0])[0]
    with torch.no_grad():
        feature_map = torch.relu(F.instance_norm(x) + torch.tensor([0.0, -100.0, 0.0]).view(1, 3, 1, 1))
    ref = create_criterion("info_capacity", bins=8)
    ref.calibrate(plain, [(feature_map, labels)])
    assert torch.allclose(scores, ref.layer_scores(plain))


def test_taylor_uses_per_pixel_cross_entropy_on_masks() -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(2, K, 1)  # per-pixel logits (N, K, H, W)
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    masks = torch.randint(0, K, (3, 5, 5), generator=torch.Generator().manual_seed(2))
    loss = F.cross_entropy(model(x), masks)
    gw, gb = torch.autograd.grad(loss, [model.weight, model.bias])
    expected = (model.weight * gw).detach().abs().flatten(1).sum(1) + (model.bias * gb).detach().abs()
    for labels in (masks, masks.to(torch.uint8)):  # a PNG mask's dtype is read as class indices
        crit = create_criterion("taylor")
        crit.calibrate(model, [(x, labels)])
        assert torch.allclose(crit.layer_scores(model), expected.float(), rtol=1e-5, atol=1e-8)
    crit = create_criterion("taylor")
    with pytest.raises(PruningError, match=r"calibration labels of shape \(3, 1, 5, 5\).*logits \(3, 3, 5, 5\).*"
                                           r"masks \(N, H, W\) — shape \(3, 5, 5\)"):
        crit.calibrate(model, [(x, masks[:, None])])
