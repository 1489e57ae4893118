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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from medprune._io import atomic_write_text
from medprune.compress.settings import (BenchConfig, CalibrationConfig, CompressConfig, DistillConfig, ExportConfig,
                                        FinetuneConfig, LatencyTargetConfig, QuantizeConfig, SafetyConfig)
from medprune.data.settings import DataConfig, PhantomConfig, SplitConfig
from medprune.engine.settings import EarlyStoppingConfig, OptimConfig, RuntimeConfig, ScheduleConfig
from medprune.errors import ConfigError, MedpruneError
from medprune.metrics.settings import EvalConfig
from medprune.models.settings import ModelConfig
from medprune.registry import suggest
from medprune.schema import FieldError, build, check, check_options, to_plain

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
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "save_config",
    "check_sources",
]


@dataclass
class ExperimentConfig:
    """One experiment: its task, data, model, optimisation, evaluation, compression and runtime settings.

    ``task`` names a registered task (``classification``, ``segmentation``; :mod:`medprune.tasks`)
    and ``task_options`` its options; the model must be one registered for that task, and
    ``optim.early_stopping.metric`` one the task can select by (default: the task's own).
    """

    data: DataConfig
    model: ModelConfig
    name: str | None = None
    description: str = ""
    task: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)
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
        self._check_degradation()
        if self.name is not None:
            check(bool(self.name) and "/" not in self.name and "\\" not in self.name, "name",
                  f"must be a non-empty folder name, got {self.name!r}")
        from medprune.models import model_input_multiple, model_min_input_size

        kwargs = {k: v for k, v in self.model_kwargs().items() if k != "pretrained"}
        try:  # the model's own argument checks (detector layouts, widths) name model.kwargs.<key> themselves
            min_h, min_w = model_min_input_size(self.model.name, **kwargs)
        except ConfigError as exc:
            raise FieldError("", str(exc)) from None
        h, w = self.data.image_size
        check(h >= min_h and w >= min_w, "data.image_size",
              f"{self.model.name} needs inputs of at least {min_h}x{min_w} px (smaller ones shrink to nothing in "
              f"its downsampling layers), got {h}x{w}")
        multiple = model_input_multiple(self.model.name, **kwargs)
        check(h % multiple == 0 and w % multiple == 0, "data.image_size",
              f"{self.model.name} needs height and width divisible by {multiple}, got {h}x{w}; "
              f"e.g. {-(-h // multiple) * multiple}x{-(-w // multiple) * multiple}")
        self._check_task()

    def _check_degradation(self) -> None:
        """A model taking q needs ``data.degradation`` (which sets ``q_dim``); a classification data set with
        ``data.degradation`` carries q as extra planes, so its model must take q."""
        takes_q = self._takes_q()
        check("q_dim" not in self.model.kwargs, "model.kwargs.q_dim",
              "is set from data.degradation (one value per kind in data.degradation.kinds); remove it")
        if takes_q:
            check(self.data.degradation is not None, "data.degradation",
                  f"is required by model {self.model.name} (it takes the degradation parameter q): e.g. "
                  "{kinds: [jpeg]}")
        elif self.data.degradation is not None and self._task_carries_q():
            raise FieldError("model.name", f"{self.model.name} takes the image only, but data.degradation gives "
                             "every image its degradation parameter q; use degradation_aware (with "
                             f"kwargs {{backbone: {self.model.name}, injection: none}} for a model that ignores q)")

    def _task_carries_q(self) -> bool:
        from medprune.tasks import TASKS

        return self.task in TASKS and TASKS.get(self.task).carries_q

    def _check_task(self) -> None:
        from medprune.models import list_models, model_task
        from medprune.tasks import TASKS

        if self.task not in TASKS:
            raise FieldError("task", suggest(self.task, TASKS.names(), "task"))
        cls = TASKS.get(self.task)
        check_options(cls, self.task_options, "task_options", f"option of task {self.task!r}")
        if model_task(self.model.name) != self.task:
            raise FieldError("model.name", f"{self.model.name} is a {model_task(self.model.name)} model; task "
                             f"{self.task} needs one of {', '.join(list_models(self.task)) or '(none registered)'}")
        cls.check_data(self.data)
        stopping = self.optim.early_stopping
        if stopping.metric is None:
            stopping.metric = cls.default_selection
        check(stopping.metric in cls.selection_metrics, "optim.early_stopping.metric",
              suggest(stopping.metric, list(cls.selection_metrics), f"{self.task} metric"))

    def build_task(self) -> Any:
        """The :class:`~medprune.tasks.Task` this config describes (classes, loss settings, options)."""
        from medprune.tasks import create_task

        return create_task(self.task, self.data.classes, label_smoothing=self.optim.label_smoothing,
                           aux_weight=self.optim.aux_weight, **self.task_options)

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
        if self.data.degradation is not None and self._takes_q():
            kwargs["q_dim"] = self.data.degradation.q_dim
        return kwargs

    def input_channels(self) -> int:
        """Channels of a model input batch: the image's (1 gray, 3 color), plus one constant plane per
        degradation kind when the model takes the degradation parameter q (:mod:`medprune.data.degrade`)."""
        channels = 1 if self.data.channels == "gray" else 3
        if self.data.degradation is not None and self._takes_q():
            channels += self.data.degradation.q_dim
        return channels

    def _takes_q(self) -> bool:
        """Whether the model takes the degradation parameter q (its constructor has ``q_dim``)."""
        from medprune.models import model_signature

        return "q_dim" in model_signature(self.model.name).parameters

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
    stage1 = config.data.stage1
    if stage1 is not None:
        where = Path(stage1) if Path(stage1).is_absolute() or source == "<config>" else Path(source).parent / stage1
        if not where.is_file():
            raise ConfigError(f"{source}: data.stage1: {where}: stage-1 config not found")
        config.data.stage1 = str(where.resolve())
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
    if d.stage1 is not None:
        first = load_config(d.stage1)
        return [f"data.stage1: {d.stage1}: frames cleaned by its final model"] + check_sources(first)
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

