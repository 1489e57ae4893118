"""Read a ``medprune run`` directory into one object the HTML report renders.

Only the base model's ``metrics.json`` is required. Every other file is optional: a missing one
is ``None`` (the report says "not run"); one that exists but cannot be parsed is ``None`` too and
its problem is kept in :attr:`RunData.problems`, so the report shows it instead of hiding it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medprune.errors import DataError

logger = logging.getLogger(__name__)

#: Folder ``medprune prune`` writes to; used when a run directory has no ``run.json``.
_DEFAULT_STAGE_DIR = "compressed"


@dataclass
class Stage:
    """One compressed stage of the run: ``stage`` kind, display ``label``, folder name ``dir``."""

    stage: str
    label: str
    dir: str
    path: Path
    metrics: dict[str, Any] | None = None
    prune_summary: dict[str, Any] | None = None


@dataclass
class RunData:
    """Everything the report reads from a run directory; optional parts are ``None`` when absent."""

    run_dir: Path
    name: str
    description: str | None
    base: dict[str, Any]
    classes: list[str]
    stages: list[Stage]
    final: Stage | None
    run: dict[str, Any] | None = None
    config_text: str | None = None
    export: dict[str, Any] | None = None
    bench: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """True when any part of the run says its data are synthetic (phantom)."""
        flags = [self.base.get("synthetic_data"), (self.run or {}).get("synthetic_data")]
        flags += [(s.metrics or {}).get("synthetic_data") for s in self.stages]
        return any(bool(f) for f in flags)

    def bench_entry(self, key: str) -> Mapping[str, Any] | None:
        """``bench.json`` entry of model ``key`` (``"base"``, a stage folder, ``"<folder>_int8"``)."""
        entry = ((self.bench or {}).get("models") or {}).get(key)
        return entry if isinstance(entry, Mapping) else None

    def problem(self, relative: str) -> str | None:
        """Why ``relative`` (a path inside the run directory) could not be read, if it could not."""
        return self.problems.get(relative)


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


def _check_metrics(metrics: Mapping[str, Any], path: Path) -> list[str]:
    """Class names of a ``metrics.json``; raises when it has no per-class section."""
    per_class = metrics.get("per_class")
    if not isinstance(per_class, Mapping) or not per_class:
        raise DataError(f"{path}: no per_class section; is this a medprune metrics.json?")
    classes = metrics.get("classes")
    return [str(c) for c in classes] if isinstance(classes, list) and classes else [str(c) for c in per_class]


def _stages(run_dir: Path, run: Mapping[str, Any] | None, problems: dict[str, str]) -> list[Stage]:
    if run is not None:
        entries = run.get("compressed_stages") or []
    elif (run_dir / _DEFAULT_STAGE_DIR / "metrics.json").is_file():
        # A directory written by `medprune train` + `medprune prune` without `medprune run`.
        entries = [{"stage": "prune", "label": "pruned", "dir": _DEFAULT_STAGE_DIR}]
    else:
        entries = []
    stages = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not entry.get("dir"):
            problems["run.json"] = f"compressed_stages[{i}] has no 'dir': {entry!r}"
            continue
        folder = str(entry["dir"])
        stage = Stage(stage=str(entry.get("stage", folder)), label=str(entry.get("label") or folder),
                      dir=folder, path=run_dir / folder)
        stage.metrics = _read_json(run_dir, f"{folder}/metrics.json", problems)
        if stage.metrics is not None:
            try:
                _check_metrics(stage.metrics, stage.path / "metrics.json")
            except DataError as err:
                problems[f"{folder}/metrics.json"] = str(err)
                stage.metrics = None
        stage.prune_summary = _read_json(run_dir, f"{folder}/prune_summary.json", problems)
        stages.append(stage)
    return stages


def load_run_dir(run_dir: str | Path) -> RunData:
    """Read ``run_dir`` (``runs/<name>/``) for the report.

    Raises:
        DataError: if the base model's ``metrics.json`` is missing, unreadable or has no
            ``per_class`` section (the message names the file).
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

    run = _read_json(root, "run.json", problems)
    config_text = None
    config: Any = None
    if (root / "config.yaml").is_file():
        try:
            config_text = (root / "config.yaml").read_text(encoding="utf-8")
            config = yaml.safe_load(config_text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            problems["config.yaml"] = f"could not be parsed: {err}"
    config = config if isinstance(config, Mapping) else {}
    name = str((run or {}).get("name") or config.get("name") or root.resolve().name)
    description = config.get("description")

    stages = _stages(root, run, problems)
    final_dir = (run or {}).get("final")
    final = next((s for s in stages if s.dir == final_dir), None)
    if final is None and final_dir not in (None, "base"):
        problems["run.json"] = f"final stage {final_dir!r} is not among the compressed stages"
    if final is None and final_dir is None:
        final = next((s for s in reversed(stages) if s.metrics is not None), None)
    return RunData(
        run_dir=root, name=name, description=str(description) if description else None, base=base,
        classes=classes, stages=stages, final=final, run=run, config_text=config_text,
        export=_read_json(root, "export/export.json", problems), bench=_read_json(root, "bench.json", problems),
        sweep=_read_json(root, "sweep/sweep.json", problems), problems=problems,
    )


def number(value: Any) -> float | None:
    """``value`` as a finite float, else ``None`` (JSON null, NaN, strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def interval(metrics: Mapping[str, Any] | None, key: str) -> tuple[float, float] | None:
    """Bootstrap interval ``ci[key]`` of a ``metrics.json`` as ``(low, high)``, ``None`` when absent."""
    ci = ((metrics or {}).get("ci") or {}).get(key)
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    low, high = number(ci[0]), number(ci[1])
    return None if low is None or high is None else (low, high)


def per_class_value(metrics: Mapping[str, Any] | None, cls: str, metric: str) -> float | None:
    """``per_class[cls][metric]`` of a ``metrics.json``, ``None`` when absent or undefined."""
    entry = ((metrics or {}).get("per_class") or {}).get(cls)
    return number(entry.get(metric)) if isinstance(entry, Mapping) else None


def worst_class(metrics: Mapping[str, Any], classes: list[str]) -> str | None:
    """The class with the lowest sensitivity (first in class order on ties), ``None`` if none is defined."""
    defined = [(v, i, c) for i, c in enumerate(classes)
               if (v := per_class_value(metrics, c, "sensitivity")) is not None]
    return min(defined)[2] if defined else None
