"""ONNX export with a parity check against PyTorch.

The device runtime loads an ONNX file; a file whose outputs drift from the model that was
evaluated would silently invalidate every per-class number in the report. :func:`export_onnx`
therefore runs the written graph in ONNX Runtime on the example batch (and on a second batch of a
different size when the batch dimension is dynamic) and refuses — :class:`~medprune.errors.ExportError`,
no file written — when the outputs differ beyond ``atol + rtol·|reference|``::

    result = export_onnx(model, torch.randn(1, 3, 299, 299), "runs/x/export/model.onnx")
    result.max_abs_diff      # e.g. 2.4e-06

The graph has one input ``"input"`` (N, C, H, W) and one output ``"logits"``; a model that takes
more than the image declares ``input_names`` and ``export_inputs(batch)`` and gets one named input
each (the degradation-aware classifier: ``image`` and ``q``; :func:`graph_inputs`). A model with
Direct-Quantization layers is exported through :func:`~medprune.compress.quantize.materialize`
(plain layers holding the quantized weights, ``Div/Clip/Round/Mul`` for the activations). The legacy
TorchScript exporter (``dynamo=False``) is used: the dynamo exporter needs ``onnxscript``, which
medprune does not depend on, and the TorchScript one folds BatchNorm into the convolutions.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medprune._io import atomic_write
from medprune.compress.quantize import materialize, quantized_layers
from medprune.errors import ExportError

__all__ = ["ExportResult", "export_onnx", "compare_outputs", "graph_inputs", "packed_feed", "INPUT_NAME",
           "OUTPUT_NAME"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportResult:
    """Where the graph was written and how closely ONNX Runtime reproduces PyTorch.

    ``max_abs_diff``, ``max_rel_diff`` and ``passed`` are ``None`` when the export ran with
    ``check=False``. ``max_rel_diff`` is ``max |ort − torch| / max(|torch|, 1e-12)`` over all
    checked outputs; ``seconds`` covers export and check. ``within_tolerance`` is the share of
    output values within ``atol + rtol·|torch|``, ``top1_agreement`` the share of checked samples
    whose arg-max agrees; ``criterion`` says which of the two decided ``passed``
    (``"elementwise"``: every value within tolerance; ``"top1"``: agreement ≥ ``min_agreement``).
    """

    path: Path
    max_abs_diff: float | None
    max_rel_diff: float | None
    passed: bool | None
    seconds: float
    within_tolerance: float | None = None
    top1_agreement: float | None = None
    criterion: str = "elementwise"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the path as a string)."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


class _FirstOutput(nn.Module):
    """Exports only the logits of a model that returns a tuple (e.g. logits plus aux logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(*inputs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


def graph_inputs(model: nn.Module, x: torch.Tensor) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """The graph input names and tensors for a batch ``x`` as the data pipeline makes it.

    A model taking more than the image declares ``input_names`` and ``export_inputs(x)``: the
    degradation-aware classifier's batches carry q as constant planes behind the image
    (:mod:`medprune.data.degrade`), which it splits into ``image (N, C, H, W)`` and ``q (N, D)`` —
    its deployment form. Any other model takes ``x`` as its one input ``"input"``.
    """
    split = getattr(model, "export_inputs", None)
    if split is None:
        return [INPUT_NAME], (x,)
    tensors = tuple(split(x))
    names = list(model.input_names)
    if len(names) != len(tensors):
        raise ExportError(f"export_onnx: {type(model).__name__} names {len(names)} inputs ({', '.join(names)}) "
                          f"but export_inputs gave {len(tensors)}")
    return names, tensors


def packed_feed(session: Any, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """ONNX Runtime's feed for a batch ``x`` as the data pipeline makes it, by the graph's inputs.

    One input takes ``x`` (its leading channels when the graph names fewer: a degradation-aware
    model exported in blind mode takes the image only). A graph with more (``image`` and ``q``)
    takes them from the packed batch: the first input the leading channels its shape names, each
    further ``(N, D)`` input the values at pixel (0, 0) of the next ``D`` planes.
    """
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    inputs = session.get_inputs()
    dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(inputs[0].type, np.float32)
    channels = inputs[0].shape[1]
    if len(inputs) == 1:
        if isinstance(channels, int) and array.ndim == 4 and channels < array.shape[1]:
            array = array[:, :channels]  # a graph that takes the image only (estimated q) ignores the planes
        return {inputs[0].name: np.ascontiguousarray(array, dtype=dtype)}
    if not isinstance(channels, int):
        raise ExportError(f"the graph's first input {inputs[0].name!r} has no fixed channel count; cannot split a "
                          "packed batch over its inputs")
    feed = {inputs[0].name: np.ascontiguousarray(array[:, :channels], dtype=dtype)}
    offset = channels
    for spec in inputs[1:]:
        width = int(spec.shape[1])
        feed[spec.name] = np.ascontiguousarray(array[:, offset:offset + width, 0, 0], dtype=dtype)
        offset += width
    if offset != array.shape[1]:
        raise ExportError(f"a batch of {array.shape[1]} channels does not match the graph's inputs "
                          f"({', '.join(f'{i.name} {i.shape}' for i in inputs)})")
    return feed


def _single_input(example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    x = example_inputs
    if isinstance(x, (tuple, list)):
        if len(x) != 1:
            raise ExportError(f"export_onnx: the model must take one input tensor, got {len(x)} example inputs")
        x = x[0]
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ExportError(f"export_onnx: example_inputs must be a batched tensor, got {type(x).__name__}")
    return x


def _reference(model: nn.Module, x: tuple[torch.Tensor, ...]) -> np.ndarray:
    with torch.inference_mode():
        out = model(*x)
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"export_onnx: the model must return a tensor (or a tuple led by one), "
                          f"got {type(out).__name__}")
    return out.detach().float().cpu().numpy()


def compare_outputs(ref: np.ndarray, got: np.ndarray, rtol: float, atol: float) -> dict[str, float]:
    """Differences between reference and runtime outputs ``(N, ...)``: the numbers of :class:`ExportResult`.

    Returns ``max_abs``, ``max_rel``, ``within`` (share of values within ``atol + rtol·|ref|``) and
    ``agreement`` (share of samples whose arg-max over the flattened output agrees).
    """
    ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    diff = np.abs(got - ref)
    if not np.all(np.isfinite(diff)):
        return {"max_abs": float("inf"), "max_rel": float("inf"), "within": 0.0, "agreement": 0.0}
    n = ref.shape[0]
    top_ref, top_got = ref.reshape(n, -1).argmax(axis=1), got.reshape(n, -1).argmax(axis=1)
    return {"max_abs": float(diff.max(initial=0.0)),
            "max_rel": float((diff / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0)),
            "within": float(np.mean(diff <= atol + rtol * np.abs(ref))) if diff.size else 1.0,
            "agreement": float(np.mean(top_ref == top_got)) if n else 1.0}


def _compare(path: str, model: nn.Module, batches: list[tuple[list[str], tuple[torch.Tensor, ...]]], rtol: float,
             atol: float) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    refs, gots = [], []
    for names, inputs in batches:
        x = inputs[0]
        ref = _reference(model, inputs)
        got = session.run([OUTPUT_NAME], {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})[0]
        if got.shape != ref.shape:
            raise ExportError(f"export_onnx: ONNX Runtime output has shape {got.shape} for a batch of "
                              f"{x.shape[0]}, PyTorch {ref.shape}")
        refs.append(ref)
        gots.append(got)
    return compare_outputs(np.concatenate(refs), np.concatenate(gots), rtol, atol)


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    dynamic_batch: bool | None = None,
    check: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    min_agreement: float | None = None,
    check_inputs: Sequence[torch.Tensor] = (),
) -> ExportResult:
    """Export ``model`` (in eval mode) to ONNX at ``path``, checked against PyTorch in ONNX Runtime.

    Args:
        model: a module taking one ``(N, C, H, W)`` tensor (or several, declared by ``input_names``
            and ``export_inputs``: :func:`graph_inputs`); if it returns a tuple in eval mode only
            the first element (the logits) is exported. Its train/eval mode is restored.
        example_inputs: the example batch (a tensor or a 1-tuple holding one), as the data pipeline
            makes it, used for tracing and for the check.
        path: the ``.onnx`` file to write; written atomically, so an existing file is replaced
            only by a graph that passed the check.
        opset: ONNX opset version.
        dynamic_batch: mark the batch dimension dynamic; the check then also runs a random batch
            of a different size. ``None``: dynamic unless the model declares ``export_batch`` (the
            fixed number of inputs its traced graph takes: torchvision's detectors unroll the batch).
        check: compare ONNX Runtime (CPU) outputs with PyTorch's; an output differing by more
            than ``atol + rtol·|pytorch|`` anywhere fails.
        min_agreement: instead of the element-wise test, pass when at least this share of the
            checked samples gets the same arg-max (top-1) in both runtimes. Meant for models that
            quantize activations (Direct Quantization): PyTorch and ONNX Runtime sum a
            convolution in different orders, so an activation lying on a rounding boundary can
            land one quantization step apart in the two, and that step propagates to the logits
            (measured on a random Inception V3: 80 % of the logits equal to 1e-6, the others off
            by up to 0.6 % of the largest logit with 8-bit activations, 12 % with 4-bit ones). The
            differences are still reported; the test is weaker, so check on real images
            (``check_inputs``).
        check_inputs: more batches to check on (e.g. validation images), besides ``example_inputs``.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: if tracing/export fails or the check fails; the message gives the largest
            absolute and relative differences and the tolerances. No file is left at ``path``.
    """
    x = _single_input(example_inputs)
    if dynamic_batch is None:
        dynamic_batch = not getattr(model, "export_batch", None)
    target = Path(path)
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    wrapped = _FirstOutput(model).eval()
    # Direct-Quantization layers compute their weights with ops ONNX lacks (bucketize); the
    # exported graph is their materialized twin (plain layers, identical outputs), checked
    # against the quantized model itself.
    traced = _FirstOutput(materialize(model)).eval()
    names, inputs = graph_inputs(model, x)
    dynamic_axes = {**{n: {0: "batch"} for n in names}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    stats: dict[str, Any] = {"max_abs": None, "max_rel": None, "passed": None, "within": None, "agreement": None}

    def write(tmp: str) -> None:
        try:
            with warnings.catch_warnings():
                # The legacy exporter is chosen on purpose (see the module docstring); its
                # deprecation notices would only repeat that on every export.
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                # Tracing notes that say nothing actionable here: shape checks (MONAI's U-Net crop
                # test) freeze at the export size, which the parity check below re-runs at another
                # batch size; InstanceNorm without running statistics exports with its input
                # statistics, which is what it computes in eval mode too; strided Slice is left
                # unfolded. A real divergence fails the parity check, not a warning.
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", message=r".*operator 'instance_norm' is set to train=True")
                warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1")
                # torchvision's detectors when traced: box clipping copies a traced size into a tensor,
                # NMS goes through torch.jit.script, and the RoI sampling's boolean indexing becomes
                # Gather (never with negative indices there). The parity check below is what counts.
                warnings.filterwarnings("ignore", message=r"To copy construct from a tensor")
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.script. is deprecated")
                warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
                torch.onnx.export(traced, inputs, tmp, dynamo=False, opset_version=opset,
                                  input_names=names, output_names=[OUTPUT_NAME],
                                  dynamic_axes=dynamic_axes, do_constant_folding=True)
        except RuntimeError as err:
            raise ExportError(f"{target}: torch.onnx.export failed: {err}") from err
        if not check:
            return
        batches = [x, *(b.to(x.device) for b in check_inputs)]
        if dynamic_batch and x.is_floating_point():
            g = torch.Generator().manual_seed(0)
            other = torch.randn((x.shape[0] + 1, *x.shape[1:]), generator=g, dtype=x.dtype).to(x.device)
            batches.append(other)
        found = _compare(tmp, wrapped, [graph_inputs(model, b) for b in batches], rtol, atol)
        if min_agreement is None:
            passed = bool(found["within"] == 1.0)
        else:
            passed = bool(found["agreement"] >= min_agreement and np.isfinite(found["max_abs"]))
        stats.update(max_abs=found["max_abs"], max_rel=found["max_rel"], passed=passed, within=found["within"],
                     agreement=found["agreement"])
        if passed:
            return
        if min_agreement is not None:
            raise ExportError(
                f"{target}: ONNX Runtime and PyTorch agree on the top class of only {found['agreement']:.1%} "
                f"of the checked samples (required {min_agreement:.1%}; max |diff| {found['max_abs']:.3g}); "
                "no file written")
        hint = (" This model quantizes activations: rounding ties can flip between runtimes; check it by "
                "top-1 agreement (min_agreement) instead" if quantized_layers(model) else
                " Check for ops the exporter does not map exactly, or loosen rtol/atol if the difference "
                "is acceptable")
        raise ExportError(
            f"{target}: ONNX Runtime output differs from PyTorch beyond the tolerance "
            f"(max |diff| {found['max_abs']:.3g}, max relative diff {found['max_rel']:.3g}; allowed atol {atol:g} + "
            f"rtol {rtol:g}·|output|; {1 - found['within']:.1%} of values outside); no file written.{hint}")

    try:
        atomic_write(target, write)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if check:
        logger.info("exported %s (max |diff| vs PyTorch %.3g) in %.1f s", target, stats["max_abs"], seconds)
    else:
        logger.info("exported %s without parity check in %.1f s", target, seconds)
    return ExportResult(target, stats["max_abs"], stats["max_rel"], stats["passed"], seconds,
                        within_tolerance=stats["within"], top1_agreement=stats["agreement"],
                        criterion="elementwise" if min_agreement is None else "top1")
