"""Evaluation plots: valid image files, no global matplotlib state, clear errors on bad shapes."""

from __future__ import annotations

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest

from medprune.errors import DataError, MedpruneError
from medprune.report import plot_confusion_matrix, plot_roc


def _probs(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def _read_png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def _open_figures() -> int:
    # pyplot is imported only if some other code already did; our plots must never open one
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    return len(plt.get_fignums()) if plt is not None else 0


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_png(tmp_path, normalize: bool) -> None:
    backend = matplotlib.get_backend()
    figures = _open_figures()
    cm = np.array([[50, 3, 0], [7, 20, 1], [0, 0, 0]])  # last class absent: "n/a" row when normalised
    out = plot_confusion_matrix(
        cm,
        ["healthy", "sick", "other"],
        tmp_path / "sub" / "cm.png",
        normalize=normalize,
        title="Confusion matrix — synthetic data (phantom)",
    )
    assert out == tmp_path / "sub" / "cm.png"
    image = _read_png(out)
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas
    assert matplotlib.get_backend() == backend and _open_figures() == figures
    assert not list(out.parent.glob(".*tmp"))


@pytest.mark.parametrize("k", [2, 3])
def test_roc_png(tmp_path, k: int) -> None:
    y, probs = _probs(0, 200, k)
    out = plot_roc(y, probs, ["healthy", "sick", "other"][:k], tmp_path / "roc.png", title="ROC — synthetic data")
    _read_png(out)


def test_roc_with_absent_class_and_other_formats(tmp_path) -> None:
    y, probs = _probs(1, 60, 3)
    y[y == 2] = 0  # class "other" absent: no curve, no crash
    assert plot_roc(y, probs, ["a", "b", "c"], tmp_path / "roc.svg").read_text().lstrip().startswith("<?xml")
    assert plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], tmp_path / "cm.pdf").read_bytes()[:4] == b"%PDF"


def test_confusion_matrix_bad_shapes(tmp_path) -> None:
    expected = r"cm must be a \(3, 3\) matrix for classes \['a', 'b', 'c'\], got shape \(2, 2\)"
    with pytest.raises(DataError, match=expected):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "cm.png")
    with pytest.raises(MedpruneError, match="non-negative"):
        plot_confusion_matrix(-np.eye(2), ["a", "b"], tmp_path / "cm.png")
    with pytest.raises(DataError, match=r"unsupported plot format '\.jpg'"):
        plot_confusion_matrix(np.eye(2), ["a", "b"], tmp_path / "cm.jpg")
    assert not list(tmp_path.iterdir())


def test_roc_bad_shapes(tmp_path) -> None:
    y, probs = _probs(2, 30, 3)
    with pytest.raises(DataError, match=r"probs must have shape \(N, 2\) for classes \['a', 'b'\], got \(30, 3\)"):
        plot_roc(y, probs, ["a", "b"], tmp_path / "roc.png")
    with pytest.raises(DataError, match=r"y_true must hold one label per row of probs \(30\), got shape \(29,\)"):
        plot_roc(y[:-1], probs, ["a", "b", "c"], tmp_path / "roc.png")
    with pytest.raises(DataError, match=r"integer labels in 0\.\.2"):
        plot_roc(y + 1, probs, ["a", "b", "c"], tmp_path / "roc.png")


# ----------------------------------------------------------------------------- comparison plots


def _predictions(seed: int, n: int, classes: list[str], signal: float = 1.0):
    from medprune.metrics import Predictions

    y, probs = _probs(seed, n, len(classes))
    rng = np.random.default_rng(seed + 100)
    logits = np.log(probs) + rng.normal(scale=1.0 / signal, size=probs.shape)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Predictions(np.arange(n), None, np.array([f"p{i // 3}" for i in range(n)]), y.astype(np.int64), p,
                       list(classes))


@pytest.mark.parametrize("classes", [["healthy", "sick"], ["normal", "benign", "malignant"]])
def test_roc_comparison_auc_matches_sklearn(tmp_path, classes: list[str]) -> None:
    from sklearn.metrics import roc_auc_score

    from medprune.report import plot_roc_comparison

    models = {"base": _predictions(0, 150, classes, 2.0), "pruned": _predictions(0, 150, classes, 0.7),
              "pruned · INT8 ONNX": _predictions(0, 150, classes, 0.5)}
    ci = {"base": {classes[-1]: (0.81, 0.93)}}
    plotted = plot_roc_comparison(models, classes, tmp_path / "roc.png", auc_ci=ci)
    _read_png(plotted.path)
    assert len(plotted.panels) == len(classes)
    for panel, cls in zip(plotted.panels, classes):
        assert panel.title.startswith(f"{cls} vs rest")
        assert len(panel.series) == 3  # every model on the same axes
        for label, series in zip(models, panel.series):
            pred = models[label]
            auc = roc_auc_score(pred.y_true == classes.index(cls), pred.probs[:, classes.index(cls)])
            assert plotted.values[f"{label} / {cls}"] == pytest.approx(auc, abs=1e-12)
            expected = f"{label}: AUC {auc:.3f}" + (" [0.810, 0.930]" if (label, cls) == ("base", classes[-1]) else "")
            assert series == expected


