"""Tracing a model for Torch-Pruning, with the gaps of Torch-Pruning 1.6.1 closed (DESIGN.md §4).

Torch-Pruning's :class:`~torch_pruning.DependencyGraph` does the surgery; this module decides how it
is built and leaves the model as it found it:

1. **In-place activations** (MONAI / nnU-Net style ``InstanceNorm → ReLU(inplace=True)``): an
   in-place op overwrites the norm's output ``grad_fn``, so the tracer loses the norm (it stays
   unpruned, or ``build_dependency`` crashes on concatenated skips). :func:`no_inplace` switches
   every ``inplace`` flag off while tracing and pruning, and restores it afterwards.
2. **Train-only branches** (Inception V3's auxiliary head): Torch-Pruning traces in eval mode, so
   branches used only in training are missed and the model fails in ``train()`` after pruning.
   :func:`train_forward` traces in train mode (batch ≥ 2 for BatchNorm); running statistics are
   restored afterwards.
3. **Detectors** (torchvision Faster R-CNN): in eval mode the RPN head hangs off detached
   proposals and is missed; :func:`detection_forward` traces in train mode with synthetic targets
   so the RPN and RoI heads are reached through their losses.
   torchvision's backbones also use ``FrozenBatchNorm2d`` (buffers, not a ``BatchNorm`` subclass),
   which Torch-Pruning does not know: :class:`FrozenBatchNormPruner` slices it with its conv.
   Likewise :class:`ChannelGatePruner` slices the per-channel gate of hybrid wavelet pooling
   (:mod:`medprune.models.pooling`); its fixed DWT filter is shared by all channels and needs none.
4. **Side effects**: building a graph leaves the model in eval mode, and pruning replaces
   parameters (resetting ``requires_grad``). :class:`preserved_state` records each module's
   mode, each parameter's ``requires_grad`` (by name) and every buffer, and puts them back.
5. **Shape-only views mistaken for flattens** (Faster R-CNN's ``MultiScaleRoIAlign``): when a pyramid
   level receives exactly one RoI, ``result[idx] = roi_align(...)`` makes PyTorch view the
   ``(1, 256, 7, 7)`` value as ``(256, 7, 7)``. Torch-Pruning infers that view's output width by
   walking downstream to the next layer with known inputs, *through* the real flatten, reads
   ``fc6.in_features`` (12544) against 256 channels and maps the view as a flatten of stride 49.
   Indices are then expanded twice on one path (256 → 12544 → 614656 …), cycle through the other
   levels and the shared RPN head, and grouping runs out of memory. :func:`drop_nested_flattens`
   keeps only the flatten nearest the consuming layer and turns every flatten that reaches another
   one into the element-wise op it is. (One 800 px image is enough to trigger it: the synthetic box
   of :func:`detection_forward` is then the only RoI on the coarsest level.)
6. **Tracing memory**: the graph keeps every ``grad_fn`` alive, and with them every activation saved
   for a backward pass that never runs (4.7 GB for a ResNet-50 FPN at 800 px, batch 2).
   :func:`structure_only` traces with :func:`torch.autograd.graph.saved_tensors_hooks` that keep
   nothing; Torch-Pruning reads only the shapes and dimensions autograd stores beside them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from medprune.compress._tp import tp
from torch import nn

__all__ = ["ForwardFn", "no_inplace", "preserved_state", "train_forward", "detection_forward", "build_graph",
           "output_layers", "input_layers", "flatten_outputs", "structure_only", "drop_nested_flattens"]

#: ``forward_fn(model, example_inputs) -> outputs`` used for tracing and the train-mode self-check.
ForwardFn = Callable[[nn.Module, Any], Any]


@contextlib.contextmanager
def no_inplace(model: nn.Module) -> Iterator[None]:
    """Turn every module's ``inplace`` flag off for the duration (gap 1)."""
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in switched:
        m.inplace = False
    try:
        yield
    finally:
        for m in switched:
            m.inplace = True


