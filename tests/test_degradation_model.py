"""The degradation-aware classifier: q injection, input forms, modes, the estimator's loss, pruning, ONNX.

Tiny models (small_cnn at width 0.25) on 32-px images; q_dim 1 and 3.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn

from medprune.compress import load_model, prune_model, save_model
from medprune.errors import ConfigError
from medprune.models import INJECTIONS, DegradationAware, create_model, model_min_input_size

C, SIZE = 1, 32
USES_Q = ["film", "concat_fc", "channel"]


def build(injection: str = "film", q_dim: int = 3, seed: int = 0, **kwargs: object) -> DegradationAware:
    torch.manual_seed(seed)
    kwargs = {"num_classes": 3, "in_chans": C, "width": 0.25, "injection": injection, "q_dim": q_dim, **kwargs}
    return create_model("degradation_aware", **kwargs)


def perturb_film(model: DegradationAware, seed: int = 1, scale: float = 0.5) -> None:
    """Move FiLM's γ/β off their zero start, so FiLM depends on q."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (*model.injection.gamma.values(), *model.injection.beta.values()):
            for p in layer.parameters():
                p.copy_(scale * torch.randn(p.shape, generator=g))


def perturb_q_start(model: DegradationAware, seed: int = 1) -> None:
    """Move the zero start of q's weights (FiLM's γ/β, the first convolution's q planes) as training would."""
    if model.injection.name == "film":
        perturb_film(model, seed)
    elif model.injection.name == "channel":
        first = first_conv(model)
        with torch.no_grad():
            first.weight[:, C:] = torch.randn(first.weight[:, C:].shape, generator=torch.Generator().manual_seed(seed))


def first_conv(model: DegradationAware) -> nn.Conv2d:
    return next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))


def batch(q_dim: int, n: int = 2, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image, q, packed)``: q in [0, 1] and the packed batch carrying it as constant planes."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, C, SIZE, SIZE, generator=g)
    q = torch.rand(n, q_dim, generator=g)
    return image, q, pack(image, q)


def pack(image: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.cat([image, q[:, :, None, None].expand(-1, -1, *image.shape[2:])], dim=1)


def stage_widths(model: DegradationAware) -> dict[str, int]:
    """Output channels of each backbone stage, measured on a forward."""
    widths: dict[str, int] = {}
    handles = [model.backbone.get_submodule(name).register_forward_hook(
        lambda m, a, out, s=stage: widths.__setitem__(s, out.shape[1]))
        for stage, name in model.injection.points.items()]
    try:
        image, q, _ = batch(model.q_dim)
        with torch.no_grad():
            model.eval()(image, q)
    finally:
        for h in handles:
            h.remove()
    return widths


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_every_injection_is_registered() -> None:
    assert INJECTIONS.names() == ["channel", "concat_fc", "film", "none"]


@pytest.mark.parametrize("q_dim", [1, 3])
@pytest.mark.parametrize("injection", USES_Q)
def test_oracle_output_changes_with_q_and_packed_equals_two_inputs(injection: str, q_dim: int) -> None:
    model = build(injection, q_dim)
    perturb_q_start(model)
    model.eval()
    image, q, packed = batch(q_dim)
    with torch.no_grad():
        two = model(image, q)
        other = model(image, 1.0 - q)
        torch.testing.assert_close(model(packed), two)
    assert two.shape == (2, 3)
    assert (two - other).abs().max() > 1e-4
    assert model.input_names == ("image", "q")
    exported = model.export_inputs(packed)
    assert [t.shape for t in exported] == [(2, C, SIZE, SIZE), (2, q_dim)] and torch.equal(exported[1], q)
    with torch.no_grad():  # an image-only batch: the graph keeps its q input, fed the estimate
        torch.testing.assert_close(model.export_inputs(image)[1], model.estimator(image))


@pytest.mark.parametrize("q_dim", [1, 3])
def test_none_ignores_q_and_has_no_estimator(q_dim: int) -> None:
    model = build("none", q_dim).eval()
    image, q, packed = batch(q_dim)
    with torch.no_grad():
        out = model(image)
        torch.testing.assert_close(model(packed), out)
        torch.testing.assert_close(model(pack(image, 1.0 - q)), out)
    assert model.estimator is None and model.mode == "none" and model.input_names == ("image",)
    assert [t.shape for t in model.export_inputs(packed)] == [(2, C, SIZE, SIZE)]
    model.train()
    assert isinstance(model(packed), torch.Tensor)  # no estimator, no auxiliary loss


def test_channel_starts_blind_to_the_q_planes_and_learns_to_use_them() -> None:
    """The first convolution's q-plane weights start at zero (random ones stalled training on the phantom)."""
    model = build("channel", 3).eval()
    first = first_conv(model)
    assert first.in_channels == C + 3
    assert torch.count_nonzero(first.weight[:, C:]) == 0 and torch.count_nonzero(first.weight[:, :C]) > 0
    image, q, packed = batch(3, n=4)
    with torch.no_grad():
        torch.testing.assert_close(model(image, q), model(image, 1.0 - q), rtol=0, atol=0)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    logits, aux = model(packed)
    (nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])) + aux).backward()
    assert first.weight.grad[:, C:].abs().sum() > 0  # the q planes get gradients
    optimiser.step()
    model.eval()
    with torch.no_grad():
        assert (model(image, q) - model(image, 1.0 - q)).abs().max() > 1e-5


