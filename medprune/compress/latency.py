"""Size, MACs and measured CPU latency of a model, in PyTorch eager and in ONNX Runtime.

Latency is not MACs (DESIGN.md §4 item 7): a pruned model can lose 11× its MACs and run only
3–6× faster. And single timings on a shared CPU drift by ±30 % from one minute to the next, so two
models must be compared **in one process, interleaved**: :func:`interleaved_latency` runs every
candidate round-robin, keeps each round's fastest call (the one least disturbed by the rest of the
machine) and reports the median over rounds, with the spread of those per-round minima::

    stats = interleaved_latency({
        "base": torch_runner(base, x),
        "pruned": torch_runner(pruned, x),
        "pruned (ORT)": ort_runner("runs/x/export/model.onnx", x),
    })
    stats["base"].median_ms / stats["pruned"].median_ms      # measured speed-up
    speedup_interval(stats["base"], stats["pruned"])          # (lo, hi) from the quartiles
    differs(stats["base"], stats["pruned"])                   # False: within the measured spread

A speed-up whose interval includes 1.0 is noise, not a result: report it as "within the measured
spread". Models with the same :func:`architecture_key` run the same dense kernels, so time each
architecture once and give every model of it that timing rather than letting drift tell them apart.

:func:`bench_model` gathers everything the report needs for one model (parameters, MACs, file
size, PyTorch and ONNX Runtime latency measured interleaved, versions, machine) into a JSON-ready
dict; :func:`format_bench` turns it into a text table. A number from another run or another
machine is not comparable; the dict records both so a reader can tell.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medprune.compress.export import export_onnx, packed_feed
from medprune.models.cost import count_params, total_macs

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "LatencyStats",
    "METHOD",
    "speedup_interval",
    "differs",
    "architecture_key",
    "torch_threads",
    "ort_session",
    "torch_runner",
    "ort_runner",
    "interleaved_latency",
    "measure_torch_latency",
    "measure_ort_latency",
    "bench_model",
    "bench_models",
    "BenchResult",
    "BenchEntry",
    "bench_file",
    "format_bench",
    "state_dict_bytes",
    "machine_info",
    "library_versions",
]

logger = logging.getLogger(__name__)

InputSize = tuple[int, int, int]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in milliseconds (one sample per call, or per round's minimum).

    ``q1_ms``–``q3_ms`` (the interquartile range) is the *measured spread*: :func:`speedup_interval`
    and :func:`differs` use it to tell a real difference from the machine's drift. It is robust to
    one disturbed round, unlike ``min_ms``–``max_ms``, which are kept too. ``spread_pct`` is half
    the interquartile range relative to the median, shown as "± x %".
    """

    median_ms: float
    mean_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    n: int
    q1_ms: float
    q3_ms: float
    max_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Statistics of ``samples_ms`` (at least one sample; percentiles interpolate linearly)."""
        if len(samples_ms) == 0:
            raise ValueError("LatencyStats.from_samples: no samples")
        a = np.asarray(samples_ms, dtype=np.float64)
        p10, q1, q3, p90 = np.percentile(a, [10, 25, 75, 90])
        return cls(median_ms=float(np.median(a)), mean_ms=float(a.mean()), min_ms=float(a.min()),
                   p10_ms=float(p10), p90_ms=float(p90), n=int(a.size), q1_ms=float(q1), q3_ms=float(q3),
                   max_ms=float(a.max()))

    @property
    def spread_pct(self) -> float:
        """Half the interquartile range as a percentage of the median ("± x %")."""
        return 50.0 * (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form: every field plus ``spread_pct``."""
        return {**asdict(self), "spread_pct": self.spread_pct}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyStats:
        """The inverse of :meth:`to_dict` (``spread_pct`` is recomputed, not read).

        Raises:
            ValueError: naming the missing keys, e.g. for a record written before the spread was
                measured (no ``q1_ms``/``q3_ms``): measure again rather than assume no spread.
        """
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"latency record lacks {', '.join(missing)}; it was written by an older medprune "
                             "without the measured spread: measure again")
        return cls(**{n: int(data[n]) if n == "n" else float(data[n]) for n in names})


