"""Read a ``medprune run`` directory into one object the HTML report renders.

Only the base model's ``metrics.json`` is required. Every other file is optional: a missing one
is ``None`` (the report says "not run"); one that exists but cannot be parsed is ``None`` too and
its problem is kept in :attr:`RunData.problems`, so the report shows it instead of hiding it.

Every model of the run — the base, each compressed stage (``pooled/``, ``compressed/``,
``quantized/``) and the INT8 ONNX export (``export/int8/``) — is one :class:`RunModel` with the
same fields: its test ``metrics.json``, predictions file, training logs (``metrics.jsonl``),
stage summary and safety :class:`Gate`. :attr:`RunData.models` lists them in pipeline order.

``run.json`` is read as a :class:`~medprune.report.records.RunRecord` and ``bench.json`` as a
:class:`~medprune.compress.latency.BenchResult` — the classes that wrote them — and the run's
:class:`~medprune.tasks.Task` (``run.json``'s ``task``, else ``metrics.json``'s) says which metrics
lead. What differs between tasks is looked up by task name, never branched on: how a predictions
file is read is :data:`PREDICTION_READERS`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from medprune.compress.gate import GATE_STATUSES  # the gate's statuses: run.json, summaries, export.json
from medprune.compress.latency import BenchEntry, BenchResult
from medprune.errors import DataError, RegistryError
from medprune.metrics.degradation import DegradationGrid
from medprune.metrics.predictions import Predictions, read_predictions_csv
from medprune.metrics.segmentation import read_segmentation_predictions_csv
from medprune.registry import Registry
from medprune.report.curves import TrainingLog, read_training_log
from medprune.report.records import RUN_RECORD, CompressedStage, RunRecord, StageRecord, read_run_record
from medprune.report._task_metrics import HeadlineMetrics, sentence_label
from medprune.tasks import MetricSpec, Task, create_task

logger = logging.getLogger(__name__)

#: Folder ``medprune prune`` writes to; used when a run directory has no ``run.json``.
_DEFAULT_STAGE_DIR = "compressed"
#: How gate messages may restate their status; the report says the status itself.
_STATUS_PREFIXES = ("accepted despite failing its safety gate (--accept-unsafe): ", "passed: ", "failed: ")
#: Small-sample thresholds used when a ``metrics.json`` has no ``small_sample`` section.
MIN_CLASS_SUPPORT = 10
MIN_PATIENTS = 20
#: Interval methods that are not the percentile bootstrap, as ``ci_method`` names them.
EXACT_CI_METHODS = ("clopper_pearson", "wilson")


@dataclass(frozen=True)
class Gate:
    """A stage's safety gate: did the compressed model keep ``metric`` within ``limit`` of the base?

    ``status`` is one of :data:`GATE_STATUSES`; ``source`` names the file it was read from.
    """

    status: str
    metric: str | None = None
    baseline: float | None = None
    value: float | None = None
    drop: float | None = None
    limit: float | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()
    source: str = ""

    @classmethod
    def from_dict(cls, obj: Any, source: str) -> Gate:
        """Read a ``gate`` object; raises :class:`DataError` naming ``source`` when it is malformed."""
        if not isinstance(obj, Mapping):
            raise DataError(f"{source}: gate must be an object, got {type(obj).__name__}")
        status = obj.get("status")
        if status not in GATE_STATUSES:
            raise DataError(f"{source}: gate.status must be one of {', '.join(GATE_STATUSES)}, got {status!r}")
        warnings = obj.get("warnings") or []
        if not isinstance(warnings, list):
            raise DataError(f"{source}: gate.warnings must be a list of strings")
        return cls(status=str(status), metric=str(obj["metric"]) if obj.get("metric") else None,
                   baseline=number(obj.get("baseline")), value=number(obj.get("value")),
                   drop=number(obj.get("drop")), limit=number(obj.get("limit")),
                   message=str(obj["message"]) if obj.get("message") else None,
                   warnings=tuple(str(w) for w in warnings), source=source)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "metric": self.metric, "baseline": self.baseline, "value": self.value,
                "drop": self.drop, "limit": self.limit, "message": self.message, "warnings": list(self.warnings)}

    @property
    def unsafe(self) -> bool:
        """True when the model failed its gate, whether or not it was then accepted."""
        return self.status in ("failed", "accepted_unsafe")

    def numbers(self) -> str:
        """``worst_class_sensitivity 0.900 → 0.700 (drop 0.200, limit 0.050)``, or ``""`` without numbers."""
        if self.baseline is None or self.value is None:
            return ""
        text = f"{self.metric or 'metric'} {self.baseline:.3f} → {self.value:.3f}"
        parts = [f"drop {self.drop:.3f}" if self.drop is not None else "",
                 f"limit {self.limit:.3f}" if self.limit is not None else ""]
        parts = [p for p in parts if p]
        return text + (f" ({', '.join(parts)})" if parts else "")

    def reason(self) -> str:
        """One line: the gate's own message (less a leading restatement of its status), else its
        numbers, else where the status came from."""
        message = self.message or ""
        for prefix in _STATUS_PREFIXES:
            message = message.removeprefix(prefix)
        return message or self.numbers() or f"status {self.status!r} in {self.source}"


@dataclass
class RunModel:
    """One model of the run: the base, a compressed stage, or the INT8 ONNX export.

    ``kind`` is ``"base"``, ``"stage"`` or ``"int8"``; ``stage`` the pipeline stage that made it
    (``train``, ``pool``, ``prune``, ``quantize``, ``export``); ``dir`` its folder relative to the
    run directory (``""`` for the base); ``bench_key`` its entry in ``bench.json``. Optional parts
    are ``None`` (or empty) when absent. ``predictions`` is the evaluation's predictions file as
    its task reads it (:data:`PREDICTION_READERS`: classification's
    :class:`~medprune.metrics.Predictions`, segmentation's per-image
    :class:`~medprune.metrics.SegmentationScores`).
    """

    kind: Literal["base", "stage", "int8"]
    stage: str
    label: str
    dir: str
    path: Path
    bench_key: str
    metrics: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    gate: Gate | None = None
    predictions: Any = None
    logs: list[TrainingLog] = field(default_factory=list)

    @property
    def prune_summary(self) -> dict[str, Any] | None:
        """The summary when it is a pruning summary (it records MACs and parameters before/after)."""
        return self.summary if self.stage == "prune" else None


@dataclass
class RunData:
    """Everything the report reads from a run directory; optional parts are ``None`` when absent.

    ``task`` is the run's task over every class of ``metrics.json``; ``classes`` the classes the
    evaluation reports (those of its ``per_class``: segmentation leaves the background out).
    ``record`` is ``run.json``, ``bench`` is ``bench.json``.
    """

    run_dir: Path
    name: str
    description: str | None
    base: dict[str, Any]
    task: Task
    classes: list[str]
    stages: list[RunModel]
    final: RunModel | None
    base_model: RunModel
    int8: RunModel | None = None
    record: RunRecord | None = None
    config_text: str | None = None
    export: dict[str, Any] | None = None
    bench: BenchResult | None = None
    sweep: dict[str, Any] | None = None
    degradation: DegradationGrid | None = None
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def models(self) -> list[RunModel]:
        """Base, compressed stages and INT8 export, in pipeline order."""
        return [self.base_model, *self.stages, *([self.int8] if self.int8 is not None else [])]

    @property
    def compressed(self) -> list[RunModel]:
        """Every model but the base."""
        return self.models[1:]

    @property
    def headline(self) -> HeadlineMetrics:
        """The metrics the report leads with, from the run's task."""
        return HeadlineMetrics.of(self.task)

    def words(self, spec: MetricSpec) -> str:
        """``spec``'s label inside a sentence (:func:`sentence_label`)."""
        return sentence_label(spec, self.task)

    @property
    def synthetic(self) -> bool:
        """True when any part of the run says its data are synthetic (phantom)."""
        flags = [self.base.get("synthetic_data"), self.record.synthetic_data if self.record else None]
        flags += [(m.metrics or {}).get("synthetic_data") for m in self.compressed]
        return any(bool(f) for f in flags)

    def bench_entry(self, key: str) -> BenchEntry | None:
        """``bench.json`` entry of model ``key`` (``"base"``, a stage folder, ``"<folder>_int8"``)."""
        return self.bench.models.get(key) if self.bench is not None else None

    def speedup(self, key: str, runtime: str) -> float | None:
        """Speed-up of model ``key`` over the bench's base on ``runtime`` (:attr:`BenchResult.speedup`:
        the ratio of the medians), ``None`` when either was not timed there."""
        if self.bench is None or self.bench.base not in self.bench.models:
            return None
        return self.bench.speedup.get(key, {}).get(runtime)

    def problem(self, relative: str) -> str | None:
        """Why ``relative`` (a path inside the run directory) could not be read, if it could not."""
        return self.problems.get(relative)


