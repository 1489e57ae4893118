"""Direct Quantization (Hoang et al., IJCAI 2020) as quantization-aware training.

*Confirmed* (the paper's abstract; DESIGN.md §5): the quantized weights are updated directly, with
learnable quantization levels, instead of quantizing a full-precision copy that gradient descent
updates behind their back; the activation quantizer accounts for each channel's quantization error
so that a few high-variance channels do not dictate the range for all the others.

*Reconstruction* (the paper's details could not be obtained; every choice is an argument):

- every quantized ``nn.Conv2d`` / ``nn.Linear`` gets ``2**bits`` learnable levels ``v`` (bits 2, 4
  or 8), started by ``level_init`` (default ``kmeans``: 1-D k-means, the levels of least squared
  weight error; ``quantile`` and ``uniform`` are the alternatives);
- ``w_q = v[k(w)]`` with ``k(w)`` the nearest level; ∂L/∂v_k = Σ ∂L/∂w_q over the weights assigned
  to ``k``; the weights get ∂L/∂w_q straight through (STE), except a weight beyond the outermost
  level receives no gradient pushing it further out;
- **how the assignment is held**: the layer keeps its ordinary ``weight`` tensor and re-assigns
  every weight to its nearest level on every forward. :func:`quantize_model` writes the quantized
  values into ``weight`` (so the stored weights *are* the quantized weights when training
  starts); afterwards ``weight`` holds the quantized value plus the updates that have not yet
  carried it past a midpoint between two levels. We keep that remainder because projecting the
  weights back onto the levels after every step would freeze the assignment at low bit widths (a
  fine-tuning step is far smaller than half a 2-bit level spacing). Level updates move every
  weight assigned to that level at once, which is the "direct" part;
- activations: the *input* of each quantized layer is quantized uniformly to ``act_bits``
  (unsigned ``[0, clip]`` when the calibration input is never negative, else symmetric
  ``[-clip, clip]``, rounding with an STE). ``clip`` is chosen on calibration batches from a grid
  of ``act_grid`` candidates to minimise the channel-balanced error
  Σ_c ‖x_c − Q(x_c)‖² / ‖x_c‖² (``act_objective="mse"`` gives the tensor-wide error for
  comparison); all quantizers are fitted at once on float activations (weights already
  quantized) and then kept fixed during fine-tuning;
- the first and the last quantizable layer (in execution order) stay in float by default
  (``skip_first_last``), as is usual; so do layers that do not run in eval mode (train-only
  branches such as an auxiliary head), biases, BatchNorm and everything else.

The quantized model trains through :class:`~medprune.engine.trainer.Trainer` like any other model
(the optimiser sees ``weight``, ``bias`` and ``levels``), saves and loads with
:func:`medprune.save_model` / :func:`medprune.load_model` (the record lists the quantized layers,
see :func:`apply_quantize_spec`), and exports to ONNX through :func:`materialize`, which
:func:`~medprune.compress.export.export_onnx` calls: plain layers holding the quantized weights
and ``Div → Clip → Round → Mul`` for the activations. That ONNX file is fp32 and **not smaller**
than the float model's; :func:`packed_size_bytes` gives the size of ``bits``-bit packed codes.

Example::

    pruned = medprune.prune_model(model, x, criterion="l2", ratio=0.5).model   # optional
    qmodel = quantize_model(pruned, bits=4, act_bits=8, calibration=batches)
    Trainer(qmodel, train_set, val_set, config, run_dir, device).fit()          # fine-tune (QAT)
    medprune.save_model(qmodel, "model.q4.pt")
    export_onnx(qmodel, x, "model.q4.onnx")
"""

from __future__ import annotations

import copy
import fnmatch
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from medprune.compress._qlayers import (ACT_OBJECTIVES, LEVEL_INITS, QUANT_LAYERS, ActQuantizer, ClipSearch,
                                        QuantConv2d, QuantLinear, channel_values, fake_quant)
from medprune.errors import CheckpointError, QuantizationError
from medprune.models.structure import record_transform
from medprune.registry import suggest

__all__ = ["BITS", "quantize_model", "apply_quantize_spec", "materialize", "quantized_layers", "packed_size_bytes",
           "calibration_images", "fit_act_clip", "channel_balanced_error", "quantization_error", "fake_quant",
           "QuantConv2d", "QuantLinear", "ActQuantizer", "LEVEL_INITS", "ACT_OBJECTIVES"]

log = logging.getLogger(__name__)