class preserved_state(contextlib.AbstractContextManager):
    """Restore modes, ``requires_grad`` (by parameter name) and, optionally, buffers on exit (gap 4).

    Buffers are restored only where their shape is unchanged (a pruned BatchNorm keeps its pruned
    statistics, which Torch-Pruning slices correctly).
    """

    def __init__(self, model: nn.Module, *, buffers: bool = True) -> None:
        self.model = model
        self.modes = {name: m.training for name, m in model.named_modules()}
        self.frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        self.buffers = {name: b.detach().clone() for name, b in model.named_buffers()} if buffers else {}

    def restore(self) -> None:
        for name, m in self.model.named_modules():
            if name in self.modes:
                m.training = self.modes[name]
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in self.frozen)
        if self.buffers:
            with torch.no_grad():
                for name, b in self.model.named_buffers():
                    old = self.buffers.get(name)
                    if old is not None and old.shape == b.shape:
                        b.copy_(old)

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def _at_least_two(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == 1:
        return torch.cat([x, x], dim=0)
    return x


def train_forward(model: nn.Module, example_inputs: Any) -> Any:
    """Forward in train mode so train-only branches are traced (gap 2)."""
    model.train()
    x = _at_least_two(example_inputs)
    if isinstance(x, (tuple, list)):
        return model(*x)
    if isinstance(x, dict):
        return model(**x)
    return model(x)


def detection_forward(model: nn.Module, example_inputs: Any) -> Any:
    """Forward a torchvision detector in train mode with one synthetic box per image (gap 3).

    The losses depend on every head, so the RPN head behind the FPN and the RoI heads join the graph.
    """
    model.train()
    images = list(example_inputs) if isinstance(example_inputs, torch.Tensor) else list(example_inputs)
    targets = []
    for img in images:
        h, w = img.shape[-2:]
        box = torch.tensor([[0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h]], dtype=img.dtype, device=img.device)
        targets.append({"boxes": box, "labels": torch.ones(1, dtype=torch.int64, device=img.device)})
    return model(images, targets)


def is_detector(model: nn.Module) -> bool:
    """A torchvision two-stage detector (``GeneralizedRCNN``)."""
    try:
        from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    return isinstance(model, GeneralizedRCNN)


def default_forward_fn(model: nn.Module) -> ForwardFn:
    """The tracing forward medprune uses for ``model``: the model's own ``trace_forward(example_inputs)``
    when it declares one (a detector on tensors synthesises the targets its losses need), else
    :func:`detection_forward` for torchvision detectors and :func:`train_forward` for the rest."""
    own = getattr(model, "trace_forward", None)
    if callable(own):
        return lambda m, example_inputs: m.trace_forward(example_inputs)
    return detection_forward if is_detector(model) else train_forward


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) model output, in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out, key=str) for t in flatten_outputs(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten_outputs(o)]
    return []


class FrozenBatchNormPruner(tp.pruner.function.BasePruningFunc):
    """Prunes torchvision's ``FrozenBatchNorm2d`` (its statistics and affine terms are buffers)."""

    def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[0])) - {int(i) for i in idxs})
        for name in ("weight", "bias", "running_mean", "running_var"):
            layer._buffers[name] = layer._buffers[name][keep].contiguous()
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[0])

    get_in_channels = get_out_channels


class ChannelGatePruner(tp.pruner.function.BasePruningFunc):
    """Prunes medprune's :class:`~medprune.models.pooling.ChannelGate` (one logit per channel it scales).

    A gate keeps the width of its input, so its in- and out-channels are the same and move together.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[1])) - {int(i) for i in idxs})
        layer.weight = nn.Parameter(layer.weight.data[:, keep].contiguous(), requires_grad=layer.weight.requires_grad)
        layer.num_channels = len(keep)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[1])

    get_in_channels = get_out_channels


def customized_pruners() -> dict[type, Any]:
    """Pruners for layer types Torch-Pruning does not handle itself."""
    from medprune.models.pooling import ChannelGate

    pruners: dict[type, Any] = {ChannelGate: ChannelGatePruner()}
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d

        pruners[FrozenBatchNorm2d] = FrozenBatchNormPruner()
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    return pruners


@contextlib.contextmanager
def structure_only() -> Iterator[None]:
    """Record autograd graphs without the tensors they save for backward (gap 6).

    Torch-Pruning walks ``grad_fn.next_functions`` and reads the integer attributes autograd keeps
    beside the saved tensors (``_saved_self_sym_sizes``, ``_saved_dim``, split sizes, slice bounds),
    never the tensors themselves, and never runs backward. Dropping them lets each activation be
    freed as soon as the forward is done with it. A backward through such a graph raises.
    """
    def pack(tensor: torch.Tensor) -> None:
        return None

    def unpack(_: None) -> torch.Tensor:
        raise RuntimeError("this graph was recorded by medprune's structure-only trace, which keeps no "
                           "activations; it cannot be backpropagated")

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def _flatten_inputs(node: Any) -> list[Any]:
    """The dependencies through which Torch-Pruning maps ``node`` as a flatten (from and to its inputs)."""
    flatten = tp.dependency.index_mapping._FlattenIndexMapping
    deps = [d for d in node.dependencies if any(d.target is i for i in node.inputs)]
    deps += [d for i in node.inputs for d in i.dependencies if d.target is node]
    return [d for d in deps if isinstance(d.index_mapping[0], flatten)]


def _reaches(graph: tp.DependencyGraph, node: Any, targets: set[int]) -> bool:
    """Whether a node in ``targets`` (by id) lies downstream of ``node`` before any layer that has its
    own input width — the walk Torch-Pruning makes to infer a reshape's output width."""
    stack, seen = list(node.outputs), set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if id(n) in targets:
            return True
        if graph.get_in_channels(n) is None:
            stack.extend(n.outputs)
    return False