# ----------------------------------------------------------------------------- reading

PREDICTION_READERS = Registry("report predictions reader")
"""Task name → ``fn(path, classes) -> predictions``: reads one evaluation's predictions file (raises
:class:`DataError` on a bad file or classes that differ from ``classes``)."""


@PREDICTION_READERS.register("classification")
def _classification_predictions(path: Path, classes: list[str]) -> Predictions:
    pred = read_predictions_csv(path)
    if pred.classes != classes:
        raise DataError(f"classes {pred.classes} differ from the base model's {classes}")
    return pred


@PREDICTION_READERS.register("detection")
def _detection_predictions(path: Path, classes: list[str]) -> Any:
    from medprune.metrics.detection import read_detection_predictions

    return read_detection_predictions(path)


@PREDICTION_READERS.register("segmentation")
def _segmentation_predictions(path: Path, classes: list[str]) -> Any:
    scores = read_segmentation_predictions_csv(path)
    if list(scores.classes) != classes:
        raise DataError(f"classes {list(scores.classes)} differ from the base model's {classes}")
    return scores


def _read_json(run_dir: Path, relative: str, problems: dict[str, str]) -> dict[str, Any] | None:
    path = run_dir / relative
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems[relative] = f"could not be read: {err}"
        logger.warning("report: %s could not be read: %s", path, err)
        return None
    if not isinstance(data, dict):
        problems[relative] = f"expected a JSON object, found {type(data).__name__}"
        logger.warning("report: %s is not a JSON object", path)
        return None
    return data