#: Supported bit widths of weights and activations.
BITS = (2, 4, 8)

Calibration = Iterable[Any] | Callable[[], Iterable[Any]]


def quantized_layers(model: nn.Module) -> dict[str, QuantConv2d | QuantLinear]:
    """``{name: layer}`` of the Direct-Quantization layers in ``model`` (empty for a float model)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}


def _check_bits(bits: Any, act_bits: Any, where: str, error: type[Exception]) -> None:
    if bits not in BITS or isinstance(bits, bool):
        raise error(f"{where}bits must be one of {', '.join(map(str, BITS))}, got {bits!r}")
    if act_bits is not None and (act_bits not in BITS or isinstance(act_bits, bool)):
        raise error(f"{where}act_bits must be one of {', '.join(map(str, BITS))} or None (float "
                    f"activations), got {act_bits!r}")


def calibration_images(calibration: Calibration | None) -> list[torch.Tensor]:
    """Calibration batches (a list or a zero-argument callable) as a list of image tensors; labels are dropped."""
    if calibration is None:
        return []
    batches = calibration() if callable(calibration) else calibration
    out = []
    for i, item in enumerate(batches):
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise QuantizationError(f"calibration batch {i}: expected an image tensor (N, C, H, W) or an "
                                    f"(images, labels) pair, got {type(x).__name__}")
        out.append(x)
    return out


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _execution_order(model: nn.Module, names: Sequence[str], x: torch.Tensor) -> list[str]:
    """``names`` in the order the layers run on ``x`` (layers not run are left out)."""
    order: list[str] = []
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda *_, n=n: order.append(n)) for n in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x.to(_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    seen: dict[str, None] = {}
    for n in order:
        seen.setdefault(n, None)
    return list(seen)


def _select(model: nn.Module, skip_first_last: bool, skip: Sequence[str], example: torch.Tensor | None) -> list[str]:
    candidates = [n for n, m in model.named_modules() if type(m) in QUANT_LAYERS]
    others = [n for n, m in model.named_modules() if n and type(m) not in QUANT_LAYERS
              and isinstance(m, tuple(QUANT_LAYERS))]
    if others:
        log.info("left in float (subclassed layers with their own forward): %s", ", ".join(others[:5]))
    for pattern in skip:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in candidates):
            raise QuantizationError(f"skip: {suggest(pattern, candidates, 'layer')}")
    if example is None:
        raise QuantizationError("quantize_model needs example_inputs or calibration batches: it runs the model once "
                                "to find the layers that run in eval mode and the first and last of them")
    order = _execution_order(model, candidates, example)
    idle = [n for n in candidates if n not in order]
    if idle:  # train-only branches (e.g. an auxiliary head) are never deployed nor calibrated
        log.info("left in float (not run in eval mode): %s", ", ".join(idle[:5]))
    ends = {order[0], order[-1]} if skip_first_last and order else set()
    chosen = [n for n in order if n not in ends and not any(fnmatch.fnmatchcase(n, p) for p in skip)]
    if not chosen:
        raise QuantizationError("no nn.Conv2d / nn.Linear layer left to quantize (check skip and skip_first_last)")
    return sorted(chosen, key=candidates.index)


def _wrap(model: nn.Module, names: Sequence[str], bits: int, act_bits: int | None) -> None:
    for name in names:
        layer = model.get_submodule(name)
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, QUANT_LAYERS[type(layer)].from_float(layer, bits, act_bits))


def fit_act_clip(batches: Iterable[torch.Tensor], bits: int, objective: str = "channel_balanced", *,
                 grid: int = 64, channel_dim: int = 1) -> tuple[float, bool]:
    """Clip range of an ``bits``-bit activation quantizer fitted on ``batches`` of that activation.

    Returns ``(clip, signed)``. ``objective`` names an entry of :data:`ACT_OBJECTIVES`
    (``channel_balanced`` or ``mse``). ``batches`` is iterated twice.

    Example::

        clip, signed = fit_act_clip([x], bits=4)                 # x: (N, C, H, W)
        channel_balanced_error(x, fake_quant(x, clip, 4, signed))
    """
    batches = list(batches)
    search = ClipSearch(bits, objective, grid=grid, channel_dim=channel_dim)
    for x in batches:
        search.observe(x)
    for x in batches:
        search.accumulate(x)
    return search.best(), search.signed


def channel_balanced_error(x: torch.Tensor, x_q: torch.Tensor, channel_dim: int = 1) -> float:
    """Σ_c ‖x_c − x_q,c‖² / ‖x_c‖² over the channels of ``x`` with a non-zero norm."""
    values, quantized = channel_values(x, channel_dim), channel_values(x_q, channel_dim)
    norm = (values ** 2).sum(dim=1)
    err = ((values - quantized) ** 2).sum(dim=1)
    alive = norm > 0
    return float((err[alive] / norm[alive]).sum())


def _calibrate(model: nn.Module, layers: dict[str, QuantConv2d | QuantLinear], images: list[torch.Tensor],
               objective: str, grid: int) -> None:
    searches = {name: ClipSearch(layer.act.bits, objective, grid=grid,
                                 channel_dim=1 if isinstance(layer, QuantConv2d) else -1)
                for name, layer in layers.items() if layer.act is not None}
    device = _device(model)
    was_training = model.training
    model.eval()
    for name in searches:
        layers[name].act.bypass = True
    try:
        for phase in ("observe", "accumulate"):
            handles = [layers[name].register_forward_pre_hook(
                lambda _m, args, s=search, p=phase: getattr(s, p)(args[0])) for name, search in searches.items()]
            try:
                with torch.no_grad():
                    for x in images:
                        model(x.to(device))
            finally:
                for h in handles:
                    h.remove()
    finally:
        for name in searches:
            layers[name].act.bypass = False
        model.train(was_training)
    for name, search in searches.items():
        if search.max_abs == 0.0:
            log.warning("layer %s: its input was all zeros on the calibration batches", name)
        layers[name].act.set_range(search.best(), search.signed)


def quantize_model(
    model: nn.Module,
    *,
    bits: int = 4,
    act_bits: int | None = 8,
    calibration: Calibration | None = None,
    example_inputs: torch.Tensor | None = None,
    skip_first_last: bool = True,
    skip: Sequence[str] = (),
    level_init: str = "kmeans",
    act_objective: str = "channel_balanced",
    act_grid: int = 64,
) -> nn.Module:
    """Turn ``model``'s ``nn.Conv2d``/``nn.Linear`` layers into Direct-Quantization layers, in place.

    Args:
        model: a float model (a registry model, possibly pruned); deep-copy it first to keep it.
        bits: weight bits (2, 4 or 8): ``2**bits`` learnable levels per layer.
        act_bits: bits of each quantized layer's input (2, 4 or 8), or ``None`` for float inputs.
        calibration: batches of images or ``(images, labels)`` pairs — a list, or a zero-argument
            callable such as :func:`~medprune.compress.calibration.class_balanced_batches` returns;
            read twice to fit the activation clip ranges. Required when ``act_bits`` is set.
        example_inputs: a batch to run the model on when there is no calibration (it finds the
            layers that run in eval mode — train-only branches stay float — and the first/last).
        skip_first_last: keep the first and last quantizable layers (execution order) in float.
        skip: more layer names to keep in float (``fnmatch`` patterns, e.g. ``"AuxLogits.*"``).
        level_init: how levels start: ``kmeans``, ``quantile`` or ``uniform``.
        act_objective: the clip search's objective: ``channel_balanced`` or ``mse``.
        act_grid: number of clip candidates tried (``max|x|·k/act_grid``, k = 1..act_grid).

    Returns:
        ``model`` itself, its layers replaced, its weights written onto their levels, its
        activation quantizers calibrated; the change is recorded in ``model.medprune_spec`` so
        :func:`medprune.save_model` files rebuild it.

    Raises:
        QuantizationError: bad bit widths or names, a model already quantized, or no calibration
            data where it is needed.
    """
    _check_bits(bits, act_bits, "", QuantizationError)
    for value, registry in ((level_init, LEVEL_INITS), (act_objective, ACT_OBJECTIVES)):
        if value not in registry:
            raise QuantizationError(suggest(value, registry.names(), registry.kind))
    if act_grid < 2:
        raise QuantizationError(f"act_grid must be >= 2, got {act_grid}")
    if quantized_layers(model):
        raise QuantizationError("the model is already quantized; quantize the float model instead")
    images = calibration_images(calibration)
    if act_bits is not None and not images:
        raise QuantizationError(f"act_bits={act_bits} needs calibration batches to fit the activation ranges "
                                "(random inputs give ranges the real data never has); pass calibration=, "
                                "or act_bits=None for float activations")
    example = images[0] if images else example_inputs
    names = _select(model, skip_first_last, list(skip), example)
    _wrap(model, names, bits, act_bits)
    layers = quantized_layers(model)
    for layer in layers.values():
        layer.init_levels(level_init)
        layer.snap()
    if act_bits is not None:
        _calibrate(model, layers, images, act_objective, act_grid)
    record_transform(model, "quantize", {"method": "direct", "bits": bits, "act_bits": act_bits, "layers": names,
                                         "level_init": level_init, "act_objective": act_objective})
    log.info("quantized %d layers to %d-bit weights%s", len(names), bits,
             f" and {act_bits}-bit inputs" if act_bits is not None else "")
    return model


def apply_quantize_spec(model: nn.Module, options: dict[str, Any], source: str) -> nn.Module:
    """Replay a ``quantize`` record on a freshly built model (used by :func:`medprune.load_model`).

    Wraps the recorded layers with uncalibrated quantizers and placeholder levels; the state dict
    loaded next fills in levels, weights and clip ranges. Raises
    :class:`~medprune.errors.CheckpointError` naming ``source`` for a record it cannot replay.
    """
    where = f"{source}: quantize record: "
    if not isinstance(options, dict):
        raise CheckpointError(f"{where}expected a mapping, got {type(options).__name__}")
    if options.get("method", "direct") != "direct":
        raise CheckpointError(f"{where}unknown method {options.get('method')!r} (known: direct)")
    missing = [k for k in ("bits", "act_bits", "layers") if k not in options]
    if missing:
        raise CheckpointError(f"{where}missing {', '.join(missing)}; saved by another medprune version?")
    bits, act_bits, names = options["bits"], options["act_bits"], options["layers"]
    _check_bits(bits, act_bits, where, CheckpointError)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{where}layers must be a non-empty list of layer names, got {names!r}")
    modules = dict(model.named_modules())
    for name in names:
        layer = modules.get(name)
        if layer is None:
            raise CheckpointError(f"{where}layer {name!r} does not exist in the rebuilt "
                                  f"{model.medprune_spec.get('name', type(model).__name__)}"
                                  if isinstance(getattr(model, "medprune_spec", None), dict)
                                  else f"{where}layer {name!r} does not exist in the rebuilt model")
        if type(layer) not in QUANT_LAYERS:
            raise CheckpointError(f"{where}layer {name!r} is a {type(layer).__name__}; only nn.Conv2d and "
                                  "nn.Linear are quantized")
    _wrap(model, names, bits, act_bits)
    record_transform(model, "quantize", dict(options))
    return model


def materialize(model: nn.Module) -> nn.Module:
    """An inference copy of a quantized model made of plain layers (``model`` itself if it is float).

    Each quantized layer becomes a plain ``nn.Conv2d``/``nn.Linear`` holding its quantized weights,
    preceded by its activation quantizer (``nn.Sequential(quantizer, layer)``). The outputs equal
    ``model``'s in eval mode exactly; the copy exports to ONNX with standard ops. It is for
    export and inference only: save the quantized ``model`` itself (the copy has no model record).
    """
    layers = quantized_layers(model)
    if not layers:
        return model
    out = copy.deepcopy(model)
    for name, layer in quantized_layers(out).items():
        plain = layer.to_float()
        replacement: nn.Module = nn.Sequential(layer.act, plain) if layer.act is not None else plain
        parent_name, _, leaf = name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, leaf, replacement)
    if hasattr(out, "medprune_spec"):
        del out.medprune_spec
    return out.train(model.training)


def packed_size_bytes(model: nn.Module) -> int:
    """Bytes to store ``model`` with each quantized weight as a packed ``bits``-bit code.

    Codes of quantized layers (``ceil(n·bits/8)``), their levels and every other tensor of the
    state dict (biases, BatchNorm, float layers, clip ranges) at its own element size. A theoretical
    figure: ONNX and ONNX Runtime have no sub-8-bit weight storage, so the exported file is larger.
    For a float model it is the state dict's tensor bytes.
    """
    coded = {f"{name}.weight": layer.bits for name, layer in quantized_layers(model).items()}
    total = 0
    for key, tensor in model.state_dict().items():
        if key in coded:
            total += math.ceil(tensor.numel() * coded[key] / 8)
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def quantization_error(x: torch.Tensor, clip: float, bits: int, signed: bool, channel_dim: int = 1) -> float:
    """Channel-balanced error of quantizing ``x`` with clip ``clip`` (a helper for reports and tests)."""
    return channel_balanced_error(x, fake_quant(x, clip, bits, signed), channel_dim)
