"""The export behind ``medprune export MODEL_FILE --out model.onnx [--int8] [--config CONFIG]``.

Loads any medprune model file (trained, pruned, pooled, quantized), exports it to ONNX and checks
ONNX Runtime against PyTorch; a file failing its check is not written. The check:

- float models: every output within ``atol + rtol·|output|`` (``export.rtol``/``export.atol``);
- Direct-Quantization models with quantized activations: top-1 agreement ≥
  ``compress.quantize.parity_min_agreement`` (rounding ties flip between runtimes, see
  :func:`~medprune.compress.export.export_onnx`), differences reported;
- ``int8``: ONNX Runtime static INT8 (:func:`~medprune.compress.int8.export_int8`), calibrated on
  class-balanced batches of the config's data, top-1 agreement ≥ ``export.int8_min_agreement``.

The input size comes from ``input_size``, else the training config stored in the checkpoint,
else ``config``; the channel count always comes from the model record. With a config the check
runs on validation images; without, on seeded random inputs (said in the outcome).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from medprune.compress.export import ExportResult, export_onnx
from medprune.compress.gate import GateResult, gate_file, judge_gate, task_gate
from medprune.compress.quantize import quantized_layers
from medprune.compress.serialize import load_model
from medprune.config import ExperimentConfig
from medprune.engine.checkpoint import load_checkpoint
from medprune.errors import ConfigError, DataError

__all__ = ["ExportOutcome", "export_job", "resolve_input_size"]

log = logging.getLogger(__name__)

#: Most validation images the parity checks run on.
MAX_CHECK_IMAGES = 256
#: Most batches a fixed-batch graph (``model.export_batch``: a detector, one frame at a time) is checked on.
MAX_FIXED_BATCH_CHECKS = 32


@dataclass
class ExportOutcome:
    """What ``medprune export`` wrote and the checks it passed."""

    fp32: ExportResult
    input_size: tuple[int, int, int]
    check_data: str
    tolerance: dict[str, float | None]
    quantized: dict[str, Any] | None = None
    int8: Any = None
    notes: list[str] = field(default_factory=list)
    int8_gate: GateResult | None = None


def _size_from_config(data: Any) -> tuple[int, int] | None:
    size = data.get("image_size") if isinstance(data, dict) else getattr(data, "image_size", None)
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def resolve_input_size(model_file: Path, ckpt: dict[str, Any], config: ExperimentConfig | None,
                       given: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """``(C, H, W)``: ``given``, else the size the model file records, else the checkpoint's training
    config, else ``config``'s data section."""
    if given is not None:
        return tuple(int(v) for v in given)  # type: ignore[return-value]
    recorded = ckpt.get("input_size")
    if isinstance(recorded, (list, tuple)) and len(recorded) == 3:
        return tuple(int(v) for v in recorded)  # type: ignore[return-value]
    spec = ckpt.get("model_spec") or {}
    channels = (spec.get("kwargs") or {}).get("in_chans")
    # a degradation-aware model's batches carry q as q_dim planes behind the image (medprune.data.degrade)
    extra = int((spec.get("kwargs") or {}).get("q_dim") or 0)
    hw = None
    stored = ckpt.get("config")
    if isinstance(stored, dict) and isinstance(stored.get("data"), dict):
        hw = _size_from_config(stored["data"])
        if channels is None:
            channels = 1 if stored["data"].get("channels") == "gray" else 3
    if hw is None and config is not None:
        hw = _size_from_config(config.data)
        if channels is None:
            channels, extra = config.input_channels(), 0
    if hw is None or channels is None:
        raise ConfigError(f"{model_file}: the file records no input size (no training config in it); pass "
                          "--input-size C H W or --config CONFIG")
    return int(channels) + extra, hw[0], hw[1]


def _check_batches(config: ExperimentConfig, data: Any) -> list[torch.Tensor]:
    split = "val" if "val" in data.datasets else "train"
    dataset = data.datasets[split]
    subset = Subset(dataset, range(min(len(dataset), MAX_CHECK_IMAGES)))
    loader = DataLoader(subset, batch_size=32, shuffle=False, num_workers=config.runtime.workers)
    return [batch[0] for batch in loader]