def _read_bench(run_dir: Path, problems: dict[str, str]) -> BenchResult | None:
    """``bench.json`` as a :class:`BenchResult`; one that does not parse goes to ``problems``."""
    data = _read_json(run_dir, "bench.json", problems)
    if data is None:
        return None
    try:
        return BenchResult.from_dict(data)
    except KeyError as err:
        problems["bench.json"] = f"is not a benchmark result: missing key {err}"
    except (TypeError, ValueError, AttributeError) as err:
        problems["bench.json"] = f"is not a benchmark result: {err}"
    logger.warning("report: %s/bench.json %s", run_dir, problems["bench.json"])
    return None


def _read_record(run_dir: Path, problems: dict[str, str]) -> RunRecord | None:
    """``run.json`` as a :class:`RunRecord`; one that does not parse goes to ``problems``."""
    path = run_dir / RUN_RECORD
    try:
        return read_run_record(path)
    except DataError as err:
        problems[RUN_RECORD] = str(err).removeprefix(f"{path}: ")
        logger.warning("report: %s", err)
        return None


def _check_metrics(metrics: Mapping[str, Any], path: Path) -> list[str]:
    """Class names of a ``metrics.json`` (every class, also those it does not report); raises when
    it has no per-class section."""
    per_class = metrics.get("per_class")
    if not isinstance(per_class, Mapping) or not per_class:
        raise DataError(f"{path}: no per_class section; is this a medprune metrics.json?")
    classes = metrics.get("classes")
    return [str(c) for c in classes] if isinstance(classes, list) and classes else [str(c) for c in per_class]


def _reported(metrics: Mapping[str, Any], classes: list[str]) -> list[str]:
    """The classes ``per_class`` holds, in ``classes`` order (segmentation leaves the background out)."""
    per_class = [str(c) for c in metrics["per_class"]]
    return [c for c in classes if c in per_class] + [c for c in per_class if c not in classes]


def _read_metrics(run_dir: Path, relative: str, problems: dict[str, str]) -> dict[str, Any] | None:
    metrics = _read_json(run_dir, relative, problems)
    if metrics is not None:
        try:
            _check_metrics(metrics, run_dir / relative)
        except DataError as err:
            problems[relative] = str(err)
            return None
    return metrics


def _read_predictions(run_dir: Path, folder: str, task: Task, problems: dict[str, str]) -> Any:
    name = task.predictions_file
    relative = f"{folder}/{name}" if folder else name
    if not (run_dir / relative).is_file():
        return None
    try:
        return PREDICTION_READERS.get(task.name)(run_dir / relative, task.classes)
    except DataError as err:
        problems[relative] = str(err)
        return None


