"""Typed experiment configs: load a YAML file, validate it once, override keys, save it resolved.

One YAML file describes an experiment (see ``configs/`` and the README)::

    name: thermo_demo
    data:   {manifest: data/manifest.csv, classes: [healthy, sick], image_size: 96, channels: gray}
    model:  {name: inception_v3, kwargs: {width: 0.125}}
    optim:  {optimizer: sgdm, lr: 0.01, batch_size: 16, epochs: 8}
    runtime: {seed: 0, device: auto, out_dir: runs}

Every value is checked at load; a problem is reported on one line that names the file and the key
path, e.g. ``configs/x.yaml: optim.lr: must be > 0, got -1``, and unknown keys or names suggest the
close ones. Command-line overrides ``key.path=value`` go through the same validation.

Relative paths in a config (``data.manifest``, ``data.phantom.out``, ``runtime.out_dir``) are
resolved against the current working directory, as for every other command-line tool.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from medprune._io import atomic_write_text
from medprune.schema import FieldError, build, check, to_plain
from medprune.errors import ConfigError, MedpruneError
from medprune.registry import suggest

__all__ = [
    "PhantomConfig",
    "SplitConfig",
    "DataConfig",
    "ModelConfig",
    "ScheduleConfig",
    "EarlyStoppingConfig",
    "OptimConfig",
    "EvalConfig",
    "RuntimeConfig",
    "CalibrationConfig",
    "DistillConfig",
    "FinetuneConfig",
    "SafetyConfig",
    "LatencyTargetConfig",
    "QuantizeConfig",
    "CompressConfig",
    "ExportConfig",
    "BenchConfig",
    "ExperimentConfig",
    "EARLY_STOPPING_METRICS",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "save_config",
    "check_sources",
]

#: Metrics the trainer can select the best epoch by; "loss" is minimised, the rest maximised.
EARLY_STOPPING_METRICS = ("balanced_accuracy", "worst_class_sensitivity", "macro_f1", "macro_auc", "accuracy", "loss")


@dataclass
class PhantomConfig:
    """Synthetic (phantom) data generated when no manifest is given — never clinical data."""

    kind: str = "thermography"
    patients: int = 40
    imbalance: float = 3.0
    views: int = 3
    size: tuple[int, int] = (60, 80)
    seed: int = 0
    out: str | None = None  # default: <run dir>/phantom

    def __post_init__(self) -> None:
        check(self.patients >= 4, "patients", f"must be >= 4, got {self.patients}")
        check(self.imbalance > 0, "imbalance", f"must be > 0, got {self.imbalance}")
        check(self.views >= 1, "views", f"must be >= 1, got {self.views}")
        check(min(self.size) >= 16, "size", f"must be at least 16x16, got {list(self.size)}")


@dataclass
class SplitConfig:
    """Patient-level split fractions; a manifest's own ``split`` column takes precedence."""

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            check(0.0 <= value < 1.0, key, f"must be in [0, 1), got {value}")
        total = self.val_fraction + self.test_fraction
        check(total < 1.0, "test_fraction", f"val_fraction + test_fraction must be < 1, got {total:g}")


@dataclass
class DataConfig:
    """Where the images come from and how they are turned into tensors."""

    manifest: str | None = None
    phantom: PhantomConfig | None = None
    classes: list[str] = field(default_factory=lambda: ["healthy", "sick"])
    image_size: int | tuple[int, int] = (299, 299)
    channels: Literal["gray", "color"] = "color"
    colormap: str = "inferno"
    temperature_window: tuple[float, float] = (24.0, 38.0)
    dicom_window: tuple[float, float] | None = None
    dicom_frame: int | None = None
    mean: float = 0.5
    std: float = 0.25
    augmentation: list[dict[str, Any]] = field(default_factory=list)
    on_bad_sample: Literal["error", "skip"] = "error"
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        check(min(self.image_size) >= 8, "image_size", f"must be >= 8 pixels, got {list(self.image_size)}")
        check(self.manifest is not None or self.phantom is not None, "manifest",
              "is required (or set data.phantom to train on synthetic phantom data)")
        check(len(self.classes) >= 2, "classes", f"needs at least 2 classes, got {self.classes}")
        dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
        check(not dupes, "classes", f"duplicate class names {dupes}")
        lo, hi = self.temperature_window
        check(lo < hi, "temperature_window", f"low must be < high, got [{lo}, {hi}]")
        if self.dicom_window is not None:
            check(self.dicom_window[0] < self.dicom_window[1], "dicom_window", "low must be < high")
        if self.dicom_frame is not None:
            check(self.dicom_frame >= 0, "dicom_frame", f"must be >= 0, got {self.dicom_frame}")
        check(self.std > 0, "std", f"must be > 0, got {self.std}")
        import matplotlib

        if self.colormap not in matplotlib.colormaps:
            raise FieldError("colormap", suggest(self.colormap, list(matplotlib.colormaps), "colormap"))
        from medprune.data.augment import validate_augmentation

        try:
            validate_augmentation(self.augmentation)
        except MedpruneError as exc:
            raise FieldError("augmentation", str(exc)) from None