def export_job(
    model_file: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    input_size: tuple[int, int, int] | None = None,
    config: ExperimentConfig | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    min_agreement: float | None = None,
    int8_min_agreement: float | None = None,
    accept_unsafe: bool = False,
) -> ExportOutcome:
    """Export ``model_file`` to ``out`` (and ``out`` with suffix ``.int8.onnx`` when ``int8``).

    Tolerances left ``None`` come from ``config`` (``export.*``, ``compress.quantize.parity_min_agreement``)
    or the defaults of :class:`~medprune.config.ExportConfig` / ``QuantizeConfig``.

    The INT8 graph is also judged by the safety gate (:mod:`medprune.compress.gate`): its per-class
    validation metrics in ONNX Runtime against the float model's, ``compress.safety`` as limit. A
    graph that fails is kept as ``<out>.int8.gate_failed.onnx`` (``outcome.int8_gate.failed``)
    unless ``accept_unsafe``.

    Raises:
        ConfigError: no input size can be found, or ``int8`` without a config to calibrate on.
        ExportError: a check fails (nothing written for that file).
    """
    from medprune.compress.settings import ExportConfig, QuantizeConfig

    model_file, out = Path(model_file), Path(out)
    ckpt = load_checkpoint(model_file)
    model = load_model(model_file)
    size = resolve_input_size(model_file, ckpt, config, input_size)
    ec = config.export if config is not None else ExportConfig()
    qc = config.compress.quantize if config is not None else QuantizeConfig()
    rtol = ec.rtol if rtol is None else rtol
    atol = ec.atol if atol is None else atol
    if int8 and config is None:
        raise ConfigError("--int8 needs --config CONFIG: INT8 ranges are calibrated on class-balanced images of the "
                          "config's data (random inputs give ranges real images never have)")
    notes: list[str] = []
    data = None
    if config is not None:
        from medprune.workflows.data import prepare_data

        task = config.build_task()
        data = prepare_data(config, config.run_dir, task=task)
        checks = _check_batches(config, data)
        check_data = f"{sum(len(b) for b in checks)} {'val' if 'val' in data.datasets else 'train'} images"
        if data.synthetic:
            notes.append("check images are SYNTHETIC phantom data")
        if tuple(checks[0].shape[1:]) != size:
            raise DataError(f"{model_file}: the config's images are {tuple(checks[0].shape[1:])}, the input size "
                            f"is {size}; pass a matching --input-size or the config the model was trained with")
    else:
        g = torch.Generator().manual_seed(0)
        checks = [torch.randn((8, *size), generator=g)]
        check_data = "8 seeded random inputs (pass --config to check on real images)"
    fixed = getattr(model, "export_batch", None)
    if fixed:  # a graph traced for a fixed batch (torchvision's detectors unroll the batch): check in such batches
        checks = [c for b in checks for c in torch.split(b, fixed) if len(c) == fixed][:MAX_FIXED_BATCH_CHECKS]
    example = checks[0][: fixed or 2]
    layers = quantized_layers(model)
    act_quantized = any(layer.act is not None for layer in layers.values())
    agreement = (min_agreement if min_agreement is not None else qc.parity_min_agreement) if act_quantized else None
    fp32 = export_onnx(model, example, out, opset=ec.opset, rtol=rtol, atol=atol, min_agreement=agreement,
                       check_inputs=checks)
    quantized = None
    if layers:
        first = next(iter(layers.values()))
        quantized = {"layers": len(layers), "bits": first.bits,
                     "act_bits": first.act.bits if first.act is not None else None}
        notes.append("the ONNX file stores the quantized weights as fp32: it is not smaller than the float model's")
    int8_result, int8_gate = None, None
    if int8:
        from medprune.compress.int8 import export_int8
        from medprune.workflows.helpers import calibration_batches

        batches = calibration_batches(config, data, task, qc.calibration)
        int8_result = export_int8(model, batches, out.with_suffix(".int8.onnx"), example_inputs=example,
                                  check_inputs=checks,
                                  min_agreement=(int8_min_agreement if int8_min_agreement is not None
                                                 else ec.int8_min_agreement), opset=ec.opset)
        int8_gate = _int8_gate(model, int8_result.path, config, data, task)
        if accept_unsafe:
            int8_gate = int8_gate.accepted()
        kept = gate_file(int8_result.path, int8_gate)
        gate_file(int8_result.path, GateResult("failed")).unlink(missing_ok=True)  # an earlier export's verdict
        if kept != int8_result.path:
            os.replace(int8_result.path, kept)
            int8_result = dataclasses.replace(int8_result, path=kept)
    return ExportOutcome(fp32=fp32, input_size=size, check_data=check_data,
                         tolerance={"rtol": rtol, "atol": atol, "min_agreement": agreement},
                         quantized=quantized, int8=int8_result, notes=notes, int8_gate=int8_gate)


def _int8_gate(model: torch.nn.Module, path: Path, config: ExperimentConfig, data: Any, task: Any) -> GateResult:
    """The safety gate on the task's validation metrics: the INT8 graph (ONNX Runtime) against the
    float model (PyTorch), like pruning — top-1 agreement alone hid a 15-point balanced-accuracy loss."""
    from medprune.workflows.helpers import onnx_evaluation, validation_metrics

    limit = config.compress.safety.max_worst_class_drop
    if limit is None:
        return judge_gate({}, {}, None, metric=task.gate_metric)
    if "val" not in data.datasets:
        return GateResult(status="failed", metric=task.gate_metric, limit=limit,
                          message="no validation split to judge the INT8 model on")
    base = validation_metrics(model, data, config, torch.device("cpu"), task)
    int8 = task.metrics(onnx_evaluation(path, data.datasets["val"], task), None, None)
    return task_gate(base, int8, limit, task, what="the INT8 model")