def _natural(text: str) -> list[Any]:
    """Sort key putting ``finetune_step2`` before ``finetune_step10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _read_logs(run_dir: Path, model: RunModel, problems: dict[str, str]) -> list[TrainingLog]:
    """The base's ``metrics.jsonl``, or every ``metrics.jsonl`` below a stage folder (its fine-tunings)."""
    if model.kind == "base":
        paths = [run_dir / "metrics.jsonl"] if (run_dir / "metrics.jsonl").is_file() else []
    elif model.path.is_dir():
        paths = sorted(model.path.rglob("metrics.jsonl"), key=lambda p: _natural(p.relative_to(run_dir).as_posix()))
    else:
        paths = []
    logs = []
    for path in paths:
        relative = path.relative_to(run_dir).as_posix()
        label = "base training" if model.kind == "base" else str(Path(relative).parent.as_posix())
        try:
            logs.append(read_training_log(path, label))
        except DataError as err:
            problems[relative] = str(err)
    return logs


def _gate(run_dir: Path, candidates: list[tuple[str, Any]], failed_file: str, problems: dict[str, str]) -> Gate | None:
    """The first well-formed gate of ``candidates`` (source, object); else a failed gate if ``failed_file`` exists."""
    gates: list[Gate] = []
    for source, obj in candidates:
        if obj is None:
            continue
        if isinstance(obj, str):  # a compressed_stages entry's bare ``gate_status``
            obj = {"status": obj}
        try:
            gates.append(Gate.from_dict(obj, source))
        except DataError as err:
            problems[source] = str(err).removeprefix(f"{source}: ")
    if len({g.status for g in gates}) > 1:
        problems[gates[1].source] = (f"gate status {gates[1].status!r} disagrees with {gates[0].source} "
                                     f"({gates[0].status!r}); the report uses {gates[0].source}")
    if gates:
        return gates[0]
    if (run_dir / failed_file).is_file():
        return Gate(status="failed", message=f"the model file was saved as {failed_file} (gate failed)",
                    source=failed_file)
    return None


def _stage_record(record: RunRecord | None, stage: str) -> StageRecord | None:
    return record.stages.get(stage) if record is not None else None


def _stages(run_dir: Path, record: RunRecord | None, task: Task, problems: dict[str, str]) -> list[RunModel]:
    if record is not None:
        entries = record.compressed_stages
    elif (run_dir / _DEFAULT_STAGE_DIR / "metrics.json").is_file():
        # A directory written by `medprune train` + `medprune prune` without `medprune run`.
        entries = [CompressedStage(stage="prune", label="pruned", dir=_DEFAULT_STAGE_DIR)]
    else:
        entries = []
    stages = []
    for i, entry in enumerate(entries):
        folder, kind = entry.dir, entry.stage
        model = RunModel(kind="stage", stage=kind, label=entry.label or folder, dir=folder, path=run_dir / folder,
                         bench_key=folder)
        model.metrics = _read_metrics(run_dir, f"{folder}/metrics.json", problems)
        summary_name = f"{kind}_summary.json"
        model.summary = _read_json(run_dir, f"{folder}/{summary_name}", problems)
        stage_record = _stage_record(record, kind)
        model.gate = _gate(run_dir, [(f"{folder}/{summary_name}", (model.summary or {}).get("gate")),
                                     (f"run.json: stages.{kind}.gate", stage_record.gate if stage_record else None),
                                     (f"run.json: compressed_stages[{i}].gate_status", entry.gate_status)],
                           f"{folder}/model.gate_failed.pt", problems)
        model.predictions = _read_predictions(run_dir, folder, task, problems)
        model.logs = _read_logs(run_dir, model, problems)
        stages.append(model)
    return stages


