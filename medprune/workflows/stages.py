"""Stages and the runner that redoes only what changed — the machinery of ``medprune run`` and ``sweep``.

A :class:`Stage` is one row of a table: its name, its folder in the run directory, the settings
its output depends on, whether the config asks for it, its outputs, and the function that makes
them. :class:`Runner` walks a table in order and, for each stage:

- **not applicable** when the config does not ask for it;
- **skipped** when an earlier model failed its safety gate and the stage would build on it or
  ship it (``gated``); its stale outputs are removed so nothing from another model looks current;
- **reused** when its outputs exist and its settings — and those of every stage before it (a
  digest chain) — are the ones it ran with, unless forced;
- otherwise **done**: recorded as ``running`` first (an interrupted run is recognised), then run.

What each stage did goes to a :class:`~medprune.report.records.RunRecord` after every stage, so
a killed run keeps what it finished. ``medprune run`` uses one runner over the whole table;
``medprune sweep`` one per setting, over the prune stage placed in the setting's folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from medprune._io import atomic_write_json
from medprune.errors import ConfigError, DataError
from medprune.registry import suggest
from medprune.report.records import CompressedStage, RunRecord, StageRecord, read_run_record

__all__ = ["Stage", "Runner", "digest", "changed_keys"]

log = logging.getLogger(__name__)


def digest(value: Any) -> str:
    """A short stable digest of a JSON-like value (the settings a stage depends on)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two plain settings dicts differ (for a useful message)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


@dataclass(frozen=True)
class Stage:
    """One stage of a run.

    Attributes:
        name: the stage's name (``train``, ``prune``, ...).
        folder: its folder in the run directory (``None``: the run directory itself).
        settings: plain config dict → the settings its output depends on (its own only; the
            runner chains them with every earlier stage's).
        applies: whether the config asks for it.
        outputs: the files that must exist for it to count as done, given its folder.
        run: does the work; returns what to add to its record (label, gate, numbers).
        produces_model: whether its folder holds a model (``model.pt``) later stages start from.
        gated: skipped when an earlier stage's model failed its safety gate.
        on_changed: called with the changed keys when its outputs exist but its settings changed
            (the train stage refuses instead of deleting a trained model).
    """

    name: str
    folder: str | None
    settings: Callable[[dict[str, Any]], dict[str, Any]]
    applies: Callable[[Any], bool]
    outputs: Callable[[Path], list[Path]]
    run: Callable[[Any, Stage], dict[str, Any] | None]
    produces_model: bool = False
    gated: bool = False
    on_changed: Callable[[Any, list[str]], None] | None = None


