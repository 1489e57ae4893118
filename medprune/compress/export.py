"""ONNX export with a parity check against PyTorch.

The device runtime loads an ONNX file; a file whose outputs drift from the model that was
evaluated would silently invalidate every per-class number in the report. :func:`export_onnx`
therefore runs the written graph in ONNX Runtime on the example batch (and on a second batch of a
different size when the batch dimension is dynamic) and refuses — :class:`~medprune.errors.ExportError`,
no file written — when the outputs differ beyond ``atol + rtol·|reference|``::

    result = export_onnx(model, torch.randn(1, 3, 299, 299), "runs/x/export/model.onnx")
    result.max_abs_diff      # e.g. 2.4e-06

The graph has one input ``"input"`` (N, C, H, W) and one output ``"logits"``. The legacy
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
from typing import Any

import numpy as np
import torch
from torch import nn

from medprune._io import atomic_write
from medprune.errors import ExportError

__all__ = ["ExportResult", "export_onnx", "INPUT_NAME", "OUTPUT_NAME"]

logger = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportResult:
    """Where the graph was written and how closely ONNX Runtime reproduces PyTorch.

    ``max_abs_diff``, ``max_rel_diff`` and ``passed`` are ``None`` when the export ran with
    ``check=False``. ``max_rel_diff`` is ``max |ort − torch| / max(|torch|, 1e-12)`` over all
    checked outputs; ``seconds`` covers export and check.
    """

    path: Path
    max_abs_diff: float | None
    max_rel_diff: float | None
    passed: bool | None
    seconds: float

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


def _single_input(example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    x = example_inputs
    if isinstance(x, (tuple, list)):
        if len(x) != 1:
            raise ExportError(f"export_onnx: the model must take one input tensor, got {len(x)} example inputs")
        x = x[0]
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ExportError(f"export_onnx: example_inputs must be a batched tensor, got {type(x).__name__}")
    return x


def _reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"export_onnx: the model must return a tensor (or a tuple led by one), "
                          f"got {type(out).__name__}")
    return out.detach().float().cpu().numpy()


def _compare(path: str, model: nn.Module, batches: list[torch.Tensor], rtol: float,
             atol: float) -> tuple[float, float, bool]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    max_abs = max_rel = 0.0
    passed = True
    for x in batches:
        ref = _reference(model, x)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().cpu().numpy()})[0].astype(np.float64)
        if got.shape != ref.shape:
            raise ExportError(f"export_onnx: ONNX Runtime output has shape {got.shape} for a batch of "
                              f"{x.shape[0]}, PyTorch {ref.shape}")
        diff = np.abs(got - ref)
        if not np.all(np.isfinite(diff)):
            max_abs = max_rel = float("inf")
            passed = False
            continue
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        max_rel = max(max_rel, float((diff / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0)))
        passed = passed and bool(np.all(diff <= atol + rtol * np.abs(ref)))
    return max_abs, max_rel, passed


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    check: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` (in eval mode) to ONNX at ``path``, checked against PyTorch in ONNX Runtime.

    Args:
        model: a module taking one ``(N, C, H, W)`` tensor; if it returns a tuple in eval mode
            only the first element (the logits) is exported. Its train/eval mode is restored.
        example_inputs: the example batch (a tensor or a 1-tuple holding one) used for tracing
            and for the check.
        path: the ``.onnx`` file to write; written atomically, so an existing file is replaced
            only by a graph that passed the check.
        opset: ONNX opset version.
        dynamic_batch: mark the batch dimension dynamic; the check then also runs a random batch
            of a different size.
        check: compare ONNX Runtime (CPU) outputs with PyTorch's; an output differing by more
            than ``atol + rtol·|pytorch|`` anywhere fails.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: if tracing/export fails or the check fails; the message gives the largest
            absolute and relative differences and the tolerances. No file is left at ``path``.
    """
    x = _single_input(example_inputs)
    target = Path(path)
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    wrapped = _FirstOutput(model).eval()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    stats: dict[str, Any] = {"max_abs": None, "max_rel": None, "passed": None}

    def write(tmp: str) -> None:
        try:
            with warnings.catch_warnings():
                # The legacy exporter is chosen on purpose (see the module docstring); its
                # deprecation notices would only repeat that on every export.
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                torch.onnx.export(wrapped, (x,), tmp, dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes=dynamic_axes, do_constant_folding=True)
        except RuntimeError as err:
            raise ExportError(f"{target}: torch.onnx.export failed: {err}") from err
        if not check:
            return
        batches = [x]
        if dynamic_batch and x.is_floating_point():
            g = torch.Generator().manual_seed(0)
            other = torch.randn((x.shape[0] + 1, *x.shape[1:]), generator=g, dtype=x.dtype).to(x.device)
            batches.append(other)
        max_abs, max_rel, passed = _compare(tmp, wrapped, batches, rtol, atol)
        stats.update(max_abs=max_abs, max_rel=max_rel, passed=passed)
        if not passed:
            raise ExportError(
                f"{target}: ONNX Runtime output differs from PyTorch beyond the tolerance "
                f"(max |diff| {max_abs:.3g}, max relative diff {max_rel:.3g}; allowed atol {atol:g} + "
                f"rtol {rtol:g}·|output|); no file written. Check for ops the exporter does not map "
                f"exactly, or loosen rtol/atol if the difference is acceptable"
            )

    try:
        atomic_write(target, write)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if check:
        logger.info("exported %s (max |diff| vs PyTorch %.3g) in %.1f s", target, stats["max_abs"], seconds)
    else:
        logger.info("exported %s without parity check in %.1f s", target, seconds)
    return ExportResult(target, stats["max_abs"], stats["max_rel"], stats["passed"], seconds)
