"""Record and re-apply a model's layer widths, so a pruned registry model can be rebuilt.

A pruned model differs from its registry twin only in the widths of some layers (and, after BPCP,
in its ``keep_blocks`` argument, which the registry handles). :func:`capture_structure` records the
width attributes of every convolution, linear and normalisation layer; :func:`apply_structure`
resizes a freshly built model's layers to those widths (empty tensors of the recorded shapes)
so that ``load_state_dict`` can fill them. Nothing is unpickled and no code is stored: the record
is plain ints, safe for ``torch.load(weights_only=True)``.

Example::

    structure = capture_structure(pruned)
    twin = create_model(name, **kwargs)
    apply_structure(twin, structure)
    twin.load_state_dict(pruned.state_dict())    # same outputs as ``pruned``
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medprune.errors import CheckpointError

__all__ = ["capture_structure", "apply_structure", "build_from_spec", "record_transform", "TRANSFORMS"]

#: Architecture changes recorded in a spec's ``transforms`` list, replayed in order by
#: :func:`build_from_spec` between building the registry model and resizing its layers.
#: kind -> "module:function"; the function is ``fn(model, options: dict, source: str) -> nn.Module``
#: and raises :class:`~medprune.errors.CheckpointError` for options it cannot replay.
TRANSFORMS: dict[str, str] = {
    "pooling": "medprune.models.pooling:apply_pooling_spec",
    "quantize": "medprune.compress.quantize:apply_quantize_spec",
}

_NORMS = (nn.modules.batchnorm._NormBase,)


def _dims(module: nn.Module) -> dict[str, int] | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups,
                "bias": int(module.bias is not None)}
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features,
                "bias": int(module.bias is not None)}
    if isinstance(module, _NORMS):  # BatchNorm*, InstanceNorm*
        return {"num_features": module.num_features}
    if isinstance(module, nn.GroupNorm):
        return {"num_channels": module.num_channels, "num_groups": module.num_groups}
    if isinstance(module, nn.PReLU):
        return {"num_parameters": module.num_parameters}
    if type(module).__name__ == "FrozenBatchNorm2d":  # torchvision detection backbones
        return {"num_features": int(module.weight.shape[0])}
    if type(module).__name__ == "ChannelGate":  # hybrid wavelet pooling's per-channel gate
        return {"num_channels": int(module.weight.shape[1])}
    return None


def capture_structure(model: nn.Module) -> dict[str, dict[str, int]]:
    """``{module name: width attributes}`` for every layer whose width pruning can change."""
    out: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        dims = _dims(module)
        if dims is not None:
            out[name] = dims
    return out


def _resize_param(module: nn.Module, attr: str, shape: tuple[int, ...]) -> None:
    old = getattr(module, attr, None)
    if old is None or tuple(old.shape) == shape:
        return
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module._buffers[attr] = new


def _resize(module: nn.Module, dims: dict[str, int]) -> None:
    dims = dict(dims)
    want_bias = bool(dims.pop("bias", int(getattr(module, "bias", None) is not None)))
    for key, value in dims.items():
        setattr(module, key, int(value))
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and want_bias != (module.bias is not None):
        # SFP folds what removed channels emitted into a bias the layer may not have had
        weight = module.weight
        module.bias = nn.Parameter(torch.zeros(1, dtype=weight.dtype, device=weight.device)) if want_bias else None
    if isinstance(module, nn.modules.conv._ConvNd):
        k = tuple(module.kernel_size)
        if module.transposed:
            wshape = (module.in_channels, module.out_channels // module.groups, *k)
        else:
            wshape = (module.out_channels, module.in_channels // module.groups, *k)
        _resize_param(module, "weight", wshape)
        _resize_param(module, "bias", (module.out_channels,))
    elif isinstance(module, nn.Linear):
        _resize_param(module, "weight", (module.out_features, module.in_features))
        _resize_param(module, "bias", (module.out_features,))
    elif isinstance(module, _NORMS):
        n = module.num_features
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _resize_param(module, attr, (n,))
    elif isinstance(module, nn.GroupNorm):
        for attr in ("weight", "bias"):
            _resize_param(module, attr, (module.num_channels,))
    elif isinstance(module, nn.PReLU):
        _resize_param(module, "weight", (module.num_parameters,))
    elif type(module).__name__ == "FrozenBatchNorm2d":
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _resize_param(module, attr, (dims["num_features"],))
    elif type(module).__name__ == "ChannelGate":
        _resize_param(module, "weight", (1, dims["num_channels"], 1, 1))


def apply_structure(model: nn.Module, structure: dict[str, dict[str, Any]], source: str = "<model file>") -> nn.Module:
    """Resize ``model``'s layers to the widths in ``structure`` (in place); returns ``model``.

    Raises :class:`~medprune.errors.CheckpointError` naming the layer when the record names a layer
    the model does not have or of another kind.
    """
    modules = dict(model.named_modules())
    for name, dims in structure.items():
        module = modules.get(name)
        if module is None:
            raise CheckpointError(f"{source}: the saved architecture has layer {name!r}, which the rebuilt model "
                                  "lacks (was it saved by another medprune version or from another model?)")
        own = _dims(module)
        if own is None or set(own) != set(dims):
            raise CheckpointError(f"{source}: layer {name!r} is a {type(module).__name__} in the rebuilt model, "
                                  f"which does not match the saved record {sorted(dims)}")
        if own != {k: int(v) for k, v in dims.items()}:
            _resize(module, dims)
    return model


def record_transform(model: nn.Module, kind: str, options: dict[str, Any]) -> None:
    """Append an architecture change (pooling swap, quantization) to ``model.medprune_spec``.

    ``options`` must be plain JSON-like values: the record is stored in weights-only files.
    A model without a spec (not built by the registry) is left alone: it cannot be saved anyway.
    """
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform kind {kind!r}; known: {sorted(TRANSFORMS)}")
    spec = getattr(model, "medprune_spec", None)
    if isinstance(spec, dict):
        model.medprune_spec = {**spec, "transforms": [*spec.get("transforms", []), {"kind": kind, **options}]}


def _replay(model: nn.Module, record: Any, source: str) -> nn.Module:
    import importlib

    if not isinstance(record, dict) or record.get("kind") not in TRANSFORMS:
        raise CheckpointError(f"{source}: unknown architecture change {record!r} in the model record "
                              f"(known kinds: {', '.join(sorted(TRANSFORMS))}); saved by a newer medprune?")
    module_name, fn_name = TRANSFORMS[record["kind"]].split(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    options = {k: v for k, v in record.items() if k != "kind"}
    return fn(model, options, source)


def build_from_spec(spec: dict[str, Any], source: str = "<model file>") -> nn.Module:
    """Rebuild a (possibly pruned, pooled, quantized) registry model from its ``medprune_spec``.

    The spec holds the registry ``name``, its ``kwargs``, the ``transforms`` applied after
    building (replayed in order, see :data:`TRANSFORMS`) and, for pruned models, the
    ``structure`` recorded by :func:`capture_structure`.
    """
    from medprune.models._registry import create_model

    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{source}: no model architecture recorded (model_spec missing); "
                              "it was not saved by medprune.save_model or the trainer")
    model = create_model(spec["name"], **dict(spec.get("kwargs") or {}))
    for record in spec.get("transforms") or []:
        model = _replay(model, record, source)
    structure = spec.get("structure")
    if structure:
        apply_structure(model, structure, source)
        model.medprune_spec = {**model.medprune_spec, "structure": structure}
    return model
