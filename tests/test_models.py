"""Model registry and the Inception models: shapes, gradients, widths, parity with timm, MV4 balance.

Everything runs at width ≤ 0.125 on the models' smallest inputs, or on the meta device (shapes
only) where full-size models are needed; nothing is downloaded.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.fx
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medprune.errors import CheckpointError, ConfigError, MedpruneError, RegistryError
from medprune.models import (
    count_macs,
    create_model,
    format_stage_costs,
    list_models,
    model_signature,
    stage_cost_table,
)

TINY = 0.125
ALL_MODELS = list_models("classification")


def tiny(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    kwargs = {"num_classes": 3, "width": TINY, **kwargs}
    return create_model(name, **kwargs)


def on_meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_the_inception_models() -> None:
    assert {"inception_v3", "inception_v4", "inception_mv4"} <= set(ALL_MODELS)
    assert ALL_MODELS == sorted(ALL_MODELS)


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_every_parameter_gets_a_finite_gradient(name: str, in_chans: int) -> None:
    model = tiny(name, in_chans=in_chans)
    c, h, w = model.min_input_size
    assert c == in_chans and model.default_input_size[0] == in_chans
    x = torch.randn(2, in_chans, h, w, generator=torch.Generator().manual_seed(1))

    model.train()
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 3)
    logits.logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []
    assert sum(p.grad.abs().sum().item() for p in model.parameters()) > 0

    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_min_input_size_is_the_smallest_that_runs(name: str) -> None:
    model = tiny(name).eval()
    c, h, w = model.min_input_size
    with torch.no_grad():
        assert model(torch.zeros(1, c, h, w)).shape == (1, 3)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, c, h - 1, w - 1))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_is_plain_and_traceable(name: str) -> None:
    model = tiny(name).eval()
    lazy = [n for n, m in model.named_modules() if isinstance(m, nn.modules.lazy.LazyModuleMixin)]
    assert lazy == []
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._load_state_dict_pre_hooks)
                for m in model.modules())
    assert hooks == 0
    x = torch.randn(1, *model.min_input_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_width_shrinks_parameters_quadratically(name: str) -> None:
    full = n_params(on_meta(name, num_classes=2, width=1.0))
    half = n_params(on_meta(name, num_classes=2, width=0.5))
    assert 0.2 < half / full < 0.35


@pytest.mark.parametrize("name", ["inception_v3", "inception_v4"])
def test_width_one_matches_timm_exactly(name: str) -> None:
    with torch.device("meta"):
        reference = timm.create_model(name)
    ours = on_meta(name, num_classes=1000)
    assert n_params(ours) == n_params(reference) == {"inception_v3": 23_834_568,
                                                     "inception_v4": 42_679_816}[name]
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_channel_divisor_rounds_every_conv_width() -> None:
    model = tiny("inception_v4", width=0.3, channel_divisor=8)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert widths and all(w % 8 == 0 for w in widths)
    assert model.features[0].conv.out_channels == 8  # 32 × 0.3 = 9.6 → 8


def test_v4_stage_table_at_299_px() -> None:
    rows = stage_cost_table(on_meta("inception_v4", num_classes=1000), (3, 299, 299))
    assert [(r.name, r.channels, r.height) for r in rows] == [
        ("stem", 384, 35), ("inception_a", 384, 35), ("inception_b", 1024, 17), ("inception_c", 1536, 8),
        ("head", 1000, 1)]
    assert [r.activation for r in rows[1:4]] == [470_400, 295_936, 98_304]
    assert "inception_b" in format_stage_costs(rows)


def test_macs_agree_with_torch_flop_counter() -> None:
    model = on_meta("inception_v4", num_classes=1000).eval()
    ours = sum(count_macs(model, (3, 299, 299)).values())
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 299, 299, device="meta"))
    assert 2 * ours == counter.get_total_flops()
    assert ours == sum(r.macs for r in stage_cost_table(model, (3, 299, 299)))
    assert 12.2e9 < ours < 12.3e9  # timm lists 12.28 GMACs


def test_mv4_balances_channels_times_positions_and_is_cheaper_than_v4() -> None:
    mv4 = stage_cost_table(on_meta("inception_mv4", num_classes=1000), (3, 299, 299))
    v4 = stage_cost_table(on_meta("inception_v4", num_classes=1000), (3, 299, 299))
    balance = [r.activation for r in mv4[1:4]]
    assert max(balance) / min(balance) <= 1.15
    v4_spread = [r.activation for r in v4[1:4]]
    assert max(v4_spread) / min(v4_spread) > 4.7
    mv4_macs, v4_macs = sum(r.macs for r in mv4), sum(r.macs for r in v4)
    assert mv4_macs < v4_macs
    assert 0.90 < mv4_macs / v4_macs < 0.96  # the paper: MV4 classifies ~7 % faster


def test_stage_table_leaves_a_real_model_untouched() -> None:
    model = tiny("inception_mv4")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = stage_cost_table(model, (3, 299, 299))
    balance = [r.activation for r in rows[1:4]]
    assert max(balance) / min(balance) <= 1.15  # the balance survives width rounding at 0.125
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_mv4_stage_settings_are_configurable() -> None:
    model = tiny("inception_mv4", stage_widths=[1.0, 1.0, 1.0], blocks=[1, 2, 1])
    assert len(model.features) == 6 + 1 + 1 + 2 + 1 + 1
    v4 = tiny("inception_v4")
    mv4_as_v4 = tiny("inception_mv4", stage_widths=(1, 1, 1), blocks=(4, 7, 3))
    assert n_params(mv4_as_v4) == n_params(v4)


def test_v3_aux_logits_in_train_mode_only() -> None:
    model = create_model("inception_v3", num_classes=3, width=0.0625, aux_logits=True)
    assert model.min_input_size == (3, 299, 299)
    model.train()
    logits, aux = model(torch.randn(2, 3, 299, 299, generator=torch.Generator().manual_seed(3)))
    assert logits.shape == aux.shape == (2, 3)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 75, 75)).shape == (1, 3)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_spec_round_trip_rebuilds_the_same_model(name: str) -> None:
    model = tiny(name, seed=7, in_chans=1, drop_rate=0.1).eval()
    spec = model.medprune_spec
    assert spec["name"] == name and spec["kwargs"]["width"] == TINY and spec["kwargs"]["in_chans"] == 1
    torch.manual_seed(7)
    twin = create_model(spec["name"], **spec["kwargs"]).eval()
    assert n_params(twin) == n_params(model)
    x = torch.randn(2, *model.min_input_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))


def test_model_signature_exposes_typed_common_arguments() -> None:
    for name in ALL_MODELS:
        params = model_signature(name).parameters
        assert params["num_classes"].default == 2 and params["num_classes"].annotation is int
        assert params["in_chans"].default == 3 and params["width"].default == 1.0
        assert params["pretrained"].default is False and params["drop_rate"].default == 0.0
    assert tuple(model_signature("inception_mv4").parameters["blocks"].default) == (4, 7, 3)


def test_unknown_model_name_suggests_close_match() -> None:
    with pytest.raises(RegistryError, match=r"did you mean 'inception_v4'.*Available: .*inception_mv4"):
        create_model("inception_v5")
    with pytest.raises(RegistryError, match="inception_v3"):
        model_signature("inceptionv3")


def test_bad_kwarg_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"unknown argument 'widht'; did you mean 'width'\?.*Accepted: .*drop_rate"):
        create_model("inception_v4", widht=0.5)


@pytest.mark.parametrize(("name", "kwargs", "key"), [
    ("inception_v4", {"width": 0.0}, "width"),
    ("inception_v3", {"num_classes": 0}, "num_classes"),
    ("inception_v3", {"in_chans": 2.0}, "in_chans"),
    ("inception_v4", {"drop_rate": 1.0}, "drop_rate"),
    ("inception_v4", {"channel_divisor": 0}, "channel_divisor"),
    ("inception_mv4", {"stage_widths": [1.0, 1.0]}, "stage_widths"),
    ("inception_mv4", {"blocks": [4, -1, 3]}, "blocks"),
    ("inception_mv4", {"blocks": [4, 7.5, 3]}, "blocks"),
])
def test_invalid_values_raise_config_error_naming_the_key(name: str, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}': {key} must"):
        create_model(name, **kwargs)


@pytest.mark.parametrize("name", ["inception_v3", "inception_v4"])
def test_pretrained_needs_width_one(name: str) -> None:
    with pytest.raises(ConfigError, match=r"pretrained weights exist only for width 1.0.*width=0.5"):
        create_model(name, width=0.5, pretrained=True)


def test_mv4_has_no_pretrained_weights() -> None:
    with pytest.raises(ConfigError, match="no pretrained weights exist for our MV4 reconstruction"):
        create_model("inception_mv4", pretrained=True)


def test_pretrained_download_failure_is_a_medprune_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> nn.Module:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(CheckpointError, match="could not load timm's pretrained weights.*pretrained: false") as info:
        create_model("inception_v4", pretrained=True)
    assert isinstance(info.value, MedpruneError)


def test_pretrained_copies_timm_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model
    built: list[nn.Module] = []

    def fake_hub(name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
        assert pretrained and kwargs == {"num_classes": 3, "in_chans": 1, "aux_logits": True}
        built.append(real(name, pretrained=False, **kwargs))  # random weights stand in for the hub's
        return built[-1]

    monkeypatch.setattr(timm, "create_model", fake_hub)
    model = create_model("inception_v3", num_classes=3, in_chans=1, aux_logits=True, pretrained=True)
    source = built[0].state_dict()
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())
    assert model.medprune_spec["pretrained"] is True and model.medprune_spec["kwargs"]["pretrained"] is False
    assert math.isclose(model.AuxLogits.fc.weight.sum().item(), source["AuxLogits.fc.weight"].sum().item())


def test_pretrained_weights_that_do_not_fit_raise_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: real(name, **kw))
    with pytest.raises(ConfigError, match="do not fit this configuration.*channel_divisor"):
        create_model("inception_v3", pretrained=True, channel_divisor=32)  # 48 → 64 channels
