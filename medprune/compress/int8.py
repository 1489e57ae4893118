"""Post-training INT8 through ONNX Runtime static quantization, checked by top-1 agreement.

:func:`export_int8` exports the float model to ONNX (parity-checked like any export), then runs
``onnxruntime.quantization.quantize_static`` on it (after ORT's ``quant_pre_process``) — QDQ
format, signed 8-bit weights (per output channel by default) and activations, ranges calibrated on
*our* batches through a ``CalibrationDataReader`` — and compares the INT8 graph with the PyTorch
model::

    result = export_int8(model, class_balanced_batches(train_set, batch_size=16, num_batches=8),
                         "runs/x/export/model.int8.onnx", check_inputs=val_batches)
    result.top1_agreement, result.max_abs_diff      # e.g. 0.98, 0.21

INT8 cannot reproduce fp32 outputs to 1e-5 — every activation is rounded to one of 256 values —
so its check is agreement-based: the file is written only when at least ``min_agreement`` of the
checked samples get the same top-1 class from the INT8 graph as from the PyTorch model; the
largest absolute logit difference is reported beside it. Check on held-out images
(``check_inputs``): agreement on the calibration batches themselves is optimistic. Calibrate on
real, class-balanced images (:func:`~medprune.compress.calibration.class_balanced_batches`):
random inputs give activation ranges the data never has.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from medprune._io import atomic_write
from medprune.compress.export import OUTPUT_NAME, compare_outputs, export_onnx, packed_feed
from medprune.compress.latency import ort_session
from medprune.compress.quantize import Calibration, calibration_images, quantized_layers
from medprune.errors import ExportError, QuantizationError
from medprune.registry import suggest

__all__ = ["Int8Result", "export_int8", "CALIBRATE_METHODS"]

log = logging.getLogger(__name__)

#: ``calibrate_method`` names → ONNX Runtime's calibration methods.
CALIBRATE_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                     "percentile": CalibrationMethod.Percentile}


@dataclass(frozen=True)
class Int8Result:
    """The INT8 file and how it compares with the PyTorch (fp32) model on the checked samples."""

    path: Path
    fp32_path: Path | None
    top1_agreement: float
    max_abs_diff: float
    samples: int
    min_agreement: float
    passed: bool
    size_bytes: int
    fp32_size_bytes: int
    fp32_max_abs_diff: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings)."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["fp32_path"] = str(self.fp32_path) if self.fp32_path is not None else None
        return out


class _BatchReader(CalibrationDataReader):
    """Feeds our calibration batches to ``quantize_static``, one batch per ``get_next``."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._arrays = feeds
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._arrays):
            return None
        self._next += 1
        return self._arrays[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs progress on the root logger; keep only its warnings."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(previous)


def _reference(model: nn.Module, batches: list[torch.Tensor]) -> np.ndarray:
    device = next(model.parameters()).device
    outs = []
    with torch.inference_mode():
        for x in batches:
            out = model(x.to(device))
            outs.append((out[0] if isinstance(out, (tuple, list)) else out).float().cpu().numpy())
    return np.concatenate(outs)


def export_int8(
    model: nn.Module,
    calibration: Calibration,
    path: str | os.PathLike[str],
    *,
    example_inputs: torch.Tensor | None = None,
    check_inputs: Sequence[torch.Tensor] | None = None,
    min_agreement: float = 0.9,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    fp32_path: str | os.PathLike[str] | None = None,
    opset: int = 17,
) -> Int8Result:
    """Write an ONNX Runtime INT8 (QDQ) model of ``model`` to ``path`` if it agrees with PyTorch.

    Args:
        model: a float model (not one quantized with :func:`~medprune.compress.quantize.quantize_model`).
        calibration: image batches or ``(images, labels)`` pairs (a list or a zero-argument
            callable, e.g. from ``class_balanced_batches``) for ONNX Runtime's range calibration.
        path: the INT8 ``.onnx`` file; written atomically and only if the check passes.
        example_inputs: batch for tracing (default: the first calibration image).
        check_inputs: batches the INT8 and PyTorch outputs are compared on (default: the
            calibration batches, which is optimistic).
        min_agreement: the least share of checked samples whose top-1 class must agree.
        per_channel: per-output-channel weight scales (better accuracy for pruned/narrow layers).
        calibrate_method: ``minmax``, ``entropy`` or ``percentile``.
        fp32_path: also keep the float ONNX file here (it is exported and parity-checked anyway).

    Raises:
        QuantizationError: no calibration data, a model already quantized, an unknown method.
        ExportError: the float export fails its parity check, or INT8 agreement is below
            ``min_agreement`` (no file written).
    """
    start = time.perf_counter()
    if quantized_layers(model):
        raise QuantizationError("the model is already quantized with Direct Quantization; export it with "
                                "export_onnx (INT8 post-training quantization needs the float model)")
    if calibrate_method not in CALIBRATE_METHODS:
        raise QuantizationError(suggest(calibrate_method, list(CALIBRATE_METHODS), "calibrate_method"))
    if not 0.0 <= min_agreement <= 1.0:
        raise QuantizationError(f"min_agreement must be in [0, 1], got {min_agreement}")
    images = calibration_images(calibration)
    if not images:
        raise QuantizationError("INT8 static quantization needs calibration batches (real images, "
                                "class-balanced); none were given")
    checks = list(check_inputs) if check_inputs is not None else images
    example = example_inputs if example_inputs is not None else images[0][:1]
    target = Path(path)
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="medprune-int8-") as tmp:
            float_file = Path(fp32_path) if fp32_path is not None else Path(tmp) / "model.fp32.onnx"
            fp32 = export_onnx(model, example, float_file, opset=opset)
            float_session = ort_session(float_file)
            reader = _BatchReader([packed_feed(float_session, x) for x in images])
            found: dict[str, float] = {}

            def write(tmp_out: str) -> None:
                import onnxruntime as ort

                prepared = Path(tmp) / "model.prep.onnx"
                # ORT's recommended pre-processing (graph optimisation, shape inference): turns the
                # exporter's shared constants into initializers so every bias is quantized too.
                with _quiet_root_logger():
                    quant_pre_process(str(float_file), str(prepared))
                    quantize_static(str(prepared), tmp_out, reader, quant_format=QuantFormat.QDQ,
                                    per_channel=per_channel, activation_type=QuantType.QInt8,
                                    weight_type=QuantType.QInt8, calibrate_method=CALIBRATE_METHODS[calibrate_method])
                session = ort.InferenceSession(tmp_out, providers=["CPUExecutionProvider"])
                got = np.concatenate([session.run([OUTPUT_NAME], packed_feed(session, x))[0]
                                      for x in checks])
                found.update(compare_outputs(_reference(model, checks), got, 0.0, 0.0))
                if found["agreement"] < min_agreement:
                    raise ExportError(
                        f"{target}: INT8 and the PyTorch model agree on the top class of only "
                        f"{found['agreement']:.1%} of {len(got)} checked samples (required {min_agreement:.1%}; "
                        f"max |logit diff| {found['max_abs']:.3g}); no file written. Calibrate on more "
                        f"(class-balanced) batches, try calibrate_method='percentile', or keep the fp32 model")

            atomic_write(target, write)
            fp32_size = float_file.stat().st_size
    finally:
        model.train(was_training)
    result = Int8Result(path=target, fp32_path=Path(fp32_path) if fp32_path is not None else None,
                        top1_agreement=found["agreement"], max_abs_diff=found["max_abs"],
                        samples=sum(int(x.shape[0]) for x in checks), min_agreement=min_agreement, passed=True,
                        size_bytes=target.stat().st_size, fp32_size_bytes=fp32_size,
                        fp32_max_abs_diff=fp32.max_abs_diff, seconds=time.perf_counter() - start)
    log.info("INT8 %s: top-1 agreement %.3f on %d samples, max |diff| %.3g", target, result.top1_agreement,
             result.samples, result.max_abs_diff)
    return result