def test_roc_comparison_undefined_class_and_bad_class(tmp_path) -> None:
    from medprune.errors import DataError
    from medprune.report import plot_roc_comparison

    pred = _predictions(1, 60, ["a", "b", "c"])
    pred.y_true[pred.y_true == 2] = 0  # "c" absent from the test set: no curve
    plotted = plot_roc_comparison({"base": pred}, ["c"], tmp_path / "roc.png")
    assert plotted.panels[0].series == ("base: AUC undefined (n=0)",) and plotted.values == {}
    with pytest.raises(DataError, match="predictions of 'base' have no class 'x'"):
        plot_roc_comparison({"base": pred}, ["x"], tmp_path / "roc.png")


def test_reliability_ece_matches_the_metric(tmp_path) -> None:
    from medprune.metrics import classification_metrics
    from medprune.report import plot_reliability

    classes = ["healthy", "sick"]
    models = {"base": _predictions(2, 200, classes, 2.0), "pruned": _predictions(3, 200, classes, 0.6)}
    plotted = plot_reliability(models, tmp_path / "rel.png", n_bins=10, ece={"pruned": (0.123, (0.1, 0.2))})
    _read_png(plotted.path)
    base = models["base"]
    expected = classification_metrics(base.y_true, base.probs, classes, n_bootstrap=0, ece_bins=10)["ece"]
    assert plotted.values["base / ece"] == pytest.approx(expected, abs=1e-12)  # same bins as the metric
    assert plotted.values["pruned / ece"] == 0.123
    assert plotted.panels[0].series == (f"base: ECE {expected:.3f}", "pruned: ECE 0.123 [0.100, 0.200]")
    assert [p.title for p in plotted.panels] == ["Reliability (on the diagonal = calibrated; below = over-confident)",
                                                 "Images per confidence bin"]


def _log(path, label: str, val_losses: list[float]):
    import json

    from medprune.report import read_training_log

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": i + 1, "train_loss": 0.8 - 0.03 * i, "val_loss": v, "val_balanced_accuracy": 0.5 + 0.02 * i,
             "val_worst_class_sensitivity": 0.3 + 0.03 * i, "lr": 0.01} for i, v in enumerate(val_losses)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    return read_training_log(path, label)


def test_training_curves_log_scale_series_and_outliers(tmp_path) -> None:
    from medprune.report import loss_outliers, plot_training_curves

    assert loss_outliers([0.7, 97.5, 0.4, 0.3]) == [1]
    assert loss_outliers([0.7, float("nan")]) == [1] and loss_outliers([0.7, None, 9.0]) == []
    logs = [_log(tmp_path / "metrics.jsonl", "base training", [0.7, 97.5, 0.5, 0.45, 0.4, 0.35, 0.3]),
            _log(tmp_path / "compressed/finetune/metrics.jsonl", "compressed/finetune", [0.5, 0.45, 0.4]),
            _log(tmp_path / "quantized/finetune/metrics.jsonl", "quantized/finetune", [0.6, float("inf"), 0.5])]
    plotted = plot_training_curves(logs, tmp_path / "curves.png")
    _read_png(plotted.path)
    loss, metric = plotted.panels
    assert loss.yscale == "log" and metric.yscale == "linear"
    names = [f"{log.label}: {what}" for log in logs for what in ("train loss", "val loss")]
    series = list(loss.series)
    series.remove("loss outlier (> 10× median, or NaN)")  # one legend entry for every marked epoch
    assert series == names
    assert list(metric.series) == [f"{log.label}: {what}" for log in logs
                                   for what in ("val balanced accuracy", "val worst-class sensitivity")]
    assert plotted.values["base training / epochs"] == 7 and plotted.values["base training / val_loss outliers"] == 1
    assert plotted.values["quantized/finetune / val_loss outliers"] == 1
    assert plotted.values["compressed/finetune / val_loss outliers"] == 0


def test_training_log_errors_name_file_and_line(tmp_path) -> None:
    from medprune.errors import DataError
    from medprune.report import plot_training_curves, read_training_log

    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"epoch": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.jsonl: line 2 is not a JSON object"):
        read_training_log(bad, "base")
    bad.write_text('{"epoch": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.jsonl: line 2 is not JSON"):
        read_training_log(bad, "base")
    bad.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no training log has an epoch"):
        plot_training_curves([read_training_log(bad, "base")], tmp_path / "c.png")