def test_film_starts_as_the_plain_backbone_and_learns_to_use_q() -> None:
    model = build("film", 3).eval()
    image, q, packed = batch(3, n=4)
    with torch.no_grad():
        plain = model.backbone.forward_head(model.backbone.forward_features(image))
        torch.testing.assert_close(model(image, q), plain, rtol=0, atol=0)
        torch.testing.assert_close(model(image, 1.0 - q), plain, rtol=0, atol=0)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    logits, aux = model(packed)
    (nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])) + aux).backward()
    optimiser.step()
    model.eval()
    with torch.no_grad():
        assert (model(image, q) - model(image, 1.0 - q)).abs().max() > 1e-5


@pytest.mark.parametrize("injection", USES_Q)
def test_blind_mode_is_oracle_with_the_estimated_q(injection: str) -> None:
    model = build(injection, 3)
    if injection == "film":
        perturb_film(model)
    model.eval()
    image, q, packed = batch(3)
    with torch.no_grad():
        q_hat = model.estimator(image)
        oracle = model(image, q_hat)
        assert torch.equal(model(image), oracle)  # oracle mode without q: estimated
        model.mode = "blind"
        torch.testing.assert_close(model(packed), oracle)
        torch.testing.assert_close(model(image, q), oracle)  # the given q is not used
    assert q_hat.shape == (2, 3) and bool(((q_hat > 0) & (q_hat < 1)).all())
    assert model.input_names == ("image",) and model.medprune_spec["kwargs"]["mode"] == "blind"