@dataclass
class ModelConfig:
    """A registry model name and its keyword arguments (``num_classes``/``in_chans`` come from data).

    ``pooling`` swaps every downsampling pool of the model (:func:`medprune.models.replace_pooling`):
    a registered pooling name (``max``, ``avg``, ``wavelet_hybrid``) or a mapping with ``kind`` and
    that pooling's options, e.g. ``{kind: wavelet_hybrid, wavelet: haar, keep: LL, combine: gate}``.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    pooling: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from medprune.models import list_models, model_signature

        if self.name not in list_models():
            raise FieldError("name", suggest(self.name, list_models(), "model"))
        params = model_signature(self.name).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for key in self.kwargs:
            if key == "pretrained":
                raise FieldError(f"kwargs.{key}", "set model.pretrained instead")
            if not accepts_any and key not in params:
                raise FieldError(f"kwargs.{key}", suggest(key, [p for p in params if p != "pretrained"],
                                                          f"argument of {self.name}"))
        _check_pooling(self.pooling)

    def pooling_spec(self) -> tuple[str | None, dict[str, Any]] | None:
        """``(kind, options)`` of ``pooling``, or ``None`` when the model keeps its own pools."""
        return pooling_spec(self.pooling)


def pooling_spec(pooling: str | dict[str, Any] | None) -> tuple[str | None, dict[str, Any]] | None:
    """``(kind, options)`` of a ``pooling`` config value, or ``None`` when no pool is swapped."""
    if pooling is None:
        return None
    if isinstance(pooling, str):
        return pooling, {}
    options = dict(pooling)
    return options.pop("kind", None), options


def _check_pooling(pooling: str | dict[str, Any] | None) -> None:
    spec = pooling_spec(pooling)
    if spec is None:
        return
    from medprune.models.pooling import list_poolings, pooling_problem

    if spec[0] is None:
        raise FieldError("pooling.kind", f"is required, one of {', '.join(list_poolings())}")
    problem = pooling_problem(*spec)
    if problem is not None:
        key, message = problem
        raise FieldError("pooling" if isinstance(pooling, str) else f"pooling.{key}", message)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per epoch, with an optional linear warm-up."""

    name: Literal["constant", "cosine", "step", "plateau"] = "constant"
    warmup_epochs: int = 0
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    patience: int = 3

    def __post_init__(self) -> None:
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        check(self.step_size >= 1, "step_size", f"must be >= 1, got {self.step_size}")
        check(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        check(self.min_lr >= 0, "min_lr", f"must be >= 0, got {self.min_lr}")
        check(self.patience >= 0, "patience", f"must be >= 0, got {self.patience}")


@dataclass
class EarlyStoppingConfig:
    """Which validation metric picks ``best.pt``, and when to stop (patience ``null`` = never)."""

    metric: Literal[EARLY_STOPPING_METRICS] = "balanced_accuracy"  # type: ignore[valid-type]
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience is not None:
            check(self.patience >= 1, "patience", f"must be >= 1 or null, got {self.patience}")
        check(self.min_delta >= 0, "min_delta", f"must be >= 0, got {self.min_delta}")

    @property
    def maximize(self) -> bool:
        """True unless the metric is the loss."""
        return self.metric != "loss"


@dataclass
class OptimConfig:
    """Optimiser, schedule, class balancing and stopping rule."""

    optimizer: Literal["sgdm", "adam", "adamw"] = "sgdm"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 10
    epochs: int = 30
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    class_balance: Literal["none", "weighted_loss", "balanced_sampler"] = "none"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: float | None = None
    amp: bool = True
    label_smoothing: float = 0.0
    aux_weight: float = 0.4
    # Recompute BatchNorm running statistics over the training set before every validation:
    # with few batches per epoch, momentum-0.1 estimates lag the weights (see Trainer.recalibrate_bn).
    bn_recalibration: bool = False

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr:g}")
        check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        if self.grad_clip is not None:
            check(self.grad_clip > 0, "grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        check(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        check(self.aux_weight >= 0, "aux_weight", f"must be >= 0, got {self.aux_weight}")
        check(isinstance(self.bn_recalibration, bool), "bn_recalibration",
              f"must be true or false, got {self.bn_recalibration!r}")
        check(not (self.schedule.name == "plateau" and self.schedule.warmup_epochs > 0), "schedule.warmup_epochs",
              "warm-up is not available with the plateau schedule; set it to 0 or use cosine/step")
        check(self.schedule.warmup_epochs < self.epochs or self.schedule.warmup_epochs == 0,
              "schedule.warmup_epochs", f"must be < epochs ({self.epochs}), got {self.schedule.warmup_epochs}")


@dataclass
class EvalConfig:
    """Evaluation: bootstrap confidence intervals by patient, patient-level aggregation.

    Proportions counted on fewer than ``exact_below`` patients (or whose bootstrap interval
    degenerates, e.g. 5 of 5 right) get a ``small_sample_method`` interval instead of the
    bootstrap; classes with fewer than ``min_class_support`` patients and splits with fewer than
    ``min_patients`` are flagged as too small to judge (metrics.json ``small_sample``).
    """

    n_bootstrap: int = 1000
    ci: float = 0.95
    seed: int = 0
    patient_aggregation: Literal["mean", "max"] = "mean"
    batch_size: int | None = None
    exact_below: int = 30
    small_sample_method: Literal["clopper_pearson", "wilson"] = "clopper_pearson"
    min_class_support: int = 10
    min_patients: int = 20

    def __post_init__(self) -> None:
        check(self.n_bootstrap >= 0, "n_bootstrap", f"must be >= 0, got {self.n_bootstrap}")
        check(0 < self.ci < 1, "ci", f"must be in (0, 1), got {self.ci}")
        if self.batch_size is not None:
            check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        for key in ("exact_below", "min_class_support", "min_patients"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")

    def metric_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`medprune.metrics.classification_metrics` from this section."""
        return {"n_bootstrap": self.n_bootstrap, "ci": self.ci, "seed": self.seed,
                "patient_aggregation": self.patient_aggregation, "exact_below": self.exact_below,
                "small_sample_method": self.small_sample_method, "min_class_support": self.min_class_support,
                "min_patients": self.min_patients}


@dataclass
class RuntimeConfig:
    """Seed, device, data-loader workers, output folder."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = 0
    out_dir: str = "runs"
    threads: int | None = None
    deterministic: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        if self.threads is not None:
            check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")


def _check_options(kind: str, name: str, options: dict[str, Any], factory: Any, key: str) -> None:
    """Check ``options`` against the keyword arguments of a registered class's constructor."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for opt in options:
        if opt not in params or opt == "self":
            raise FieldError(f"{key}.{opt}", suggest(opt, [p for p in params if p != "self"], f"option of {kind} {name!r}"))


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
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    pooling: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_pooling(self.pooling)
        from medprune.compress import CRITERIA, SCHEDULES

        if self.criterion not in CRITERIA:
            raise FieldError("criterion", suggest(self.criterion, CRITERIA.names(), "criterion"))
        _check_options("criterion", self.criterion, self.criterion_options, CRITERIA.get(self.criterion),
                       "criterion_options")
        if self.schedule not in SCHEDULES:
            raise FieldError("schedule", suggest(self.schedule, SCHEDULES.names(), "schedule"))
        _check_options("schedule", self.schedule, self.schedule_options, SCHEDULES.get(self.schedule),
                       "schedule_options")
        check(0 <= self.ratio < 1, "ratio", f"must be in [0, 1), got {self.ratio}")
        for pattern, r in self.layer_ratios.items():
            check(isinstance(r, (int, float)) and 0 <= r < 1, f"layer_ratios.{pattern}", f"must be in [0, 1), got {r}")
        if self.round_to is not None:
            check(self.round_to >= 1, "round_to", f"must be >= 1 or null, got {self.round_to}")
        check(0 < self.max_layer_ratio < 1, "max_layer_ratio", f"must be in (0, 1), got {self.max_layer_ratio}")


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


@dataclass
class ExperimentConfig:
    """One experiment: data, model, optimisation, evaluation and runtime settings."""

    data: DataConfig
    model: ModelConfig
    name: str | None = None
    description: str = ""
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key, expected in (("num_classes", len(self.data.classes)),
                              ("in_chans", 1 if self.data.channels == "gray" else 3)):
            given = self.model.kwargs.get(key)
            check(given is None or given == expected, f"model.kwargs.{key}",
                  f"is set from data ({expected}); got {given}")
        if self.name is not None:
            check(bool(self.name) and "/" not in self.name and "\\" not in self.name, "name",
                  f"must be a non-empty folder name, got {self.name!r}")
        from medprune.models import model_input_multiple, model_min_input_size

        kwargs = {k: v for k, v in self.model_kwargs().items() if k != "pretrained"}
        min_h, min_w = model_min_input_size(self.model.name, **kwargs)
        h, w = self.data.image_size
        check(h >= min_h and w >= min_w, "data.image_size",
              f"{self.model.name} needs inputs of at least {min_h}x{min_w} px (smaller ones shrink to nothing in "
              f"its downsampling layers), got {h}x{w}")
        multiple = model_input_multiple(self.model.name, **kwargs)
        check(h % multiple == 0 and w % multiple == 0, "data.image_size",
              f"{self.model.name} needs height and width divisible by {multiple}, got {h}x{w}; "
              f"e.g. {-(-h // multiple) * multiple}x{-(-w // multiple) * multiple}")

    @property
    def run_dir(self) -> Path:
        """``<runtime.out_dir>/<name>``: where every stage of this experiment writes."""
        return Path(self.runtime.out_dir) / (self.name or "experiment")

    def model_kwargs(self) -> dict[str, Any]:
        """Registry kwargs with ``num_classes``/``in_chans``/``pretrained`` filled in from the config."""
        kwargs = dict(self.model.kwargs)
        kwargs["num_classes"] = len(self.data.classes)
        kwargs["in_chans"] = 1 if self.data.channels == "gray" else 3
        kwargs["pretrained"] = self.model.pretrained
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dict of the resolved config (without ``source``)."""
        plain = to_plain(self)
        plain.pop("source", None)
        return plain


def _fail(source: str, exc: FieldError) -> ConfigError:
    where = f"{exc.path}: " if exc.path else ""
    return ConfigError(f"{source}: {where}{exc.message}")


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate ``data`` into an :class:`ExperimentConfig`; errors name ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping of sections, got {type(data).__name__}")
    if "source" in data:
        raise ConfigError(f"{source}: source: is set by medprune, remove it")
    try:
        config = build(ExperimentConfig, data)
    except FieldError as exc:
        raise _fail(source, exc) from None
    config.source = source
    if config.name is None:
        config.name = Path(source).stem if source != "<config>" else "experiment"
    return config


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "<config>") -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.path=value`` overrides applied (values parsed as YAML)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{source}: override {item!r}: expected key.path=value, e.g. optim.lr=0.001")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: override {item!r}: value is not valid YAML ({exc})") from None
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])}: is not a section, cannot set {key}")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load, override and validate the YAML experiment config at ``path``.

    Raises :class:`ConfigError` naming the file and key path for any problem.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{source}: {where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read ({exc})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping of sections, got {type(data).__name__}")
    if overrides:
        data = apply_overrides(data, overrides, source)
    return config_from_dict(data, source)


def check_sources(config: ExperimentConfig) -> list[str]:
    """What ``medprune validate`` checks beyond the config's own values: that its data exist.

    The manifest must exist and parse (header, required columns, rows), and every file it lists
    must exist (they are not opened: ``medprune train`` checks each sample before training).
    Returns one summary line per source; raises :class:`ConfigError` naming the file and the key.
    """
    from medprune.data.manifest import read_manifest

    d = config.data
    if d.manifest is None:
        ph = d.phantom
        assert ph is not None  # DataConfig requires one of them
        return [f"data.phantom: SYNTHETIC {ph.kind} phantom, {ph.patients} patients x {ph.views} views "
                f"(generated on first use)"]
    manifest = Path(d.manifest)
    if not manifest.is_file():
        raise ConfigError(f"{config.source}: data.manifest: {manifest}: "
                          f"{'not a file' if manifest.exists() else 'file not found'}")
    try:
        samples = read_manifest(manifest)
    except MedpruneError as exc:
        raise ConfigError(f"{config.source}: data.manifest: {exc}") from None
    missing = [s for s in samples if not s.path.exists()]
    if missing:
        shown = ", ".join(f"{s.path} (row {s.row})" for s in missing[:3])
        raise ConfigError(f"{config.source}: data.manifest: {manifest}: {len(missing)} of {len(samples)} listed "
                          f"file(s) do not exist, e.g. {shown}")
    unknown = sorted({s.label for s in samples} - set(d.classes))
    note = f"; labels not in data.classes: {', '.join(unknown)}" if unknown else ""
    patients = len({s.patient_id for s in samples})
    return [f"data.manifest: {manifest}: {len(samples)} samples from {patients} patients, every listed file "
            f"exists{note}"]


def save_config(config: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); it loads back to an equal config."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    return atomic_write_text(path, text)