def drop_nested_flattens(graph: tp.DependencyGraph) -> list[Any]:
    """Unmap every flatten that reaches another flatten downstream (gap 5); return the nodes unmapped.

    Torch-Pruning sizes a reshape's output by the first layer downstream that knows its input width,
    even when another reshape lies in between, so a view in front of a flatten (a squeeze, a no-op
    ``view``) gets the same stride and the indices are multiplied by it twice. Along any such chain
    only the reshape nearest the consumer keeps the mapping: the expansion then happens once, and
    ``fc.in_features`` still shrinks by ``stride`` per removed channel. The others become element-wise
    nodes, so the mapping that Torch-Pruning recomputes before every group leaves them alone.
    """
    flattens = [n for n in graph.module2node.values()
                if n.type == tp.ops.OPTYPE.RESHAPE and _flatten_inputs(n)]
    ids = {id(n) for n in flattens}
    nested = [n for n in flattens if _reaches(graph, n, ids - {id(n)})]
    for node in nested:
        for dep in _flatten_inputs(node):
            dep.index_mapping[0] = tp.dependency.INDEX_MAPPING_PLACEHOLDER
        node.type = tp.ops.OPTYPE.ELEMENTWISE
    return nested


def build_graph(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None = None) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``, traced with the gaps closed.

    Leaves the model's modes, ``requires_grad`` flags and buffers (BatchNorm statistics) unchanged.
    The graph holds no activations (:func:`structure_only`), and nested flattens are unmapped
    (:func:`drop_nested_flattens`).
    """
    forward_fn = forward_fn or default_forward_fn(model)
    with preserved_state(model), no_inplace(model), torch.enable_grad(), structure_only():  # tracer follows autograd
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_inputs, forward_fn=forward_fn, output_transform=flatten_outputs,
            customized_pruners=customized_pruners())
    drop_nested_flattens(graph)
    return graph


_ROOTS = (nn.modules.conv._ConvNd, nn.Linear)


def output_layers(graph: tp.DependencyGraph) -> set[nn.Module]:
    """Conv/linear layers whose output channels reach a model output without another conv/linear.

    These are the classifiers (Inception's main and auxiliary heads, a detector's box and objectness
    predictors): pruning their outputs would change what the model predicts, so they are always
    protected.
    """
    found: set[nn.Module] = set()
    for module, node in graph.module2node.items():
        if not isinstance(module, _ROOTS):
            continue
        stack, seen = list(node.outputs), set()
        terminal = not node.outputs
        while stack and not terminal:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n.module, _ROOTS):
                continue
            if not n.outputs:
                terminal = True
            stack.extend(n.outputs)
        if terminal:
            found.add(module)
    return found


def input_layers(graph: tp.DependencyGraph) -> set[nn.Module]:
    """Conv layers fed by the model input (the ``first_conv`` protection token)."""
    found: set[nn.Module] = set()
    for module, node in graph.module2node.items():
        if not isinstance(module, nn.modules.conv._ConvNd):
            continue
        stack, seen, upstream = list(node.inputs), set(), False
        while stack and not upstream:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            upstream = isinstance(n.module, _ROOTS)
            stack.extend(n.inputs)
        if not upstream:
            found.add(module)
    return found