def test_train_mode_aux_loss_trains_the_estimator_only() -> None:
    model = build("film", 3, estimator_weight=0.5)
    perturb_film(model)
    model.train()
    image, q, packed = batch(3, n=4)
    target = torch.tensor([0, 1, 2, 1])
    snapshot = copy.deepcopy(model)
    logits, aux = model(packed)
    assert logits.shape == (4, 3) and aux.dim() == 0
    q_hat = snapshot.estimator(image)  # train-mode BatchNorm, as in the model's forward
    torch.testing.assert_close(aux, 0.5 * (q_hat - q).abs().mean())

    ce = nn.functional.cross_entropy(logits, target)
    classifier = [p for n, p in model.named_parameters() if not n.startswith("estimator.")]
    estimator = list(model.estimator.parameters())
    ce_only = torch.autograd.grad(ce, classifier, retain_graph=True)
    with_aux = torch.autograd.grad(ce + aux, classifier + estimator, allow_unused=True)
    for a, b in zip(ce_only, with_aux[:len(classifier)]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    est_grads = with_aux[len(classifier):]
    assert all(g is not None for g in est_grads) and sum(g.abs().sum().item() for g in est_grads) > 0
    logits, aux = model(packed)  # the classification loss does not reach the estimator (true q given)
    grads = torch.autograd.grad(nn.functional.cross_entropy(logits, target), estimator, allow_unused=True)
    assert all(g is None for g in grads)

    model.eval()
    assert isinstance(model(packed), torch.Tensor)


def _prune(model: DegradationAware, packed: torch.Tensor, **kwargs: object):
    return prune_model(model, packed, criterion=kwargs.pop("criterion", "l1"), ratio=0.5, **kwargs)


@pytest.mark.parametrize("injection", USES_Q)
def test_pruning_follows_q_layers_and_round_trips(injection: str, tmp_path) -> None:
    model = build(injection, 3)
    if injection == "film":
        perturb_film(model, scale=0.1)
    image, q, packed = batch(3)
    result = _prune(model, packed)
    assert result.macs_after < 0.6 * result.macs_before
    model.eval()
    with torch.no_grad():
        out = model(image, q)
        assert out.shape == (2, 3)
        torch.testing.assert_close(model(packed), out)
    if injection == "film":
        widths = stage_widths(model)
        assert widths == {"stage1": 8, "stage2": 8, "stage3": 16, "stage4": 32}  # 8, 16, 32, 64 before
        assert {s: l.out_features for s, l in model.injection.gamma.items()} == widths
        assert {s: l.out_features for s, l in model.injection.beta.items()} == widths
    if injection == "concat_fc":
        mlp = model.injection.q_mlp[0].out_features
        assert model.injection.head.in_features == model.backbone.features[-1][1][0].out_channels + mlp == 32 + 8
        assert not any(k.startswith("backbone.fc.") for k in model.state_dict())  # the backbone's head is gone
    if injection == "channel":
        assert model.backbone.features[0][0][0].in_channels == C + 3
    # the estimator is outside the oracle graph: unpruned
    assert [m.out_channels for m in model.estimator.modules() if isinstance(m, nn.Conv2d)] == [16, 32, 64]

    save_model(model, tmp_path / "model.pt")
    twin = load_model(tmp_path / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(twin(image, q), out)
        torch.testing.assert_close(twin(image), model(image))
        model.mode = "blind"
        assert model(packed).shape == (2, 3)


def test_blind_pruning_prunes_the_estimator_but_keeps_q_dim() -> None:
    model = build("film", 3, mode="blind")
    perturb_film(model, scale=0.1)
    image, q, packed = batch(3)
    _prune(model, packed)
    assert [m.out_channels for m in model.estimator.modules() if isinstance(m, nn.Conv2d)] == [16, 16, 32]
    assert model.estimator.fc.out_features == 3
    model.eval()
    with torch.no_grad():
        assert model(packed).shape == (2, 3)
        model.mode = "oracle"
        assert model(image, q).shape == (2, 3)


def test_data_driven_criterion_calibrates_the_oracle_model() -> None:
    model = build("film", 3)
    image, q, packed = batch(3, n=6)
    result = _prune(model, packed[:2], criterion="taylor", calibration=[(packed, torch.tensor([0, 1, 2, 0, 1, 2]))])
    assert result.macs_after < 0.6 * result.macs_before


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, as medprune.compress.export uses
def test_two_input_onnx_matches_pytorch(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = build("film", 3)
    perturb_film(model)
    model.eval()
    image, q, _ = batch(3)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (image, q), str(path), dynamo=False, opset_version=17, input_names=["image", "q"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "q": {0: "batch"},
                                                             "logits": {0: "batch"}}, do_constant_folding=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "q"]
    image, q, _ = batch(3, n=3, seed=5)
    got = session.run(["logits"], {"image": image.numpy(), "q": q.numpy()})[0]
    with torch.no_grad():
        ref = model(image, q).numpy()
        flat = model(image, 1.0 - q).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert np.abs(flat - ref).max() > 1e-3  # the graph really uses q


def test_fx_traces_the_film_hooks() -> None:
    model = build("film", 3)
    perturb_film(model)
    model.eval()
    image, _, _ = batch(3)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(image), model(image))
    assert sum(n.op == "call_module" and n.target.startswith("injection.gamma.") for n in traced.graph.nodes) == 4


def test_deepcopy_binds_film_to_the_copy_and_no_hooks_stay() -> None:
    model = build("film", 3)
    perturb_film(model)
    model.eval()
    image, q, _ = batch(3)
    with torch.no_grad():
        before = model(image, q)
        twin = copy.deepcopy(model)
        torch.testing.assert_close(twin(image, q), before)
        for layer in twin.injection.gamma.values():
            layer.bias.add_(1.0)
        assert (twin(image, q) - before).abs().max() > 1e-3
        torch.testing.assert_close(model(image, q), before, rtol=0, atol=0)
        with pytest.raises(RuntimeError):
            model(image[:, :, :15, :15], q)  # too small for small_cnn: fails inside the backbone
    assert hook_count(model) == 0 and hook_count(twin) == 0


def test_input_errors_are_explained() -> None:
    model = build("film", 3).eval()
    image, q, packed = batch(3)
    with pytest.raises(ValueError, match=r"image of 1 channels or a packed batch of 1 \+ 3"):
        model(torch.zeros(2, 2, SIZE, SIZE))
    with pytest.raises(ValueError, match="q given twice"):
        model(packed, q)
    with pytest.raises(ValueError, match=r"q must have shape \(N, q_dim\) = \(2, 3\), got \(2, 1\)"):
        model(image, q[:, :1])
    blind_less = build("film", 3, estimator=False).eval()
    assert blind_less.estimator is None
    with pytest.raises(ValueError, match="no estimator.*estimator: true"):
        blind_less(image)
    with pytest.raises(ConfigError, match="model.kwargs.mode: blind mode uses the estimator"):
        blind_less.mode = "blind"


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"backbone": "small_cn"},
     r"model.kwargs.backbone: unknown classification backbone 'small_cn'; did you mean 'small_cnn'"),
    ({"backbone": "degradation_aware"}, r"model.kwargs.backbone: .*cannot wrap itself"),
    ({"backbone": "unet"}, r"model.kwargs.backbone: unknown classification backbone 'unet'"),
    ({"injection": "flim"}, r"model.kwargs.injection: unknown injection 'flim'; did you mean 'film'"),
    ({"q_dim": 0}, r"model.kwargs.q_dim: must be an integer >= 1"),
    ({"mode": "blind", "estimator": False}, r"model.kwargs.mode: blind mode uses the estimator"),
    ({"mode": "orcale"}, r"model.kwargs.mode: unknown mode 'orcale'; did you mean 'oracle'"),
    ({"injection": "none", "mode": "blind"}, r"model.kwargs.mode: injection 'none' ignores q"),
    ({"q_hidden": 0}, r"model.kwargs.q_hidden: must be an integer >= 1"),
    ({"estimator_weight": -1.0}, r"model.kwargs.estimator_weight: must be a number >= 0"),
    ({"backbone_kwargs": {"width": 0.5}}, r"model.kwargs.backbone_kwargs.width: .*set model.kwargs.width"),
    ({"backbone_kwargs": {"widht": 0.5}},
     r"model.kwargs.backbone_kwargs: backbone 'small_cnn': .*unknown argument 'widht'"),
    ({"backbone": "inception_v3", "backbone_kwargs": {"aux_logits": True}}, r"model.kwargs.backbone_kwargs.aux_logits"),
])
def test_bad_arguments_name_the_key(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        model_min_input_size("degradation_aware", **kwargs)  # refused at config load, without building
    with pytest.raises(ConfigError, match=pattern):
        create_model("degradation_aware", **kwargs)


@pytest.mark.parametrize(("backbone", "size"), [("small_cnn", (16, 16)), ("resnet56_cifar", (1, 1)),
                                                ("inception_v4", (75, 75))])
def test_min_input_size_is_the_backbones(backbone: str, size: tuple[int, int]) -> None:
    assert model_min_input_size("degradation_aware", backbone=backbone) == size
    if backbone != "inception_v4":
        model = create_model("degradation_aware", backbone=backbone, in_chans=1, injection="channel", q_dim=2,
                             width=0.25, backbone_kwargs={"blocks_per_stage": 1} if backbone != "small_cnn" else None)
        assert model.min_input_size == (1, *size)
        assert model.backbone.min_input_size[0] == 3  # image + two q planes


@pytest.mark.parametrize("backbone", ["resnet56_cifar", "preresnet56_v2"])
def test_film_on_resnets_prunes_with_the_stages(backbone: str) -> None:
    model = build("film", 1, backbone=backbone, backbone_kwargs={"blocks_per_stage": 1})
    perturb_film(model, scale=0.1)
    image, q, packed = batch(1)
    _prune(model, packed)
    widths = stage_widths(model)
    assert {s: l.out_features for s, l in model.injection.gamma.items()} == widths
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(packed), model(image, q))
