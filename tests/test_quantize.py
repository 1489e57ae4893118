"""Direct Quantization, ONNX Runtime INT8 and `medprune export` (tiny models, CPU)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medprune.cli import main
from medprune.compress import load_model, prune_model, save_model
from medprune.compress.export import export_onnx
from medprune.compress.quantize import (ActQuantizer, QuantConv2d, QuantLinear, apply_quantize_spec,
                                        channel_balanced_error, fake_quant, fit_act_clip, materialize,
                                        packed_size_bytes, quantization_error, quantize_model, quantized_layers)
from medprune.config import config_from_dict
from medprune.errors import CheckpointError, ConfigError, ExportError, QuantizationError
from medprune.models import create_model
from tests.conftest import write_yaml


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=2, in_chans=1, width=0.25)


def _images(n: int = 4, batches: int = 2, seed: int = 1, size: int = 32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, size, size, generator=g) for _ in range(batches)]


def _quantized(bits: int = 4, act_bits: int | None = 8) -> nn.Module:
    return quantize_model(_model(), bits=bits, act_bits=act_bits, calibration=_images(), act_grid=16)


# --------------------------------------------------------------------------- weights
def test_level_gradient_is_the_sum_over_assigned_weights_and_levels_move() -> None:
    torch.manual_seed(0)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 8, 3), bits=2, act_bits=None)
    layer.init_levels("kmeans")
    layer.snap()
    x = torch.randn(2, 3, 6, 6)
    (layer(x) * torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(2))).sum().backward()
    idx = layer.assignment()
    # All weights sit on a level after snap(), so the weights get dL/dw_q unmasked (STE) ...
    expected = torch.stack([layer.weight.grad[idx == k].sum() for k in range(4)])
    assert torch.allclose(layer.levels.grad, expected, atol=1e-6)
    assert (layer.levels.grad.abs() > 0).all()
    before = layer.levels.detach().clone()
    torch.optim.SGD(layer.parameters(), lr=0.01).step()
    assert torch.allclose(layer.levels.detach(), before - 0.01 * expected, atol=1e-7)
    assert torch.unique(layer.quantized_weight().detach()).numel() <= 4


def test_weights_beyond_the_outer_levels_get_no_outward_gradient() -> None:
    layer = QuantLinear.from_float(nn.Linear(4, 1, bias=False), bits=2, act_bits=None)
    with torch.no_grad():
        layer.levels.copy_(torch.tensor([-1.0, -0.3, 0.3, 1.0]))
        layer.weight.copy_(torch.tensor([[2.0, 2.0, -2.0, 0.5]]))
    layer(torch.tensor([[1.0, -1.0, -1.0, 1.0]])).sum().backward()
    # dL/dw_q = x: w=2 with grad +1 moves inward (kept), w=2 with grad -1 would move out (zeroed),
    # w=-2 with grad -1 moves inward (kept), w=0.5 is inside (kept).
    assert layer.weight.grad.tolist() == [[1.0, 0.0, -1.0, 1.0]]
    # Levels get the unmasked sum: -2 -> level -1 (x=-1); 2, 2 -> level 1 (x=1, -1); 0.5 -> level 0.3 (x=1).
    assert layer.levels.grad.tolist() == [-1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_at_most_2_to_the_b_values_per_layer_before_and_after_training(bits: int) -> None:
    model = quantize_model(_model(), bits=bits, act_bits=None, example_inputs=_images(2, 1)[0])
    layers = quantized_layers(model)
    assert len(layers) == 7  # 8 convs + 1 linear, first conv and last linear kept float
    assert type(model.features[0][0][0]) is nn.Conv2d and type(model.fc) is nn.Linear
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for x in _images(4, 2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1])).backward()
        optimizer.step()
    for name, layer in layers.items():
        values = torch.unique(layer.quantized_weight().detach())
        assert values.numel() <= 2 ** bits, name
        assert set(values.tolist()) <= set(layer.levels.detach().tolist())


def test_quantized_weights_are_the_stored_weights_after_quantize_model() -> None:
    float_model = _model()
    model = quantize_model(copy.deepcopy(float_model), bits=4, act_bits=None, example_inputs=_images(2, 1)[0])
    for layer in quantized_layers(model).values():
        assert torch.equal(layer.weight, layer.quantized_weight())
    # k-means levels: 4-bit weights stay close to the float ones.
    conv_f, conv_q = float_model.features[1][0][0], model.features[1][0][0]
    rel = ((conv_f.weight - conv_q.weight).norm() / conv_f.weight.norm()).detach()
    assert 0 < float(rel) < 0.15


# --------------------------------------------------------------------------- activations
def test_channel_balanced_clip_beats_tensor_mse_on_a_few_high_variance_channels() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, 6, 6, generator=g)
    x[:, :2] *= 50.0  # two high-variance channels among sixteen
    clip_cb, signed_cb = fit_act_clip([x], bits=4, objective="channel_balanced")
    clip_mse, signed_mse = fit_act_clip([x], bits=4, objective="mse")
    assert signed_cb and signed_mse
    assert clip_cb < 0.5 * clip_mse  # the MSE fit stretches the range for the two loud channels
    err_cb = quantization_error(x, clip_cb, 4, True)
    err_mse = quantization_error(x, clip_mse, 4, True)
    assert err_cb < 0.5 * err_mse
    # ... while the tensor-wide MSE fit does win on its own objective.
    mse = lambda c: float(((x - fake_quant(x, c, 4, True)) ** 2).sum())  # noqa: E731
    assert mse(clip_mse) <= mse(clip_cb)


def test_channel_balanced_error_closed_form() -> None:
    x = torch.tensor([[[1.0, 1.0]], [[2.0, 0.0]]]).permute(1, 0, 2)  # (N=1, C=2, 2)
    x_q = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]]]).permute(1, 0, 2)
    assert channel_balanced_error(x, x_q) == pytest.approx(0.5)  # channel 0: 1/2, channel 1: 0


def test_activation_quantizer_ste_and_unsigned_range() -> None:
    act = ActQuantizer(bits=2)
    act.set_range(3.0, signed=False)  # levels 0, 1, 2, 3
    x = torch.tensor([-1.0, 0.4, 1.6, 2.5, 4.0], requires_grad=True)
    y = act(x)
    assert y.tolist() == [0.0, 0.0, 2.0, 2.0, 3.0]  # 2.5 rounds half to even, like ONNX Round
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # straight through inside the range only


def test_gradients_reach_input_weights_and_levels_through_a_quantized_model() -> None:
    model = _quantized()
    x = _images(2, 1)[0].requires_grad_(True)
    model.train()
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    for name, layer in quantized_layers(model).items():
        assert float(layer.weight.grad.abs().sum()) > 0, name
        assert float(layer.levels.grad.abs().sum()) > 0, name


def test_uncalibrated_quantizer_refuses_to_run() -> None:
    with pytest.raises(QuantizationError, match="no clip range"):
        ActQuantizer(8)(torch.ones(2))


# --------------------------------------------------------------------------- save / load / prune
def test_save_load_round_trip_gives_equal_outputs(tmp_path: Path) -> None:
    model = _quantized(bits=2, act_bits=4).eval()
    path = save_model(model, tmp_path / "q.pt")
    loaded = load_model(path)
    x = _images(3, 1, seed=5)[0]
    assert torch.equal(loaded(x), model(x))
    assert loaded.medprune_spec["transforms"][-1]["kind"] == "quantize"
    for name, layer in quantized_layers(loaded).items():
        assert layer.act.calibrated and layer.act.bits == 4 and layer.bits == 2
        assert torch.equal(layer.levels, quantized_layers(model)[name].levels)
    # Saved again from the rebuilt model: still the same record and outputs.
    again = load_model(save_model(loaded, tmp_path / "q2.pt"))
    assert torch.equal(again(x), model(x))


def test_prune_then_quantize_keeps_widths_through_save_and_load(tmp_path: Path) -> None:
    model = _model()
    x = _images(2, 1)[0]
    pruned = prune_model(model, x, criterion="l2", ratio=0.5, round_to=None).model
    widths = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    qmodel = quantize_model(pruned, bits=4, act_bits=8, calibration=_images(), act_grid=16).eval()
    assert widths["features.3.1.0"] == 32  # 64 * 0.5
    loaded = load_model(save_model(qmodel, tmp_path / "pq.pt"))
    assert {n: m.out_channels for n, m in loaded.named_modules() if isinstance(m, nn.Conv2d)} == widths
    assert isinstance(loaded.features[3][1][0], QuantConv2d)
    assert torch.equal(loaded(x), qmodel(x))


def test_bad_quantize_record_names_the_file_and_problem() -> None:
    with pytest.raises(CheckpointError, match=r"m\.pt: quantize record: bits must be one of 2, 4, 8, got 3"):
        apply_quantize_spec(_model(), {"bits": 3, "act_bits": 8, "layers": ["fc"]}, "m.pt")
    with pytest.raises(CheckpointError, match=r"m\.pt: quantize record: layer 'features\.9' does not exist"):
        apply_quantize_spec(_model(), {"bits": 4, "act_bits": None, "layers": ["features.9"]}, "m.pt")
    with pytest.raises(CheckpointError, match="missing layers"):
        apply_quantize_spec(_model(), {"bits": 4, "act_bits": None}, "m.pt")
    with pytest.raises(CheckpointError, match="'features.0.0.1' is a BatchNorm2d"):
        apply_quantize_spec(_model(), {"bits": 4, "act_bits": None, "layers": ["features.0.0.1"]}, "m.pt")


def test_bad_quantize_requests_say_what_to_do() -> None:
    with pytest.raises(QuantizationError, match="bits must be one of 2, 4, 8, got 3"):
        quantize_model(_model(), bits=3, calibration=_images())
    with pytest.raises(QuantizationError, match="act_bits=8 needs calibration batches"):
        quantize_model(_model(), bits=4, act_bits=8)
    with pytest.raises(QuantizationError, match="unknown level init 'kmean'; did you mean 'kmeans'"):
        quantize_model(_model(), level_init="kmean", calibration=_images())
    with pytest.raises(QuantizationError, match="unknown layer 'features.3.1.O'; did you mean 'features.3.1.0'"):
        quantize_model(_model(), skip=["features.3.1.O"], calibration=_images())
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_model(_quantized(), calibration=_images())


# --------------------------------------------------------------------------- export
def test_materialize_is_exact_and_onnx_matches(tmp_path: Path) -> None:
    model = _quantized(bits=4, act_bits=8).eval()
    x = _images(4, 1, seed=3)[0]
    plain = materialize(model)
    assert not quantized_layers(plain) and not hasattr(plain, "medprune_spec")
    assert torch.equal(plain(x), model(x))
    result = export_onnx(model, x, tmp_path / "q.onnx", min_agreement=1.0, check_inputs=_images(8, 2, seed=4))
    assert result.passed and result.criterion == "top1" and result.top1_agreement == 1.0
    assert result.within_tolerance > 0.9 and result.max_abs_diff < 0.05
    # Weight-only quantization has no rounding in the graph: the element-wise check holds.
    wonly = quantize_model(_model(), bits=2, act_bits=None, example_inputs=x)
    result = export_onnx(wonly, x, tmp_path / "w.onnx")
    assert result.passed and result.max_abs_diff < 1e-4 and result.within_tolerance == 1.0


def test_packed_size_counts_bits() -> None:
    float_model = _model()
    model = quantize_model(copy.deepcopy(float_model), bits=2, act_bits=None, example_inputs=_images(2, 1)[0])
    layers = quantized_layers(model)
    saved = sum(layer.weight.numel() * 4 - -(-layer.weight.numel() * 2 // 8) - 4 * 4 for layer in layers.values())
    assert packed_size_bytes(float_model) - packed_size_bytes(model) == saved


def test_int8_export_reports_agreement_and_refuses_below_threshold(tmp_path: Path) -> None:
    from medprune.compress.int8 import export_int8

    model = _model()
    calibration = [(x, torch.zeros(len(x))) for x in _images(8, 2)]
    result = export_int8(model, calibration, tmp_path / "m.int8.onnx", min_agreement=0.75,
                         check_inputs=_images(8, 2, seed=9))
    assert result.path.is_file() and result.passed and result.samples == 16
    assert result.top1_agreement >= 0.75 and 0 < result.max_abs_diff < 1.0
    assert result.size_bytes < result.fp32_size_bytes
    # logits = (mean x, -mean x), calibrated on positive images only: INT8 clips negative inputs to
    # 0, so the samples of class 1 (negative mean) become ties -> class 0: agreement 50 %.
    sign = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        sign[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    positive = [x.abs() for x in _images(8, 2)]
    alternating = [x.abs() * torch.tensor([1.0, -1.0]).repeat(4).view(8, 1, 1, 1) for x in _images(8, 1, seed=11)]
    with pytest.raises(ExportError, match=r"bad\.onnx: INT8 and the PyTorch model agree on the top class of only "
                                          r"50\.0% of 8 checked samples \(required 90\.0%"):
        export_int8(sign, positive, tmp_path / "bad.onnx", check_inputs=alternating)
    assert not (tmp_path / "bad.onnx").exists()
    with pytest.raises(QuantizationError, match="already quantized"):
        export_int8(_quantized(), calibration, tmp_path / "q.onnx")


# --------------------------------------------------------------------------- trainer, config, CLI
def test_quantized_model_fine_tunes_with_the_trainer_and_reloads(tmp_path: Path, tiny_config_dict: dict) -> None:
    from medprune.workflows.data import prepare_data
    from medprune.workflows.helpers import config_trainer as Trainer

    tiny_config_dict["optim"]["epochs"] = 1
    cfg = config_from_dict(tiny_config_dict, "tiny.yaml")
    data = prepare_data(cfg, cfg.run_dir)
    model = quantize_model(_model(), bits=4, act_bits=8, calibration=[data.datasets["train"][i][0][None]
                                                                      for i in range(4)], act_grid=16)
    levels = {n: layer.levels.detach().clone() for n, layer in quantized_layers(model).items()}
    trainer = Trainer(model, data.datasets["train"], data.datasets["val"], cfg, tmp_path / "ft", torch.device("cpu"))
    result = trainer.fit()
    moved = [n for n, layer in quantized_layers(trainer.model).items() if not torch.equal(layer.levels, levels[n])]
    assert len(moved) == 7
    loaded = load_model(result.last_checkpoint)
    x = data.datasets["val"][0][0][None]
    assert torch.equal(loaded(x), trainer.model.eval()(x))


def test_quantize_config_section_validates(tiny_config_dict: dict) -> None:
    tiny_config_dict["compress"] = {"quantize": {"method": "direct", "bits": 2, "act_bits": None,
                                                 "finetune": {"epochs": 1, "lr": 0.001}}}
    q = config_from_dict(tiny_config_dict, "t.yaml").compress.quantize
    assert (q.method, q.bits, q.act_bits, q.finetune.epochs, q.level_init) == ("direct", 2, None, 1, "kmeans")
    tiny_config_dict["compress"]["quantize"] = {"method": "dirct"}
    with pytest.raises(ConfigError, match=r"t\.yaml: compress\.quantize\.method: unknown value 'dirct'; did you mean"):
        config_from_dict(tiny_config_dict, "t.yaml")
    tiny_config_dict["compress"]["quantize"] = {"act_bits": 16}
    with pytest.raises(ConfigError, match=r"compress\.quantize\.act_bits: must be"):
        config_from_dict(tiny_config_dict, "t.yaml")
    tiny_config_dict["compress"]["quantize"] = {"act_objective": "mean"}
    with pytest.raises(ConfigError, match=r"compress\.quantize\.act_objective: unknown activation objective"):
        config_from_dict(tiny_config_dict, "t.yaml")


def test_export_command_float_and_quantized(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    float_file = save_model(_model(), tmp_path / "f.pt")
    out = tmp_path / "export" / "f.onnx"
    assert main(["export", str(float_file), "--out", str(out), "--input-size", "1", "32", "32"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "float, input 1x32x32" in text and "passed atol 0.0001 + rtol 0.001" in text

    q_file = save_model(_quantized(), tmp_path / "q.pt")
    assert main(["export", str(q_file), "--out", str(tmp_path / "q.onnx"), "--input-size", "1", "32", "32"]) == 0
    text = capsys.readouterr().out
    assert "Direct Quantization 4-bit weights, 8 activations (7 layers)" in text
    assert "top-1 agreement 1.000 (required 0.990" in text and "not smaller" in text

    # Refusals: one line, exit code 2, no file.
    assert main(["export", str(float_file), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "records no input size" in capsys.readouterr().err
    assert main(["export", str(float_file), "--out", str(tmp_path / "x.onnx"), "--input-size", "1", "32", "32",
                 "--rtol", "0", "--atol", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medprune: error:") and "no file written" in err and "Traceback" not in err
    assert main(["export", str(float_file), "--out", str(tmp_path / "x.onnx"), "--input-size", "1", "32", "32",
                 "--int8"]) == 2
    assert "--int8 needs --config" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_export_command_int8_from_a_trained_checkpoint(tmp_path: Path, tiny_config_dict: dict,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    tiny_config_dict["optim"]["epochs"] = 1
    tiny_config_dict["compress"] = {"calibration": {"batches": 2, "batch_size": 4}}
    tiny_config_dict["export"] = {"int8_min_agreement": 0.5}
    config = write_yaml(tmp_path / "tiny.yaml", tiny_config_dict)
    assert main(["train", str(config)]) == 0
    ckpt = tmp_path / "runs" / "tiny" / "checkpoints" / "best.pt"
    out = tmp_path / "export" / "model.onnx"
    capsys.readouterr()
    assert main(["export", str(ckpt), "--out", str(out), "--int8", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "input 1x40x40" in text  # from the training config stored in the checkpoint
    assert (tmp_path / "export" / "model.int8.onnx").is_file() and "INT8 (QDQ)" in text
    assert "val images" in text and "SYNTHETIC" in text
    agreement = float(text.split("top-1 agreement with PyTorch ")[1].split()[0])
    assert 0.5 <= agreement <= 1.0
    assert np.isfinite(float(text.split("max |logit diff| ")[1].split()[0]))