def _int8(run_dir: Path, record: RunRecord | None, export: Mapping[str, Any] | None, bench: BenchResult | None,
          stages: list[RunModel], final: RunModel | None, task: Task, problems: dict[str, str]) -> RunModel | None:
    """The INT8 ONNX model, when the export, the bench or its evaluation mentions one."""
    folder = "export/int8"
    int8_record = (export or {}).get("int8")
    keys = [k for k in (bench.models if bench is not None else {}) if str(k).endswith("_int8")]
    failed_file = "export/model.int8.gate_failed.onnx"
    if not (isinstance(int8_record, Mapping) or keys or (run_dir / folder / "metrics.json").is_file()
            or (run_dir / failed_file).is_file()):
        return None
    by_dir = {s.dir: s for s in stages}
    source: RunModel | None = None
    if keys:
        source = by_dir.get(keys[0][: -len("_int8")])
    else:
        model_file = (export or {}).get("model_file")
        if model_file:
            source = by_dir.get(Path(str(model_file)).parent.name)
    source = source or final
    label = f"{source.label if source else 'base'} · INT8 ONNX"
    key = keys[0] if keys else f"{source.dir if source else 'base'}_int8"
    model = RunModel(kind="int8", stage="export", label=label, dir=folder, path=run_dir / folder, bench_key=key,
                     summary=dict(int8_record) if isinstance(int8_record, Mapping) else None)
    model.metrics = _read_metrics(run_dir, f"{folder}/metrics.json", problems)
    export_record = _stage_record(record, "export")
    model.gate = _gate(run_dir, [("export/export.json: int8.gate", (model.summary or {}).get("gate")),
                                 ("run.json: stages.export.gate", export_record.gate if export_record else None)],
                       failed_file, problems)
    model.predictions = _read_predictions(run_dir, folder, task, problems)
    return model


def _task(record: RunRecord | None, base: Mapping[str, Any], classes: list[str], base_path: Path) -> Task:
    """The run's task over ``classes``: ``run.json``'s ``task``, else ``metrics.json``'s, else
    classification (a directory written before tasks existed)."""
    name = record.task if record is not None else str(base.get("task") or "classification")
    try:
        return create_task(name, classes)
    except RegistryError as err:
        source = RUN_RECORD if record is not None else base_path
        raise DataError(f"{source}: {err}") from None


