"""What ``medprune run`` records of itself (``run.json``), as typed records the report reads back.

The workflow writes a :class:`RunRecord`; the report reads the same class, so the two cannot
disagree on a key. ``to_dict`` gives the JSON layout (a stage's own numbers — MACs reduction,
speed-ups, agreement — sit beside its status, as they always have), ``from_dict`` reads it back
and tolerates records written by older versions (missing keys take their defaults).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from medprune.errors import DataError

__all__ = ["StageRecord", "CompressedStage", "RunRecord", "RUN_RECORD", "read_run_record"]

#: The file a run directory's record lives in.
RUN_RECORD = "run.json"

#: Statuses of a stage: ``done`` (ran now), ``reused`` (its outputs were current), ``running`` (started,
#: not finished: an interrupted run), ``not_applicable`` (the config does not ask for it), ``skipped``
#: (an earlier model failed its safety gate), ``adopted`` (a training made by ``medprune train``).
STAGE_STATUSES = ("done", "reused", "running", "not_applicable", "skipped", "adopted")


@dataclass
class StageRecord:
    """One stage of one run: what happened, why, with which settings, and what it produced."""

    status: str
    seconds: float | None = None
    note: str = ""
    chain: str | None = None
    settings: dict[str, Any] | None = None
    label: str | None = None
    gate: dict[str, Any] | None = None
    model_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def produced(self) -> bool:
        """True when the stage's outputs exist and are current (it ran now or was reused)."""
        return self.status in ("done", "reused")

    @property
    def gate_failed(self) -> bool:
        """True when its model failed its safety gate and was not accepted anyway."""
        return (self.gate or {}).get("status") == "failed"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None or k in ("status", "seconds")}, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageRecord:
        known = {f.name for f in fields(cls)} - {"extra"}
        if "status" not in data:
            raise DataError(f"stage record without a status: {dict(data)!r}")
        return cls(**{k: data[k] for k in known if k in data}, extra={k: v for k, v in data.items() if k not in known})


@dataclass
class CompressedStage:
    """A model-producing stage as the report lists it: which stage, its label, its folder, its gate."""

    stage: str
    label: str
    dir: str
    gate_status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "label": self.label, "dir": self.dir, "gate_status": self.gate_status}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressedStage:
        return cls(stage=str(data["stage"]), label=str(data.get("label", data["stage"])), dir=str(data["dir"]),
                   gate_status=data.get("gate_status"))


@dataclass
class RunRecord:
    """``run.json``: every stage of a run, which model is final, and how the run was asked for."""

    name: str | None
    config: str | None
    stages: dict[str, StageRecord]
    task: str = "classification"
    synthetic_data: bool | None = None
    compressed_stages: list[CompressedStage] = field(default_factory=list)
    final: str | None = None
    accept_unsafe: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "task": self.task, "synthetic_data": self.synthetic_data,
                "stages": {k: v.to_dict() for k, v in self.stages.items()},
                "compressed_stages": [c.to_dict() for c in self.compressed_stages], "accept_unsafe": self.accept_unsafe,
                "final": self.final}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        if not isinstance(data, Mapping):
            raise DataError(f"a run record must be an object, got {type(data).__name__}")
        stages = data.get("stages") or {}
        if not isinstance(stages, Mapping):
            raise DataError("run record: stages must be an object")
        return cls(name=data.get("name"), config=data.get("config"), task=str(data.get("task") or "classification"),
                   synthetic_data=data.get("synthetic_data"),
                   stages={str(k): StageRecord.from_dict(v) for k, v in stages.items()},
                   compressed_stages=[CompressedStage.from_dict(c) for c in data.get("compressed_stages") or []],
                   final=data.get("final"), accept_unsafe=bool(data.get("accept_unsafe", False)))


def read_run_record(path: str | Path) -> RunRecord | None:
    """The :class:`RunRecord` in ``path`` (``None`` when the file does not exist).

    Raises :class:`~medprune.errors.DataError` naming the file when it cannot be read or parsed.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
        raise DataError(f"{path}: unreadable run record ({exc})") from None
