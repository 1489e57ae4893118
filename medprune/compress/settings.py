"""Settings of compression: criterion × schedule × ratio, calibration, fine-tuning, the safety gate,
a latency target, quantization, export and bench.

``compress:``, ``export:`` and ``bench:`` in an experiment config (:mod:`medprune.config` assembles
the sections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medprune.schema import FieldError, check, check_options
from medprune.registry import suggest
from medprune.models.settings import check_pooling

__all__ = ["CalibrationConfig", "DistillConfig", "FinetuneConfig", "SafetyConfig", "LatencyTargetConfig",
           "AllocationConfig",
           "QuantizeConfig", "CompressConfig", "ExportConfig", "BenchConfig"]


@dataclass
class CalibrationConfig:
    """Class-balanced batches that data-driven criteria read activation statistics from."""

    batches: int = 16
    batch_size: int = 16
    split: Literal["train", "val"] = "train"
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.batches >= 1, "batches", f"must be >= 1, got {self.batches}")
        check(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")


@dataclass
class DistillConfig:
    """Knowledge distillation from the unpruned model while fine-tuning."""

    enabled: bool = False
    alpha: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        check(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@dataclass
class FinetuneConfig:
    """Fine-tuning after (each step of) pruning; the optimiser is rebuilt for the pruned parameters."""

    epochs: int = 5
    lr: float | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        if self.lr is not None:
            check(self.lr > 0, "lr", f"must be > 0 or null (= optim.lr), got {self.lr}")


@dataclass
class SafetyConfig:
    """Imbalance-aware gate: stop or back off when the worst class loses too much sensitivity.

    ``max_worst_class_drop``: the largest allowed drop of validation worst-class sensitivity below
    the unpruned model's (absolute, e.g. 0.05 = five points); ``null`` turns the gate off.
    """

    max_worst_class_drop: float | None = 0.05
    action: Literal["backoff", "stop"] = "backoff"

    def __post_init__(self) -> None:
        if self.max_worst_class_drop is not None:
            check(0 <= self.max_worst_class_drop <= 1, "max_worst_class_drop",
                  f"must be in [0, 1] or null, got {self.max_worst_class_drop}")


@dataclass
class LatencyTargetConfig:
    """Prune in steps until the measured ONNX Runtime CPU latency meets ``ms`` or ``speedup``."""

    ms: float | None = None
    speedup: float | None = None
    step: float = 0.1
    max_ratio: float = 0.9
    threads: int | None = None
    batch: int = 1
    repeats: int = 20

    def __post_init__(self) -> None:
        check((self.ms is None) != (self.speedup is None), "ms", "set exactly one of ms and speedup")
        if self.ms is not None:
            check(self.ms > 0, "ms", f"must be > 0, got {self.ms}")
        if self.speedup is not None:
            check(self.speedup > 1, "speedup", f"must be > 1, got {self.speedup}")
        check(0 < self.step < 1, "step", f"must be in (0, 1), got {self.step}")
        check(0 < self.max_ratio < 1, "max_ratio", f"must be in (0, 1), got {self.max_ratio}")
        check(self.repeats >= 3, "repeats", f"must be >= 3, got {self.repeats}")


@dataclass
class AllocationConfig:
    """Per-layer ratios from a sensitivity analysis instead of one ``ratio`` (``compress.allocation``).

    ``kind: worst_class`` (:mod:`medprune.compress.allocation`): every prunable layer is pruned alone
    at each of ``candidates`` and the validation gate metric's drop measured; the ratios that keep
    about ``macs_keep`` of the MACs with the least predicted drop are chosen.
    """

    kind: Literal["worst_class"] = "worst_class"
    macs_keep: float = 0.5
    candidates: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])

    def __post_init__(self) -> None:
        check(0 < self.macs_keep < 1, "macs_keep", f"must be in (0, 1), got {self.macs_keep}")
        check(bool(self.candidates), "candidates", "needs at least one ratio")
        for i, r in enumerate(self.candidates):
            check(isinstance(r, (int, float)) and 0 < r < 1, f"candidates[{i}]", f"must be in (0, 1), got {r}")


@dataclass
class QuantizeConfig:
    """Quantization of the (pruned) model: ``compress.quantize``.

    ``method``: ``none``; ``direct`` — Direct Quantization as quantization-aware training
    (:func:`medprune.compress.quantize.quantize_model`: ``bits``-bit learnable weight levels,
    ``act_bits``-bit layer inputs with channel-balanced clip ranges, then ``finetune``); ``int8`` —
    ONNX Runtime post-training static INT8 of the exported model (checked by top-1 agreement
    ``export.int8_min_agreement``). ``calibration`` defaults to ``compress.calibration``.
    ``parity_min_agreement``: a ``direct`` model's ONNX export is checked by top-1 agreement with
    PyTorch (rounding ties of quantized activations can flip between runtimes), at least this share.

    Example::

        compress:
          quantize: {method: direct, bits: 4, act_bits: 8, finetune: {epochs: 3, lr: 0.005}}
    """

    method: Literal["none", "direct", "int8"] = "none"
    bits: Literal[2, 4, 8] = 4
    act_bits: Literal[2, 4, 8] | None = 8
    skip_first_last: bool = True
    skip: list[str] = field(default_factory=list)
    level_init: str = "kmeans"
    act_objective: str = "channel_balanced"
    calibration: CalibrationConfig | None = None
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=3))
    parity_min_agreement: float = 0.99

    def __post_init__(self) -> None:
        from medprune.compress._qlayers import ACT_OBJECTIVES, LEVEL_INITS

        if self.level_init not in LEVEL_INITS:
            raise FieldError("level_init", suggest(self.level_init, LEVEL_INITS.names(), "level init"))
        if self.act_objective not in ACT_OBJECTIVES:
            raise FieldError("act_objective", suggest(self.act_objective, ACT_OBJECTIVES.names(),
                                                      "activation objective"))
        check(0 <= self.parity_min_agreement <= 1, "parity_min_agreement",
              f"must be in [0, 1], got {self.parity_min_agreement}")


@dataclass
class CompressConfig:
    """What ``medprune prune`` does: criterion × schedule × ratio, protected layers, calibration data.

    Example::

        compress:
          criterion: beta_rank
          schedule: iterative
          schedule_options: {steps: 3}
          ratio: 0.5
          round_to: 8
          protect: [first_conv]
          finetune: {epochs: 3, distill: {enabled: true}}
          safety: {max_worst_class_drop: 0.05}

    In ``medprune run``, ``pooling`` (as ``model.pooling``) swaps the *trained* model's
    downsampling pools before pruning, followed by ``finetune``; ``quantize`` runs after pruning.
    """

    criterion: str = "l2"
    criterion_options: dict[str, Any] = field(default_factory=dict)
    schedule: str = "oneshot"
    schedule_options: dict[str, Any] = field(default_factory=dict)
    ratio: float = 0.5
    layer_ratios: dict[str, float] = field(default_factory=dict)
    global_pruning: bool = False
    round_to: int | None = 8
    protect: list[str] = field(default_factory=lambda: ["first_conv"])
    max_layer_ratio: float = 0.95
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    latency_target: LatencyTargetConfig | None = None
    allocation: AllocationConfig | None = None
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    pooling: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_pooling(self.pooling)
        from medprune.compress.importance import CRITERIA
        from medprune.compress.schedules import SCHEDULES

        if self.criterion not in CRITERIA:
            raise FieldError("criterion", suggest(self.criterion, CRITERIA.names(), "criterion"))
        check_options(CRITERIA.get(self.criterion), self.criterion_options, "criterion_options",
                      f"option of criterion {self.criterion!r}")
        if self.schedule not in SCHEDULES:
            raise FieldError("schedule", suggest(self.schedule, SCHEDULES.names(), "schedule"))
        check_options(SCHEDULES.get(self.schedule), self.schedule_options, "schedule_options",
                      f"option of schedule {self.schedule!r}")
        check(0 <= self.ratio < 1, "ratio", f"must be in [0, 1), got {self.ratio}")
        for pattern, r in self.layer_ratios.items():
            check(isinstance(r, (int, float)) and 0 <= r < 1, f"layer_ratios.{pattern}", f"must be in [0, 1), got {r}")
        if self.round_to is not None:
            check(self.round_to >= 1, "round_to", f"must be >= 1 or null, got {self.round_to}")
        check(0 < self.max_layer_ratio < 1, "max_layer_ratio", f"must be in (0, 1), got {self.max_layer_ratio}")
        if self.allocation is not None:
            check(self.latency_target is None, "allocation", "sets the per-layer ratios itself; remove latency_target")
            check(not self.layer_ratios, "allocation", "sets the per-layer ratios itself; remove layer_ratios")


@dataclass
class ExportConfig:
    """ONNX export in ``medprune run``: parity tolerance (PyTorch vs ONNX Runtime) and INT8.

    A graph whose outputs differ from PyTorch by more than ``atol + rtol·|output|`` is not written.
    The INT8 graph of ``compress.quantize.method: int8`` (ONNX Runtime static quantization,
    calibrated on class-balanced batches) is checked by top-1 agreement with the float model
    instead: at least ``int8_min_agreement`` of the check images.
    """

    enabled: bool = True
    opset: int = 17
    rtol: float = 1e-3
    atol: float = 1e-4
    int8_min_agreement: float = 0.9

    def __post_init__(self) -> None:
        check(self.opset >= 11, "opset", f"must be >= 11, got {self.opset}")
        check(self.rtol >= 0, "rtol", f"must be >= 0, got {self.rtol}")
        check(self.atol >= 0, "atol", f"must be >= 0, got {self.atol}")
        check(0 <= self.int8_min_agreement <= 1, "int8_min_agreement",
              f"must be in [0, 1], got {self.int8_min_agreement}")


@dataclass
class BenchConfig:
    """CPU latency measurement in ``medprune run``: base and compressed timed interleaved."""

    enabled: bool = True
    threads: int | None = None
    batch: int = 1
    rounds: int = 7
    per_round: int = 3

    def __post_init__(self) -> None:
        if self.threads is not None:
            check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        check(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        check(self.rounds >= 3, "rounds", f"must be >= 3, got {self.rounds}")
        check(self.per_round >= 1, "per_round", f"must be >= 1, got {self.per_round}")
