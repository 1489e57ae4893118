"""ONNX export parity, latency measurement and the benchmark dict (tiny models, CPU)."""

from __future__ import annotations

import io
import math
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from medprune.compress.export import ExportResult, export_onnx
from medprune.compress.latency import (
    LatencyStats,
    architecture_key,
    bench_file,
    bench_model,
    differs,
    format_bench,
    interleaved_latency,
    measure_ort_latency,
    measure_torch_latency,
    ort_runner,
    ort_session,
    speedup_interval,
    torch_runner,
)
from medprune.errors import ExportError, MedpruneError
from medprune.models import count_macs, count_params, total_macs
from medprune.models import create_model

INPUT = (3, 20, 20)


def _net(randn_seed: int | None = None) -> nn.Sequential:
    """Conv-BN-ReLU-conv-pool-linear; with ``randn_seed`` every weight and BN statistic is N(0, 1)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    if randn_seed is not None:
        g = torch.Generator().manual_seed(randn_seed)
        with torch.no_grad():
            for t in [*model.parameters(), model[1].running_mean]:
                t.copy_(torch.randn(t.shape, generator=g))
            model[1].running_var.copy_(torch.rand(8, generator=g) + 0.5)
    return model


def _batch(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, *INPUT), generator=torch.Generator().manual_seed(seed))


class _TupleNet(nn.Module):
    """Returns (logits, something else) also in eval mode, like a model with an auxiliary head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _net()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(x)
        return logits, logits * 2


