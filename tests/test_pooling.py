"""Pooling registry and hybrid wavelet pooling: closed forms, PyWavelets parity, sizes, swaps, prune/export/load."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from torch import nn

import medprune
from medprune.compress import load_model, prune_model, save_model
from medprune.compress.export import export_onnx
from medprune.config import config_from_dict
from medprune.workflows.jobs import build_model
from medprune.errors import CheckpointError, ConfigError
from medprune.models import create_model, list_models
from medprune.models.structure import build_from_spec
from medprune.models.pooling import (COMBINES, KEEP, HybridWaveletPool2d, apply_pooling_spec, downsampling_pools,
                                     dwt2, list_poolings, replace_pooling)

#: Downsampling pools of each registry model (a new model is checked against its own pool count).
POOLS = {"small_cnn": 4, "inception_v3": 4, "inception_v4": 4, "inception_mv4": 4, "resnet56_cifar": 0,
         "preresnet56_v2": 0}


def _tiny(name: str) -> tuple[nn.Module, torch.Tensor]:
    kwargs = {"num_classes": 3, "in_chans": 1}
    if name.startswith("inception"):
        kwargs["width"] = 0.125
    if name == "small_cnn":
        kwargs["width"] = 0.25
    model = create_model(name, **kwargs)
    size = model.min_input_size[1:] if name.startswith("inception") else (32, 32)
    return model, torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- the transform
def test_registry_lists_the_poolings():
    assert list_poolings() == ["avg", "max", "wavelet_hybrid"]
    assert medprune.list_poolings() == list_poolings()
    assert medprune.HybridWaveletPool2d is HybridWaveletPool2d


def test_haar_ll_is_twice_the_2x2_mean():
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ll, _ = dwt2(x, "haar")
    assert torch.allclose(ll, 2 * F.avg_pool2d(x, 2), atol=1e-12)
    # avg base + Haar LL, summed: mean + 2 × mean = 3 × the 2×2 mean
    pool = HybridWaveletPool2d(keep="LL", base="avg", combine="sum", kernel_size=2, stride=2).double()
    assert torch.allclose(pool(x), 3 * F.avg_pool2d(x, 2), atol=1e-12)
    # summed Haar subbands: all four = 2 × the top-left pixel of each block, LL + HH = the diagonal
    wave = {keep: HybridWaveletPool2d(keep=keep, combine="sum").double() for keep in ("all", "LL+HH")}
    assert torch.allclose(wave["all"](x) - F.max_pool2d(x, 2), 2 * x[..., ::2, ::2], atol=1e-12)
    assert torch.allclose(wave["LL+HH"](x) - F.max_pool2d(x, 2), x[..., ::2, ::2] + x[..., 1::2, 1::2], atol=1e-12)


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym4"])
@pytest.mark.parametrize("size", [(8, 10), (7, 9), (5, 4), (1, 1)])
def test_dwt2_equals_pywavelets_periodization(wavelet, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ll, (hl, lh, hh) = dwt2(x, wavelet)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), wavelet, mode="periodization")
    assert ll.shape[-2:] == ((size[0] + 1) // 2, (size[1] + 1) // 2)
    for ours, theirs in ((ll, ca), (hl, ch), (lh, cv), (hh, cd)):
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-12)


def test_dwt_is_a_fixed_buffer_not_a_parameter():
    pool = HybridWaveletPool2d(4, wavelet="db2", keep="all", combine="gate")
    assert "filters" in dict(pool.named_buffers())
    assert not pool.filters.requires_grad
    assert [n for n, _ in pool.named_parameters()] == ["gate.weight"]  # only the 4 gate logits learn
    assert list(HybridWaveletPool2d(keep="all", combine="sum").parameters()) == []
    # sum/mean/gate sum the kept subbands into one filter; concat keeps them apart
    assert tuple(pool.filters.shape) == (1, 1, 4, 4)
    assert tuple(HybridWaveletPool2d(4, keep="LL+HH", combine="concat").filters.shape) == (2, 1, 2, 2)


_GEOMETRIES = [  # kernel, padding, ceil_mode: Inception 3×3/2 valid, 2×2/2, ResNet-style 3×3/2 pad 1, ceil modes
    (3, 0, False), (2, 0, False), (3, 1, False), (2, 0, True), (3, 0, True)]


@pytest.mark.parametrize("keep", list(KEEP))
@pytest.mark.parametrize("combine", COMBINES)
def test_output_size_equals_the_replaced_pooling(combine, keep):
    g = torch.Generator().manual_seed(3)
    for kernel, padding, ceil_mode in _GEOMETRIES:
        for base in ("max", "avg"):
            ref = (nn.MaxPool2d if base == "max" else nn.AvgPool2d)(kernel, 2, padding, ceil_mode=ceil_mode)
            pool = HybridWaveletPool2d(3, wavelet="db2", keep=keep, base=base, combine=combine,
                                       kernel_size=kernel, stride=2, padding=padding, ceil_mode=ceil_mode)
            for h, w in ((35, 35), (36, 36), (17, 16), (8, 9), (3, 3)):
                x = torch.randn(1, 3, h, w, generator=g)
                assert pool(x).shape == ref(x).shape, (kernel, padding, ceil_mode, base, h, w)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
@pytest.mark.parametrize("size", [35, 36])
def test_hybrid_is_pooling_plus_the_dwt_cropped_at_bottom_right(wavelet, size):
    x = torch.randn(2, 3, size, size + 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    pool = HybridWaveletPool2d(keep="LL+HH", combine="sum", wavelet=wavelet, kernel_size=3).double()
    ll, (_, _, hh) = dwt2(x, wavelet)
    ref = F.max_pool2d(x, 3, 2)
    h, w = ref.shape[-2:]
    assert ll.shape[-2:] == (h + 1, w + 1)  # ⌈H/2⌉ vs ⌊(H−3)/2⌋+1: one more row and column
    assert torch.allclose(pool(x), ref + (ll + hh)[..., :h, :w], atol=1e-6)  # the layer's taps are float32


def test_gate_and_concat_start_as_mean():
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(4))
    mean = HybridWaveletPool2d(4, keep="all", combine="mean", kernel_size=3)(x)
    for combine in ("gate", "concat"):
        assert torch.allclose(HybridWaveletPool2d(4, keep="all", combine=combine, kernel_size=3)(x), mean, atol=1e-6)


@pytest.mark.parametrize("combine", COMBINES)
def test_gradients_reach_the_input_and_the_learned_parts(combine):
    pool = HybridWaveletPool2d(4, wavelet="db2", keep="LL+HH", combine=combine, kernel_size=3)
    x = torch.randn(2, 4, 11, 10, generator=torch.Generator().manual_seed(5), requires_grad=True)
    (pool(x) * torch.linspace(-1, 1, 5 * 4).view(1, 1, 5, 4)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    for name, p in pool.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert pool.filters.grad is None


# --------------------------------------------------------------------------- swapping in registry models
@pytest.mark.parametrize("name", list_models("classification"))
def test_replace_pooling_in_every_registry_model(name):
    torch.manual_seed(0)
    model, x = _tiny(name)
    model.eval()
    with torch.no_grad():
        before = model(x)
    sites = [n for n, _ in downsampling_pools(model)]
    if name in POOLS:
        assert len(sites) == POOLS[name]
    stride_one = [n for n, m in model.named_modules() if isinstance(m, nn.AvgPool2d) and m.stride in (1, (1, 1))]
    returned = replace_pooling(model, "wavelet_hybrid", keep="LL+HH", combine="gate")
    assert returned is model
    swapped = [n for n, m in model.named_modules() if isinstance(m, HybridWaveletPool2d)]
    assert swapped == sites
    assert all(isinstance(model.get_submodule(n), nn.AvgPool2d) for n in stride_one)  # stride-1 pools stay
    transforms = model.medprune_spec.get("transforms", [])
    assert len(transforms) == (1 if sites else 0)
    with torch.no_grad():
        after = model(x)
    assert after.shape == before.shape == (2, 3)
    assert torch.equal(after, before) == (not sites)  # untouched models compute exactly as before
    model.train()
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_inception_v3_reduction_pools_are_modules_and_swap():
    model, _ = _tiny("inception_v3")
    names = [n for n, _ in downsampling_pools(model)]
    assert names == ["Pool1", "Pool2", "Mixed_6a.branch_pool", "Mixed_7a.branch_pool"]
    assert "Mixed_6a.branch_pool" not in model.state_dict()  # no weights: timm's state dict is unchanged


def test_swapping_back_to_max_restores_the_outputs():
    model, x = _tiny("small_cnn")
    model.eval()
    with torch.no_grad():
        before = model(x)
        replace_pooling(model, "wavelet_hybrid", combine="sum")
        assert not torch.allclose(model(x), before)
        replace_pooling(model, "max")
        assert torch.equal(model(x), before)
    assert [t["name"] for t in model.medprune_spec["transforms"]] == ["wavelet_hybrid", "max"]
    assert all(type(m) is nn.MaxPool2d for _, m in downsampling_pools(model))


@pytest.mark.parametrize(("kind", "options", "expected"), [
    ("wavelet_hybird", {}, "unknown pooling 'wavelet_hybird'; did you mean 'wavelet_hybrid'?"),
    ("wavelet_hybrid", {"combin": "gate"},
     "unknown option of pooling 'wavelet_hybrid' 'combin'; did you mean 'combine'"),
    ("wavelet_hybrid", {"combine": "gat"}, "combine: unknown combine 'gat'; did you mean 'gate'"),
    ("wavelet_hybrid", {"wavelet": "db99"}, "wavelet: unknown wavelet 'db99'"),
    ("wavelet_hybrid", {"keep": "HH"}, "keep: unknown keep 'HH'"),
    ("max", {"combine": "sum"}, "takes no options"),
])
def test_bad_kind_or_option_is_refused_with_suggestions(kind, options, expected):
    model, _ = _tiny("small_cnn")
    with pytest.raises(ConfigError) as err:
        replace_pooling(model, kind, **options)
    assert expected in str(err.value), str(err.value)


def test_bad_saved_record_names_the_file():
    model, _ = _tiny("small_cnn")
    with pytest.raises(CheckpointError, match=r"runs/x/model.pt: .*combine: unknown combine 'prod'"):
        apply_pooling_spec(model, {"name": "wavelet_hybrid", "combine": "prod"}, "runs/x/model.pt")
    spec = {**model.medprune_spec, "transforms": [{"kind": "pooling", "name": "bogus"}]}
    with pytest.raises(CheckpointError, match=r"m.pt: .*unknown pooling 'bogus'"):
        build_from_spec(spec, "m.pt")


# --------------------------------------------------------------------------- prune, export, save/load
@pytest.mark.parametrize("combine", ["gate", "concat"])
def test_pruned_pooled_model_exports_and_round_trips(combine, tmp_path: Path):
    torch.manual_seed(0)
    model, x = _tiny("small_cnn")
    replace_pooling(model, "wavelet_hybrid", wavelet="db2", keep="all", combine=combine)
    result = prune_model(model, x, criterion="l1", ratio=0.5)
    assert result.macs_after < result.macs_before
    pools = [m for m in model.modules() if isinstance(m, HybridWaveletPool2d)]
    convs = [m for m in model.features if isinstance(m, nn.Sequential)]
    for stage, pool in zip(convs, pools):
        width = stage[1][0].out_channels  # the conv feeding the pool
        if combine == "gate":
            assert pool.gate.weight.shape == (1, width, 1, 1) and pool.gate.num_channels == width
        else:
            assert pool.fuse.in_channels == 5 * width  # [pooled, LL, HL, LH, HH]
    model.eval()
    exported = export_onnx(model, x[:1], tmp_path / "m.onnx")
    assert exported.passed and exported.max_abs_diff < 1e-4
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.medprune_spec["transforms"] == model.medprune_spec["transforms"]


@pytest.mark.slow
def test_pruned_pooled_inception_v3_exports_and_round_trips(tmp_path: Path):
    torch.manual_seed(0)
    model, x = _tiny("inception_v3")
    replace_pooling(model, "wavelet_hybrid", wavelet="haar", keep="LL", combine="gate")
    prune_model(model, x, criterion="l1", ratio=0.5)
    model.eval()
    assert export_onnx(model, x[:1], tmp_path / "m.onnx").passed
    save_model(model, tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m.pt")(x), model(x))


# --------------------------------------------------------------------------- config and training
def _config(data: dict, pooling) -> dict:
    data = copy.deepcopy(data)
    data["model"]["pooling"] = pooling
    return data


def test_config_pooling_as_name_or_mapping(tiny_config_dict: dict):
    cfg = config_from_dict(_config(tiny_config_dict, "avg"), "x.yaml")
    assert cfg.model.pooling_spec() == ("avg", {})
    assert all(type(m) is nn.AvgPool2d for _, m in downsampling_pools(build_model(cfg)))
    cfg = config_from_dict(_config(tiny_config_dict, {"kind": "wavelet_hybrid", "wavelet": "db2", "combine": "gate"}),
                           "x.yaml")
    model = build_model(cfg)
    pools = [m for _, m in downsampling_pools(model)]
    assert len(pools) == 4 and all(isinstance(m, HybridWaveletPool2d) and m.wavelet == "db2" for m in pools)
    assert model.medprune_spec["transforms"][0] == {"kind": "pooling", "name": "wavelet_hybrid", "wavelet": "db2",
                                                    "keep": "LL", "base": None, "combine": "gate"}


@pytest.mark.parametrize(("pooling", "expected"), [
    ("wavlet_hybrid", "x.yaml: model.pooling: unknown pooling 'wavlet_hybrid'; did you mean 'wavelet_hybrid'?"),
    ({"kind": "wavelet_hybrid", "combine": "prod"}, "x.yaml: model.pooling.combine: unknown combine 'prod'"),
    ({"kind": "wavelet_hybrid", "combin": "sum"}, "x.yaml: model.pooling.combin: unknown option"),
    ({"kind": "wavelet_hybrid", "wavelet": "haaar"},
     "x.yaml: model.pooling.wavelet: unknown wavelet 'haaar'; did you mean 'haar'"),
    ({"kind": "max", "keep": "LL"}, "x.yaml: model.pooling.keep: "),
    ({"combine": "sum"}, "x.yaml: model.pooling.kind: is required"),
    (3, "x.yaml: model.pooling: must be a string or a mapping or null"),
])
def test_config_errors_name_the_key(tiny_config_dict: dict, pooling, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict(_config(tiny_config_dict, pooling), "x.yaml")
    assert str(err.value).startswith(expected), str(err.value)


@pytest.mark.slow
def test_trainer_trains_a_pooled_model_and_its_checkpoint_rebuilds(tiny_config_dict: dict):
    from medprune.workflows.jobs import train

    data = _config(tiny_config_dict, {"kind": "wavelet_hybrid", "keep": "all", "combine": "concat"})
    data["optim"]["epochs"] = 1
    outcome = train(config_from_dict(data, "x.yaml"))
    assert 0.0 <= outcome.metrics["balanced_accuracy"] <= 1.0
    trained = outcome.model.eval()
    x = torch.randn(2, 1, 40, 40, generator=torch.Generator().manual_seed(6))
    rebuilt = load_model(outcome.result.last_checkpoint)
    assert sum(isinstance(m, HybridWaveletPool2d) for m in rebuilt.modules()) == 4
    with torch.no_grad():
        assert torch.equal(rebuilt(x), trained(x))