def speedup_interval(base: LatencyStats, other: LatencyStats) -> tuple[float, float]:
    """The range of ``base / other`` speed-ups the two measured spreads allow: ``(lo, hi)``.

    ``lo = base.q1_ms / other.q3_ms`` and ``hi = base.q3_ms / other.q1_ms``. The point estimate
    ``base.median_ms / other.median_ms`` lies inside. An interval that includes 1.0 means the
    two are not told apart by this measurement (equivalently, ``not differs(base, other)``).

    Example::

        >>> a = LatencyStats.from_samples([9.0, 10.0, 11.0])      # q1 9.5, q3 10.5
        >>> b = LatencyStats.from_samples([4.0, 5.0, 6.0])        # q1 4.5, q3 5.5
        >>> tuple(round(v, 3) for v in speedup_interval(a, b))
        (1.727, 2.333)
    """
    return base.q1_ms / max(other.q3_ms, 1e-12), base.q3_ms / max(other.q1_ms, 1e-12)


def differs(a: LatencyStats, b: LatencyStats) -> bool:
    """Whether two timings differ beyond their measured spreads (their interquartile ranges are disjoint).

    Meant for candidates timed in the same :func:`interleaved_latency` call; timings from
    different runs or machines are not comparable at all. Touching ranges count as overlapping.
    """
    return a.q3_ms < b.q1_ms or b.q3_ms < a.q1_ms


def architecture_key(model: nn.Module) -> str:
    """A 12-hex-digit digest of ``model``'s architecture, blind to the weight values.

    Two models with the same key run the same dense kernels at the same sizes, so their latency
    differs only by measurement noise (e.g. L1 and L2 pruning at the same per-layer ratio keep the
    same widths). The digest covers, for every submodule: its qualified name, class and
    ``extra_repr()`` (kernel sizes, strides, widths, ...), the shapes and dtypes of its own
    parameters and buffers; plus the registry ``name``, ``kwargs`` and ``transforms`` of
    ``model.medprune_spec`` when the model has one (arguments that change ``forward`` without
    changing a layer). It is computed from the PyTorch model rather than the exported ONNX graph,
    so it is known before any export. Values are never read: a model whose filters were zeroed in
    place (soft pruning) keeps its base's key, as it keeps its base's latency. A layer whose
    ``extra_repr`` prints learned values (e.g. quantization scales) makes the key conservative:
    equal architectures may then get different keys, never the reverse.
    """
    layers = []
    for name, module in model.named_modules():
        tensors = [(n, list(t.shape), str(t.dtype))
                   for n, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
                   if t is not None]
        layers.append([name, f"{type(module).__module__}.{type(module).__qualname__}", module.extra_repr(), tensors])
    spec = getattr(model, "medprune_spec", None)
    registry = {k: spec.get(k) for k in ("name", "kwargs", "transforms")} if isinstance(spec, dict) else None
    text = json.dumps({"spec": registry, "layers": layers}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _check_counts(where: str, **counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(threads)`` and restore the previous count afterwards.

    ``None`` leaves the count alone. Time PyTorch and ONNX Runtime with the same count (see
    :func:`ort_session`) so that neither gets more cores than the other.
    """
    if threads is None:
        yield
        return
    _check_counts("threads", threads=threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _example(input_size: InputSize, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A seeded random batch: values do not change dense-model latency, shapes do."""
    _check_counts("input", batch=batch, **{f"input_size[{i}]": int(s) for i, s in enumerate(input_size)})
    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, *input_size), generator=g).to(device)