@dataclass
class Runner:
    """Runs or reuses a table of stages for one config, recording each in ``record_path``.

    ``context`` is handed to every stage function (the workflow's shared state: config, data,
    device); ``chain`` starts the settings digest chain (a sweep point continues the run's chain
    after training); ``force`` redoes the named stage and every later one.
    """

    stages: Sequence[Stage]
    record_path: Path
    context: Any
    force: Sequence[str] = ()
    accept_unsafe: bool = False
    chain: str = ""
    records: dict[str, StageRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        unknown = [s for s in self.force if s not in names]
        if unknown:
            raise ConfigError(f"--force: {suggest(unknown[0], names, 'stage')} (in run order: {', '.join(names)})")
        first = min((names.index(s) for s in self.force), default=len(names))
        self.forced = set(names[first:])
        try:
            self.previous = read_run_record(self.record_path)
        except DataError as exc:
            log.warning("%s; every stage's outputs are checked afresh", exc)
            self.previous = None
        self.redo_rest = False
        self.blocked: str | None = None

    # ------------------------------------------------------------------ records
    def adopt(self, name: str, settings: dict[str, Any]) -> None:
        """Treat outputs made outside the runner (a ``medprune train`` run with this stage's
        ``settings``) as this stage's, when no record says otherwise."""
        if self.previous is None:
            self.previous = RunRecord(name=None, config=None, stages={})
        if name not in self.previous.stages:
            self.previous.stages[name] = StageRecord("adopted", settings=settings, chain=digest([self.chain, settings]))

    def previous_stage(self, name: str) -> StageRecord | None:
        return self.previous.stages.get(name) if self.previous is not None else None

    def merged(self) -> dict[str, StageRecord]:
        """This call's records plus the previous records of stages it did not reach (``stop_after``),
        so a sweep does not erase what ``medprune run`` recorded."""
        previous = {k: v for k, v in (self.previous.stages if self.previous else {}).items() if v.status != "adopted"}
        order = [s.name for s in self.stages] + [k for k in previous if k not in {s.name for s in self.stages}]
        return {n: self.records.get(n) or previous[n] for n in order if n in self.records or n in previous}

    def final(self, *, include_failed: bool = False) -> Stage | None:
        """The last model-producing stage whose model is current (and passed its gate, unless ``include_failed``)."""
        merged = self.merged()
        for stage in reversed(list(self.stages)):
            record = merged.get(stage.name)
            if stage.produces_model and record is not None and record.produced \
                    and (include_failed or not record.gate_failed):
                return stage
        return None

    def save(self, **fields_: Any) -> RunRecord:
        """Write the run record now (after every stage, so a killed run keeps what finished)."""
        merged = self.merged()
        final = self.final()
        record = RunRecord(
            name=fields_.get("name"), config=fields_.get("config"), task=fields_.get("task", "classification"),
            synthetic_data=fields_.get("synthetic_data"), stages=merged, accept_unsafe=self.accept_unsafe,
            compressed_stages=[CompressedStage(s.name, merged[s.name].label or s.name, str(s.folder),
                                               (merged[s.name].gate or {}).get("status"))
                               for s in self.stages if s.produces_model and s.name in merged
                               and merged[s.name].produced],
            final=final.folder if final else None)
        atomic_write_json(self.record_path, record.to_dict())
        return record

    # ------------------------------------------------------------------ running
    def run(self, stage: Stage, *, on_record: Callable[[], None] | None = None) -> StageRecord:
        """Run or reuse ``stage`` (see the module docstring); returns its record."""
        ctx = self.context
        plain = ctx.config.to_dict()
        settings = stage.settings(plain)
        self.chain = digest([self.chain, settings])
        folder = ctx.run_dir / stage.folder if stage.folder else ctx.run_dir
        save = on_record or self.save

        def record(rec: StageRecord) -> StageRecord:
            self.records[stage.name] = rec
            save()
            return rec

        if not stage.applies(ctx.config):
            return record(StageRecord("not_applicable", note="not asked for by the config"))
        if self.blocked and stage.gated:
            log.warning("stage %s: skipped (%s)", stage.name, self.blocked)
            # What an earlier run left there was made from another model: it must not look current.
            if stage.folder:
                shutil.rmtree(folder, ignore_errors=True)
            return record(StageRecord("skipped", note=self.blocked))
        old = self.previous_stage(stage.name)
        exists = all(p.exists() for p in stage.outputs(folder))
        same = old is not None and old.chain == self.chain
        if exists and not same and old is not None and old.settings is not None and stage.on_changed is not None:
            stage.on_changed(ctx, changed_keys(old.settings, settings) or ["an earlier stage's settings"])
        accepting = self.accept_unsafe and old is not None and old.gate_failed
        if exists and same and stage.name not in self.forced and not self.redo_rest and not accepting:
            log.info("stage %s: reusing %s", stage.name, folder)
            rec = record(StageRecord(**{**old.__dict__, "status": "reused"}))  # type: ignore[union-attr]
            self._note_gate(stage.name, rec)
            return rec
        why = ("forced" if stage.name in self.forced else "an earlier stage was redone" if self.redo_rest and exists
               else "redone to keep its model with --accept-unsafe" if accepting and exists
               else "settings changed" if exists else "first run")
        log.info("stage %s: running (%s)", stage.name, why)
        # Recorded before the work starts, so an interrupted stage is recognised (and training resumed).
        record(StageRecord("running", note=why, chain=self.chain, settings=settings))
        t0 = time.perf_counter()
        extra = dict(stage.run(ctx, stage) or {})
        known = {k: extra.pop(k) for k in ("label", "gate", "model_file") if k in extra}
        rec = record(StageRecord("done", seconds=round(time.perf_counter() - t0, 2), note=why, chain=self.chain,
                                 settings=settings, extra=extra, **known))
        self.redo_rest = True
        self._note_gate(stage.name, rec)
        return rec

    def _note_gate(self, name: str, rec: StageRecord) -> None:
        """A stage whose model failed its safety gate stops the gated stages after it."""
        if rec.gate_failed:
            self.blocked = f"{name} failed its safety gate"

    def gate_failures(self) -> list[str]:
        """One line per stage of this call whose model failed its safety gate."""
        return [f"{name}: {rec.gate.get('message')} (kept as {rec.model_file})"  # type: ignore[union-attr]
                for name, rec in self.records.items() if rec.gate_failed]