def test_export_parity_dynamic_batch_and_mode_restored(tmp_path) -> None:
    model = _net().train()
    result = export_onnx(model, _batch(2), tmp_path / "export" / "model.onnx")
    assert isinstance(result, ExportResult) and result.path == tmp_path / "export" / "model.onnx"
    assert result.path.is_file() and result.passed is True
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    assert result.max_rel_diff is not None and result.seconds > 0
    assert model.training  # mode restored
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["model.onnx"]  # no temp file left

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    x = _batch(5, seed=7)  # a batch size never seen during export
    got = session.run(["logits"], {"input": x.numpy()})[0]
    with torch.inference_mode():
        expected = model.eval()(x).numpy()
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_export_static_batch_and_tuple_output(tmp_path) -> None:
    model = _TupleNet().eval()
    result = export_onnx(model, (_batch(2),), tmp_path / "m.onnx", dynamic_batch=False)
    assert not model.training
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, *INPUT]
    (out,) = session.run(None, {"input": _batch(2).numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(out, model(_batch(2))[0].numpy(), rtol=1e-4, atol=1e-5)


def test_export_without_check_reports_none(tmp_path) -> None:
    result = export_onnx(_net(), _batch(1), tmp_path / "m.onnx", check=False)
    assert result.path.is_file()
    assert (result.max_abs_diff, result.max_rel_diff, result.passed) == (None, None, None)


def test_export_refused_beyond_tolerance_leaves_no_file(tmp_path) -> None:
    # N(0, 1) weights give logits ~10: ORT folds BN into the conv, so float rounding differs
    # by ~1e-5 — far above a zero tolerance, deterministically.
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"model\.onnx: ONNX Runtime output differs from PyTorch .*max \|diff\| "
                                          r"[0-9.e-]+, max relative diff [0-9.e-]+; allowed atol 0") as info:
        export_onnx(_net(randn_seed=0), _batch(2), path, rtol=0.0, atol=0.0)
    assert isinstance(info.value, MedpruneError)
    assert list(tmp_path.iterdir()) == []

    # An earlier export at the same path survives a refused one untouched.
    path.write_bytes(b"earlier export")
    with pytest.raises(ExportError):
        export_onnx(_net(randn_seed=0), _batch(2), path, rtol=0.0, atol=0.0)
    assert path.read_bytes() == b"earlier export" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    # ... and the same model passes at the default tolerance.
    assert export_onnx(_net(randn_seed=0), _batch(2), path, rtol=1e-3, atol=1e-3).passed


def test_export_rejects_several_inputs(tmp_path) -> None:
    with pytest.raises(ExportError, match="one input tensor, got 2"):
        export_onnx(_net(), (_batch(1), _batch(1)), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_latency_stats_closed_form() -> None:
    stats = LatencyStats.from_samples([float(v) for v in range(1, 11)])
    assert (stats.median_ms, stats.mean_ms, stats.min_ms, stats.max_ms, stats.n) == (5.5, 5.5, 1.0, 10.0, 10)
    assert stats.p10_ms == pytest.approx(1.9) and stats.p90_ms == pytest.approx(9.1)
    assert (stats.q1_ms, stats.q3_ms) == (3.25, 7.75)  # linear interpolation, numpy's default
    assert stats.spread_pct == pytest.approx(50 * 4.5 / 5.5)  # ± half the IQR, % of the median
    d = stats.to_dict()
    assert {"median_ms", "mean_ms", "min_ms", "p10_ms", "p90_ms", "n"} <= set(d)  # the keys readers knew
    assert d["median_ms"] == 5.5 and d["q1_ms"] == 3.25 and d["spread_pct"] == pytest.approx(stats.spread_pct)
    assert LatencyStats.from_dict(d) == stats
    assert LatencyStats.from_samples([4.0]).spread_pct == 0.0
    with pytest.raises(ValueError, match="no samples"):
        LatencyStats.from_samples([])
    old = {k: d[k] for k in ("median_ms", "mean_ms", "min_ms", "p10_ms", "p90_ms", "n")}
    with pytest.raises(ValueError, match="lacks q1_ms, q3_ms, max_ms; .*without the measured spread"):
        LatencyStats.from_dict(old)


def test_speedup_interval_and_differs_closed_form() -> None:
    base = LatencyStats.from_samples([9.0, 10.0, 11.0])  # IQR 9.5–10.5
    fast = LatencyStats.from_samples([4.0, 5.0, 6.0])  # IQR 4.5–5.5
    near = LatencyStats.from_samples([8.0, 10.0, 12.0])  # IQR 9–11
    touching = LatencyStats.from_samples([10.5, 11.0, 11.5])  # IQR 10.75–11.25
    assert speedup_interval(base, fast) == pytest.approx((9.5 / 5.5, 10.5 / 4.5))
    lo, hi = speedup_interval(base, near)
    assert lo < 1.0 < hi and (lo, hi) == pytest.approx((9.5 / 11, 10.5 / 9))
    assert differs(base, fast) and differs(fast, base)
    assert not differs(base, near) and not differs(near, base) and not differs(base, base)
    assert differs(base, touching)  # 10.5 < 10.75: disjoint
    # IQRs 1.5–2.5 and 2.5–3.5 touch: that counts as overlapping
    assert not differs(LatencyStats.from_samples([1.0, 2.0, 3.0]), LatencyStats.from_samples([2.0, 3.0, 4.0]))
    # the interval includes 1.0 exactly when the two do not differ
    for a, b in [(base, fast), (base, near), (fast, near), (base, touching)]:
        lo, hi = speedup_interval(a, b)
        assert (lo <= 1.0 <= hi) == (not differs(a, b))


def test_architecture_key_ignores_weights_and_sees_structure() -> None:
    torch.manual_seed(0)
    a = create_model("small_cnn", num_classes=2, in_chans=1, width=0.25)
    torch.manual_seed(1)
    b = create_model("small_cnn", num_classes=2, in_chans=1, width=0.25)
    key = architecture_key(a)
    assert len(key) == 12 and int(key, 16) >= 0
    assert architecture_key(b) == key  # other weights, same architecture
    with torch.no_grad():
        b.features[1][0][0].weight[:4].zero_()  # zeroed filters (soft pruning) run just as fast
    assert architecture_key(b) == key
    assert architecture_key(create_model("small_cnn", num_classes=3, in_chans=1, width=0.25)) != key
    assert architecture_key(create_model("small_cnn", num_classes=2, in_chans=1, width=0.5)) != key
    assert architecture_key(a.half()) != key
    # same layer widths, another kernel size or stride: another architecture
    assert architecture_key(nn.Conv2d(3, 8, 3)) == architecture_key(nn.Conv2d(3, 8, 3))
    assert architecture_key(nn.Conv2d(3, 8, 3)) != architecture_key(nn.Conv2d(3, 8, 5))
    assert architecture_key(nn.Conv2d(3, 8, 3)) != architecture_key(nn.Conv2d(3, 8, 3, stride=2))
    assert architecture_key(_net()) != architecture_key(nn.Sequential(*list(_net())[:-1], nn.Linear(8, 4)))


def test_architecture_key_same_for_l1_and_l2_at_one_per_layer_ratio() -> None:
    from medprune.compress import prune_model

    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    keys = {}
    for crit, ratio in [("l1", 0.5), ("l2", 0.5), ("l1", 0.25)]:
        torch.manual_seed(0)
        model = create_model("small_cnn", num_classes=2, in_chans=1, width=0.5)
        base_key = architecture_key(model)
        prune_model(model, x, criterion=crit, ratio=ratio)
        keys[crit, ratio] = architecture_key(model)
    assert keys["l1", 0.5] == keys["l2", 0.5]  # per-layer widths depend on the ratio, not the criterion
    assert len({base_key, keys["l1", 0.5], keys["l1", 0.25]}) == 3


def test_measure_torch_latency_restores_mode_and_threads() -> None:
    model = _net().train()
    threads = torch.get_num_threads()
    stats = measure_torch_latency(model, INPUT, batch=2, threads=1, warmup=1, repeats=5)
    assert stats.n == 5 and math.isfinite(stats.median_ms) and stats.median_ms > 0
    assert stats.min_ms <= stats.p10_ms <= stats.q1_ms <= stats.median_ms <= stats.q3_ms <= stats.p90_ms <= stats.max_ms
    assert model.training and torch.get_num_threads() == threads
    assert all(not bn.num_batches_tracked for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))


def test_measure_ort_latency_from_path_and_session(tmp_path) -> None:
    path = export_onnx(_net(), _batch(1), tmp_path / "m.onnx").path
    from_path = measure_ort_latency(path, INPUT, batch=3, threads=1, warmup=1, repeats=5)
    from_session = measure_ort_latency(ort_session(path, 1), INPUT, warmup=1, repeats=5)
    for stats in (from_path, from_session):
        assert stats.n == 5 and math.isfinite(stats.median_ms) and stats.median_ms > 0
    with pytest.raises(ValueError, match="threads applies only when an .onnx path is given"):
        measure_ort_latency(ort_session(path, 1), INPUT, threads=2)


class _FakeClock:
    """Seconds that pass only when a fake candidate 'runs': exact, and blind to the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def test_interleaved_latency_bookkeeping_with_a_fake_clock() -> None:
    clock = _FakeClock()
    order: list[str] = []
    # per call (ms): one warm-up call (never timed), then rounds × per_round timed calls
    durations = {"slow": iter([100.0, 7.0, 6.0, 9.0, 8.0, 6.5, 12.0]),
                 "fast": iter([50.0, 2.0, 3.0, 2.5, 2.0, 4.0, 3.0])}

    def work(name: str):
        def run() -> None:
            order.append(name)
            clock.now += next(durations[name]) / 1e3
        return run

    stats = interleaved_latency({"slow": work("slow"), "fast": work("fast")},
                                rounds=3, warmup=1, per_round=2, clock=clock)
    assert list(stats) == ["slow", "fast"]
    # warm-up, then round-robin whose start rotates every round
    assert order == ["slow", "fast"] + ["slow"] * 2 + ["fast"] * 2 + ["fast"] * 2 + ["slow"] * 2 \
        + ["slow"] * 2 + ["fast"] * 2
    assert clock.reads == 2 * 3 * 2 * 2  # warm-up calls are not timed
    slow, fast = stats["slow"], stats["fast"]  # per-round minima: slow 6, 8, 6.5; fast 2, 2, 3
    assert slow.n == fast.n == 3
    assert (slow.min_ms, slow.median_ms, slow.max_ms) == pytest.approx((6.0, 6.5, 8.0))
    assert (slow.q1_ms, slow.q3_ms, slow.mean_ms) == pytest.approx((6.25, 7.25, 20.5 / 3))
    assert (fast.min_ms, fast.median_ms, fast.max_ms, fast.q1_ms, fast.q3_ms) == pytest.approx((2, 2, 3, 2, 2.5))
    assert differs(slow, fast) and speedup_interval(slow, fast) == pytest.approx((6.25 / 2.5, 7.25 / 2.0))
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        interleaved_latency({"x": lambda: None}, rounds=0)


def test_runners_run_torch_and_ort(tmp_path) -> None:
    model = _net()
    x = _batch(2)
    path = export_onnx(model, x, tmp_path / "m.onnx").path
    stats = interleaved_latency({"torch": torch_runner(model, x), "ort": ort_runner(path, x, threads=1)},
                                rounds=2, warmup=1, per_round=1)
    assert all(s.median_ms > 0 and s.n == 2 and s.q1_ms <= s.median_ms <= s.q3_ms for s in stats.values())
    assert not model.training  # a runner measures the deployed (eval) model


def test_one_mac_counter_meta_and_real_forward_agree() -> None:
    """medprune has one MAC counter (models.cost.count_macs); a size and a real batch give the same."""
    model = create_model("small_cnn", num_classes=2, in_chans=1, width=0.25)
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    per_layer = count_macs(model, (1, 32, 32))
    assert count_macs(model, torch.randn(3, 1, 32, 32)) == per_layer  # one sample of the batch
    assert total_macs(model, (1, 32, 32)) == sum(per_layer.values())
    # closed form for the first conv: 32×32 positions × 8 output channels × 1 × 3 × 3
    assert per_layer["features.0.0.0"] == 32 * 32 * 8 * 9
    model.train()
    count_macs(model, torch.randn(2, 1, 32, 32))
    assert model.training  # modes restored


def test_bench_model_keys_and_numbers(tmp_path) -> None:
    model = create_model("small_cnn", num_classes=2, in_chans=1, width=0.25).train()
    size = (1, 32, 32)
    result = bench_model(model, size, threads=1, rounds=2, per_round=1, warmup=1, onnx_dir=tmp_path)
    assert {"params", "macs", "file_bytes", "file_kind", "onnx_bytes", "onnx_parity", "latency_ms", "input_size",
            "batch", "threads", "method", "versions", "machine", "onnx_path"} <= set(result)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["macs"] == total_macs(model, size)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert result["file_bytes"] == buffer.getbuffer().nbytes
    assert (tmp_path / "model.onnx").stat().st_size == result["onnx_bytes"]
    assert result["onnx_parity"]["max_abs_diff"] < 1e-4
    assert set(result["latency_ms"]) == {"torch", "onnxruntime"}
    assert all(s["median_ms"] > 0 and s["n"] == 2 for s in result["latency_ms"].values())
    assert (result["input_size"], result["batch"], result["threads"]) == ([1, 32, 32], 1, 1)
    assert result["versions"]["torch"] == torch.__version__ and result["versions"]["onnxruntime"] == ort.__version__
    assert result["machine"]["cpu_count"] >= 1
    assert model.training
    assert all(s["q1_ms"] <= s["median_ms"] <= s["q3_ms"] and s["spread_pct"] >= 0
               for s in result["latency_ms"].values())
    table = format_bench(result)
    assert f"{result['params']:,}" in table and "PyTorch eager" in table and "ONNX Runtime" in table
    spread = result["latency_ms"]["onnxruntime"]["spread_pct"]
    assert f"{spread:>6.1f}%" in table.splitlines()[[i for i, line in enumerate(table.splitlines())
                                                      if "ONNX Runtime" in line][-1]]
    assert "interquartile range" in result["method"]


def test_bench_model_temporary_export_is_removed(tmp_path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = bench_model(_net(), INPUT, threads=1, rounds=1, per_round=1, warmup=0)
    assert "onnx_path" not in result and result["onnx_bytes"] > 0
    assert list(tmp_path.iterdir()) == []


def test_bench_file_onnx(tmp_path) -> None:
    model = _net()
    path = export_onnx(model, _batch(1), tmp_path / "m.onnx").path
    result = bench_file(path, threads=1, rounds=2, per_round=1, warmup=0)
    # BatchNorm is folded into the first conv: its weight + a bias, the second conv, the linear layer
    folded = 8 * 3 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 3 + 3
    assert result["params"] == folded and result["macs"] is None
    assert result["input_size"] == list(INPUT)  # read from the graph
    assert result["file_bytes"] == path.stat().st_size
    assert list(result["latency_ms"]) == ["onnxruntime"] and result["latency_ms"]["onnxruntime"]["median_ms"] > 0
    assert "MACs             n/a" in format_bench(result)
    with pytest.raises(TypeError, match="onnx_dir"):
        bench_file(path, onnx_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        bench_file(tmp_path / "missing.onnx")


def test_bench_file_medprune_model_uses_load_model(tmp_path, monkeypatch) -> None:
    model = create_model("small_cnn", num_classes=2, in_chans=1, width=0.25)
    model.default_input_size = (1, 32, 32)
    path = tmp_path / "pruned.pt"
    path.write_bytes(b"x" * 1234)  # only its size is read; load_model is stubbed below
    loaded: list[str] = []

    def load_model(p):
        loaded.append(str(p))
        return model

    monkeypatch.setitem(sys.modules, "medprune.compress.serialize", types.SimpleNamespace(load_model=load_model))
    result = bench_file(path, threads=1, rounds=1, per_round=1, warmup=0)
    assert loaded == [str(path)]
    assert result["file_bytes"] == 1234 and result["file_kind"] == "pruned.pt"
    assert result["input_size"] == [1, 32, 32]
    assert result["params"] == count_params(model) and result["macs"] == total_macs(model, (1, 32, 32))


def test_bench_file_round_trip_with_save_model(tmp_path) -> None:
    from medprune.compress.serialize import save_model

    model = create_model("small_cnn", num_classes=2, in_chans=1, width=0.25)
    path = save_model(model, tmp_path / "model.pt")
    result = bench_file(path, (1, 32, 32), threads=1, rounds=1, per_round=1, warmup=0)
    assert result["params"] == count_params(model) and result["macs"] == total_macs(model, (1, 32, 32))
    assert result["file_bytes"] == path.stat().st_size and result["model_path"] == str(path)