def ort_session(path: str | os.PathLike[str], threads: int | None = None, *,
                spinning: bool = False) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session set up for latency measurement.

    ``intra_op_num_threads`` is ``threads`` or ``torch.get_num_threads()`` (so PyTorch and ORT get
    the same cores), graph optimisation level ALL, sequential execution. ``spinning=False`` stops
    ORT's idle threads busy-waiting after each run: spinning threads would steal the cores from
    whatever runs next in an interleaved comparison (and from the pre-processing on a device).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_runner(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """A zero-argument callable running ``model(x)`` under ``torch.inference_mode``.

    Puts ``model`` in eval mode (what is deployed; train-mode BatchNorm would also update its
    statistics); call ``model.train()`` afterwards if training continues. On CUDA each call waits
    for the GPU so the time covers the whole forward.
    """
    model.eval()
    sync = torch.cuda.synchronize if x.is_cuda else None

    def run() -> None:
        with torch.inference_mode():
            model(x)
        if sync is not None:
            sync()

    return run


def ort_runner(session_or_path: Any, x: torch.Tensor | np.ndarray,
               threads: int | None = None) -> Callable[[], None]:
    """A zero-argument callable running an ONNX graph (a session or an ``.onnx`` path) on ``x``.

    A path gets an :func:`ort_session` with ``threads``; a ready session is used as it is. ``x``
    is converted to the graph input's element type once, outside the timed call (a batch carrying
    the degradation parameter q is split over a two-input graph's ``image`` and ``q``:
    :func:`~medprune.compress.export.packed_feed`).
    """
    session = _session(session_or_path, threads)
    feed = packed_feed(session, x)

    def run() -> None:
        session.run(None, feed)

    return run


def _session(session_or_path: Any, threads: int | None) -> onnxruntime.InferenceSession:
    if isinstance(session_or_path, (str, os.PathLike)):
        return ort_session(session_or_path, threads)
    if threads is not None:
        raise ValueError("threads applies only when an .onnx path is given; "
                         "build the session with ort_session(path, threads) instead")
    return session_or_path


def _time_ms(fn: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return (clock() - start) * 1e3


def interleaved_latency(
    candidates: Mapping[str, Callable[[], None]],
    *,
    rounds: int = 7,
    warmup: int = 2,
    per_round: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, LatencyStats]:
    """Latency of each zero-argument callable, measured round-robin (DESIGN.md §4 item 7).

    Every candidate is first called ``warmup`` times. Then, in each of ``rounds`` rounds, every
    candidate is called ``per_round`` times in a row and the fastest call of the round is kept;
    the start of the round-robin rotates each round so no candidate always follows the same one.
    Slow drifts of the machine (other processes, clock scaling) then hit all candidates alike.

    ``clock`` returns seconds (``time.perf_counter``); tests inject a fake one to check the
    bookkeeping with exact durations.

    Returns:
        Candidate name → :class:`LatencyStats` over the per-round minima (``median_ms`` is the
        number to compare, ``q1_ms``–``q3_ms`` its measured spread; ``n == rounds``), in the order
        of ``candidates``.
    """
    _check_counts("interleaved_latency", rounds=rounds, per_round=per_round)
    if warmup < 0:
        raise ValueError(f"interleaved_latency: warmup must be >= 0, got {warmup}")
    if not candidates:
        raise ValueError("interleaved_latency: no candidates to measure")
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    minima: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = candidates[name]
            minima[name].append(min(_time_ms(fn, clock) for _ in range(per_round)))
    return {name: LatencyStats.from_samples(minima[name]) for name in names}


def _sequential_latency(fn: Callable[[], None], warmup: int, repeats: int) -> LatencyStats:
    _check_counts("latency", repeats=repeats)
    if warmup < 0:
        raise ValueError(f"latency: warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    return LatencyStats.from_samples([_time_ms(fn) for _ in range(repeats)])


def measure_torch_latency(
    model: nn.Module,
    input_size: InputSize,
    *,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
) -> LatencyStats:
    """PyTorch eager latency of one ``(batch, *input_size)`` forward, over ``repeats`` calls.

    Runs in eval mode under ``torch.inference_mode`` on the model's device with ``threads`` torch
    threads (the current count if ``None``); the model's mode and the thread count are restored.
    To compare two models use :func:`interleaved_latency` instead.
    """
    was_training = model.training
    x = _example(tuple(input_size), batch, _model_device(model))
    try:
        with torch_threads(threads):
            return _sequential_latency(torch_runner(model, x), warmup, repeats)
    finally:
        model.train(was_training)


def measure_ort_latency(
    onnx_path_or_session: Any,
    input_size: InputSize,
    *,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
) -> LatencyStats:
    """ONNX Runtime CPU latency of one ``(batch, *input_size)`` run, over ``repeats`` calls.

    A path gets an :func:`ort_session` with ``threads`` intra-op threads (``torch.get_num_threads()``
    if ``None``); a ready session is used as it is.
    """
    return _sequential_latency(ort_runner(onnx_path_or_session, _example(tuple(input_size), batch), threads),
                               warmup, repeats)


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())`` in bytes (a model's file size without its record)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def machine_info() -> dict[str, Any]:
    """The processor, architecture, system and CPU count: what every timing is reported beside."""
    processor = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # Linux: platform.processor() is often just the architecture
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    return {"processor": processor or platform.machine(), "machine": platform.machine(),
            "system": platform.system(), "cpu_count": os.cpu_count()}


def library_versions() -> dict[str, str]:
    """Versions of torch, ONNX Runtime and onnx: what every timing is reported beside."""
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}


#: How :func:`interleaved_latency` results are summarised, as recorded in bench and sweep results.
METHOD = ("median of per-round minima (± half their interquartile range), "
           "candidates interleaved round-robin in one process")


def bench_model(
    model: nn.Module,
    input_size: InputSize,
    *,
    batch: int = 1,
    threads: int | None = None,
    rounds: int = 7,
    per_round: int = 3,
    warmup: int = 2,
    onnx_dir: str | os.PathLike[str] | None = None,
    model_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Parameters, MACs, file size and PyTorch / ONNX Runtime latency of ``model``, as a JSON-ready dict.

    The model is exported with :func:`~medprune.compress.export.export_onnx` (parity-checked)
    to ``onnx_dir/model.onnx``, or to a temporary folder removed afterwards; PyTorch eager and ONNX
    Runtime are then timed interleaved (:func:`interleaved_latency`) with the same thread count.
    ``model_file`` reports that file's size instead of the size of ``torch.save(state_dict)``.

    Returns:
        ``{"params", "macs", "file_bytes", "file_kind", "onnx_bytes", "onnx_parity",
        "latency_ms": {"torch": LatencyStats dict, "onnxruntime": ...}, "input_size", "batch",
        "threads", "method", "versions", "machine"}``.
    """
    input_size = tuple(int(s) for s in input_size)
    threads = threads or torch.get_num_threads()
    was_training = model.training
    x = _example(input_size, batch, _model_device(model))
    if model_file is not None:
        file_bytes, file_kind = Path(model_file).stat().st_size, Path(model_file).name
    else:
        file_bytes, file_kind = state_dict_bytes(model), "torch.save(state_dict)"
    result: dict[str, Any] = {
        "params": count_params(model),
        "macs": total_macs(model, tuple(input_size)),
        "file_bytes": file_bytes,
        "file_kind": file_kind,
    }
    with contextlib.ExitStack() as stack:
        folder = Path(onnx_dir) if onnx_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        exported = export_onnx(model, x, folder / "model.onnx")
        result["onnx_bytes"] = exported.path.stat().st_size
        result["onnx_parity"] = {"max_abs_diff": exported.max_abs_diff, "max_rel_diff": exported.max_rel_diff}
        if onnx_dir is not None:
            result["onnx_path"] = str(exported.path)
        try:
            with torch_threads(threads):
                stats = interleaved_latency(
                    {"torch": torch_runner(model, x), "onnxruntime": ort_runner(exported.path, x, threads)},
                    rounds=rounds, warmup=warmup, per_round=per_round)
        finally:
            model.train(was_training)
    result.update(_context(input_size, batch, threads, stats, rounds, per_round))
    result["torch_device"] = str(x.device)
    logger.info("bench: %s params, %.1f MMACs, PyTorch %.2f ms, ONNX Runtime %.2f ms (median, %d threads)",
                f"{result['params']:,}", result["macs"] / 1e6, stats["torch"].median_ms,
                stats["onnxruntime"].median_ms, threads)
    return result


@dataclass
class BenchEntry:
    """One model of a :class:`BenchResult`: its size, cost and latency per runtime."""

    latency_ms: dict[str, LatencyStats]
    params: int | None = None
    macs: int | None = None
    file_bytes: int | None = None
    file_kind: str | None = None
    onnx_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in ("params", "macs", "file_bytes", "file_kind", "onnx_bytes")
                               if getattr(self, k) is not None}
        out["latency_ms"] = {rt: stats.to_dict() for rt, stats in self.latency_ms.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchEntry:
        return cls(latency_ms={rt: LatencyStats.from_dict(v) for rt, v in (data.get("latency_ms") or {}).items()},
                   **{k: data.get(k) for k in ("params", "macs", "file_bytes", "file_kind", "onnx_bytes")})


@dataclass
class BenchResult:
    """Several models timed interleaved in one process (``bench.json``): what ``medprune run``, ``sweep``
    and the benchmarks report. ``speedup[name][runtime]`` is the base's median over the model's."""

    models: dict[str, BenchEntry]
    input_size: list[int]
    batch: int
    threads: int
    rounds: int
    per_round: int
    base: str = "base"
    method: str = METHOD
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> dict[str, dict[str, float]]:
        base = self.models[self.base].latency_ms
        return {name: {rt: base[rt].median_ms / max(stats.median_ms, 1e-9) for rt, stats in e.latency_ms.items()
                       if rt in base}
                for name, e in self.models.items() if name != self.base}

    def to_dict(self) -> dict[str, Any]:
        return {"models": {k: v.to_dict() for k, v in self.models.items()}, "input_size": list(self.input_size),
                "batch": self.batch, "threads": self.threads, "rounds": self.rounds, "per_round": self.per_round,
                "base": self.base, "method": self.method, "versions": self.versions, "machine": self.machine,
                "speedup": self.speedup}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        return cls(models={k: BenchEntry.from_dict(v) for k, v in data["models"].items()},
                   input_size=list(data.get("input_size") or []), batch=int(data.get("batch", 1)),
                   threads=int(data.get("threads", 1)), rounds=int(data.get("rounds", 0)),
                   per_round=int(data.get("per_round", 0)), base=str(data.get("base", "base")),
                   method=str(data.get("method", METHOD)), versions=dict(data.get("versions") or {}),
                   machine=dict(data.get("machine") or {}))


def bench_models(models: Mapping[str, nn.Module | None], onnx: Mapping[str, str | os.PathLike[str] | None],
                 example: torch.Tensor, *, batch: int = 1, threads: int | None = None, rounds: int = 7,
                 per_round: int = 3, warmup: int = 2, base: str = "base",
                 file_bytes: Mapping[str, tuple[int, str]] | None = None) -> BenchResult:
    """Time several models interleaved (:func:`interleaved_latency`): PyTorch eager for each model given,
    ONNX Runtime for each graph given, all in one round-robin so the machine's drift hits them alike.

    ``models`` and ``onnx`` map names to a model / an ONNX file (``None`` or absent: that runtime is not
    timed for the name; a name in ``onnx`` only — an INT8 graph — gets ONNX Runtime figures only).
    ``example`` is one sample batch; ``batch`` repeats it. ``file_bytes`` overrides a model's reported
    file size: ``{name: (bytes, kind)}``.
    """
    size = [int(s) for s in example.shape[1:]]
    threads = threads or torch.get_num_threads()
    x = example[:1].repeat(batch, *([1] * (example.dim() - 1)))
    names = list(dict.fromkeys([*models, *onnx]))
    runners: dict[str, Callable[[], None]] = {}
    for name in names:
        if models.get(name) is not None:
            runners[f"{name}/torch"] = torch_runner(models[name], x)  # type: ignore[arg-type]
        if onnx.get(name) is not None:
            runners[f"{name}/onnxruntime"] = ort_runner(onnx[name], x, threads)
    with torch_threads(threads):
        stats = interleaved_latency(runners, rounds=rounds, warmup=warmup, per_round=per_round)
    entries = {}
    for name in names:
        model, graph = models.get(name), onnx.get(name)
        kind = (file_bytes or {}).get(name)
        entries[name] = BenchEntry(
            latency_ms={rt: stats[f"{name}/{rt}"] for rt in ("torch", "onnxruntime") if f"{name}/{rt}" in stats},
            params=count_params(model) if model is not None else None,
            macs=total_macs(model, tuple(size)) if model is not None else None,
            file_bytes=kind[0] if kind else (state_dict_bytes(model) if model is not None else None),
            file_kind=kind[1] if kind else ("torch.save(state_dict)" if model is not None else None),
            onnx_bytes=Path(graph).stat().st_size if graph is not None else None)
    return BenchResult(models=entries, input_size=size, batch=batch, threads=threads, rounds=rounds,
                       per_round=per_round, base=base, method=f"{METHOD}; {rounds} rounds × {per_round} calls",
                       versions=library_versions(), machine=machine_info())


def _context(input_size: tuple[int, ...], batch: int, threads: int, stats: dict[str, LatencyStats],
             rounds: int, per_round: int) -> dict[str, Any]:
    return {
        "latency_ms": {name: s.to_dict() for name, s in stats.items()},
        "input_size": list(input_size),
        "batch": batch,
        "threads": threads,
        "method": f"{METHOD}; {rounds} rounds × {per_round} calls",
        "versions": library_versions(),
        "machine": machine_info(),
    }


def _onnx_input_size(path: Path) -> InputSize | None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    shapes = [[d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
              for i in inputs]
    dims, extra = shapes[0], shapes[1:]
    if len(dims) != 4 or not all(dims[1:]):
        return None
    # further (N, D) inputs (a degradation-aware graph's q) come as D planes behind the image (packed_feed)
    if any(len(e) != 2 or not e[1] for e in extra):
        return None
    return (dims[1] + sum(e[1] for e in extra), dims[2], dims[3])


def _onnx_params(path: Path) -> int:
    import onnx

    floating = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(math.prod(t.dims) for t in graph.initializer if t.data_type in floating)


def bench_file(
    model_path: str | os.PathLike[str],
    input_size: InputSize | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """:func:`bench_model` for a medprune model file, or ONNX Runtime figures for an ``.onnx`` file.

    A medprune file is rebuilt with :func:`medprune.compress.serialize.load_model` (pruned widths
    included); ``input_size`` defaults to the size the file records (every model file medprune
    writes does), else the model's ``default_input_size``. For an ``.onnx``
    file only ONNX Runtime is timed; ``params`` counts the floating-point initializers (BatchNorm
    is folded into the convolutions there, so it can be lower than the PyTorch count) and
    ``macs`` is ``None``; ``input_size`` defaults to the graph's static input shape.

    Keyword arguments are those of :func:`bench_model` (for ``.onnx``: ``batch``, ``threads``,
    ``rounds``, ``per_round``, ``warmup``).

    Raises:
        FileNotFoundError: if ``model_path`` does not exist.
        ValueError: if no input size is given and none can be read from the file.
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix.lower() != ".onnx":
        from medprune.compress.serialize import load_model

        model = load_model(path)
        size = (input_size or getattr(model, "medprune_input_size", None)  # what the file records
                or getattr(model, "default_input_size", None))
        if size is None:
            raise ValueError(f"{path}: the model has no default_input_size; pass input_size (C, H, W)")
        result = bench_model(model, tuple(size), model_file=path, **kw)
        result["model_path"] = str(path)
        return result

    size = input_size or _onnx_input_size(path)
    if size is None:
        raise ValueError(f"{path}: the graph input has no static (C, H, W); pass input_size")
    unknown = set(kw) - {"batch", "threads", "rounds", "per_round", "warmup"}
    if unknown:
        raise TypeError(f"bench_file: {', '.join(sorted(unknown))} do(es) not apply to an .onnx file")
    batch, threads = kw.get("batch", 1), kw.get("threads") or torch.get_num_threads()
    rounds, per_round = kw.get("rounds", 7), kw.get("per_round", 3)
    x = _example(tuple(size), batch)
    stats = interleaved_latency({"onnxruntime": ort_runner(path, x, threads)}, rounds=rounds,
                                warmup=kw.get("warmup", 2), per_round=per_round)
    result = {"params": _onnx_params(path), "macs": None, "file_bytes": path.stat().st_size,
              "file_kind": path.name, "model_path": str(path)}
    result.update(_context(tuple(size), batch, threads, stats, rounds, per_round))
    return result


def _ms(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return f"{'–':>8} {'–':>8} {'–':>8} {'–':>8} {'–':>7}"
    spread = stats.get("spread_pct")  # absent from results written before the spread was recorded
    return (" ".join(f"{stats[k]:>8.2f}" for k in ("median_ms", "p10_ms", "p90_ms", "min_ms"))
            + (f" {spread:>6.1f}%" if spread is not None else f" {'–':>7}"))


def format_bench(result: Mapping[str, Any]) -> str:
    """A fixed-width text table of a :func:`bench_model` / :func:`bench_file` result."""
    size = "×".join(str(s) for s in result["input_size"])
    macs = result.get("macs")
    lines = [
        f"{'parameters':<16} {result['params']:,}",
        f"{'MACs':<16} {'n/a' if macs is None else f'{macs / 1e6:,.1f} M'}",
        f"{'file size':<16} {result['file_bytes'] / 2**20:.2f} MiB ({result['file_kind']})",
    ]
    if "onnx_bytes" in result:
        parity = result.get("onnx_parity") or {}
        diff = parity.get("max_abs_diff")
        lines.append(f"{'ONNX size':<16} {result['onnx_bytes'] / 2**20:.2f} MiB"
                     + (f" (max |diff| vs PyTorch {diff:.2g})" if diff is not None else ""))
    lines += [
        f"{'input':<16} batch {result['batch']} × {size}, {result['threads']} thread(s)",
        f"{'latency (ms)':<16} {'median':>8} {'p10':>8} {'p90':>8} {'min':>8} {'±':>7}",
    ]
    labels = {"torch": "PyTorch eager", "onnxruntime": "ONNX Runtime"}
    for name, stats in result["latency_ms"].items():
        lines.append(f"  {labels.get(name, name):<14} {_ms(stats)}")
    machine = result.get("machine") or {}
    versions = result.get("versions") or {}
    lines.append(f"{'machine':<16} {machine.get('processor', '?')}, {machine.get('cpu_count', '?')} CPUs")
    lines.append(f"{'versions':<16} " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"{'method':<16} {result.get('method', '')}")
    return "\n".join(lines)