def load_run_dir(run_dir: str | Path) -> RunData:
    """Read ``run_dir`` (``runs/<name>/``) for the report.

    Raises:
        DataError: if the base model's ``metrics.json`` is missing, unreadable or has no
            ``per_class`` section, or the run's task is unknown (the message names the file).
    """
    root = Path(run_dir)
    base_path = root / "metrics.json"
    if not base_path.is_file():
        raise DataError(f"{base_path}: base model metrics not found; the report needs the evaluated base model "
                        "(run `medprune run` or `medprune train` first)")
    problems: dict[str, str] = {}
    base = _read_json(root, "metrics.json", problems)
    if base is None:
        raise DataError(f"{base_path}: {problems['metrics.json']}")
    classes = _check_metrics(base, base_path)

    record = _read_record(root, problems)
    task = _task(record, base, classes, base_path)
    config_text = None
    config: Any = None
    if (root / "config.yaml").is_file():
        try:
            config_text = (root / "config.yaml").read_text(encoding="utf-8")
            config = yaml.safe_load(config_text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            problems["config.yaml"] = f"could not be parsed: {err}"
    config = config if isinstance(config, Mapping) else {}
    name = str((record.name if record else None) or config.get("name") or root.resolve().name)
    description = config.get("description")

    stages = _stages(root, record, task, problems)
    final_dir = record.final if record is not None else None
    final = next((s for s in stages if s.dir == final_dir), None)
    if final is None and final_dir not in (None, "base"):
        problems[RUN_RECORD] = f"final stage {final_dir!r} is not among the compressed stages"
    if final is None and final_dir is None:
        final = next((s for s in reversed(stages) if s.metrics is not None), None)
    export = _read_json(root, "export/export.json", problems)
    bench = _read_bench(root, problems)
    base_model = RunModel(kind="base", stage="train", label="base", dir="", path=root,
                          bench_key=bench.base if bench is not None else "base", metrics=base)
    base_model.predictions = _read_predictions(root, "", task, problems)
    base_model.logs = _read_logs(root, base_model, problems)
    return RunData(
        run_dir=root, name=name, description=str(description) if description else None, base=base, task=task,
        classes=_reported(base, classes), stages=stages, final=final, base_model=base_model,
        int8=_int8(root, record, export, bench, stages, final, task, problems), record=record,
        config_text=config_text, export=export, bench=bench, sweep=_read_json(root, "sweep/sweep.json", problems),
        degradation=_read_grid(root, problems), problems=problems,
    )


def _read_grid(run_dir: Path, problems: dict[str, str]) -> DegradationGrid | None:
    """``degradation/grid.json`` (a degradation run's level grid); one that does not parse goes to ``problems``."""
    relative = "degradation/grid.json"
    data = _read_json(run_dir, relative, problems)
    if data is None:
        return None
    try:
        return DegradationGrid.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        problems[relative] = f"is not a degradation grid: {err}"
        return None


# ----------------------------------------------------------------------------- numbers


def number(value: Any) -> float | None:
    """``value`` as a finite float, else ``None`` (JSON null, NaN, strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def interval(metrics: Mapping[str, Any] | None, key: str) -> tuple[float, float] | None:
    """Interval ``ci[key]`` of a ``metrics.json`` as ``(low, high)``, ``None`` when absent."""
    ci = ((metrics or {}).get("ci") or {}).get(key)
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    low, high = number(ci[0]), number(ci[1])
    return None if low is None or high is None else (low, high)


def ci_method(metrics: Mapping[str, Any] | None, key: str) -> str | None:
    """How ``ci[key]`` was computed (``ci_method[key]``), ``None`` when the file does not say."""
    methods = (metrics or {}).get("ci_method")
    value = methods.get(key) if isinstance(methods, Mapping) else None
    return str(value) if value else None


def per_class_value(metrics: Mapping[str, Any] | None, cls: str, metric: str) -> float | None:
    """``per_class[cls][metric]`` of a ``metrics.json``, ``None`` when absent or undefined."""
    entry = ((metrics or {}).get("per_class") or {}).get(cls)
    return number(entry.get(metric)) if isinstance(entry, Mapping) else None


@dataclass(frozen=True)
class SmallSample:
    """Which classes, and whether the split, are too small to judge (``metrics.json`` ``small_sample``).

    ``classes`` maps a too-small class to its image count; ``notes`` are the sentences the
    evaluation wrote, or ones derived here (``derived`` is then True: an older ``metrics.json``
    without the section, judged from ``per_class.<c>.support`` and ``n_patients`` with the
    same thresholds).
    """

    min_class_support: int
    min_patients: int
    classes: dict[str, int]
    split: bool
    notes: tuple[str, ...]
    derived: bool


def small_sample(metrics: Mapping[str, Any], classes: list[str], predictions: Any = None, *,
                 metric: str = "sensitivity") -> SmallSample:
    """The ``small_sample`` section of ``metrics``, or the same flags derived from its supports.

    ``predictions`` (the same evaluation's classification ``predictions.csv``) lets a derived note
    say how many patients a small class's images come from; ``metric`` is how the notes name the
    per-class metric one image moves (``sensitivity``, ``Dice``).
    """
    section = metrics.get("small_sample")
    split_name = metrics.get("split", "test")
    if isinstance(section, Mapping):
        flagged = section.get("classes") or {}
        return SmallSample(
            min_class_support=int(number(section.get("min_class_support")) or MIN_CLASS_SUPPORT),
            min_patients=int(number(section.get("min_patients")) or MIN_PATIENTS),
            classes={str(c): int(number(n) or 0) for c, n in flagged.items()} if isinstance(flagged, Mapping) else {},
            split=bool(section.get("split")), notes=tuple(str(n) for n in section.get("notes") or []),
            derived=False)
    notes = []
    flagged_classes: dict[str, int] = {}
    for cls in classes:
        support = per_class_value(metrics, cls, "support")
        if support is None or support >= MIN_CLASS_SUPPORT:
            continue
        n = int(support)
        flagged_classes[cls] = n
        patients = ""
        if isinstance(predictions, Predictions) and predictions.patient_ids is not None \
                and cls in predictions.classes:
            rows = predictions.y_true == predictions.classes.index(cls)
            if int(rows.sum()) == n:
                patients = f" from {len(np.unique(predictions.patient_ids[rows]))} patients"
        if n == 0:
            notes.append(f"'{cls}' has no {split_name} images: its {metric} cannot be measured")
        else:
            notes.append(f"'{cls}' has {n} {split_name} image{'s' if n != 1 else ''}{patients} (fewer than "
                         f"{MIN_CLASS_SUPPORT}): one error moves its {metric} by {1 / n:.2f}, so a "
                         "difference on it cannot be judged")
    n_patients = number(metrics.get("n_patients"))
    split = n_patients is not None and n_patients < MIN_PATIENTS
    if split:
        notes.append(f"the {split_name} split has {int(n_patients or 0)} patients (fewer than {MIN_PATIENTS}): "
                     "its intervals rest on too few patients to judge a difference")
    return SmallSample(MIN_CLASS_SUPPORT, MIN_PATIENTS, flagged_classes, split, tuple(notes), derived=True)
