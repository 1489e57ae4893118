"""Compression plots: valid PNGs, missing intervals, many layers, errors that name the culprit."""

from __future__ import annotations

import copy
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from medprune.errors import DataError
from medprune.metrics import classification_metrics
from medprune.report import plot_kept_channels, plot_sensitivity_comparison

CLASSES = ["healthy", "sick"]


def _read_png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # something was drawn
    return image


def _open_figures() -> int:
    plt = sys.modules.get("matplotlib.pyplot")
    return len(plt.get_fignums()) if plt is not None else 0


def _metrics(seed: int, signal: float, n_bootstrap: int = 50) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 120)
    logits = rng.normal(size=(120, 2))
    logits[np.arange(120), y] += signal
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pids = [f"p{i // 4}" for i in range(120)]
    return classification_metrics(y, probs, CLASSES, patient_ids=pids, n_bootstrap=n_bootstrap, seed=seed)


def test_kept_channels_png_and_height_grows_with_layers(tmp_path) -> None:
    figures = _open_figures()
    few = {f"features.{i}.conv": (64, 64 - 8 * i) for i in range(5)}
    small = _read_png(plot_kept_channels(few, tmp_path / "few.png", title="Kept channels — synthetic data"))
    many = {f"blocks.{i}.branch3x3dbl_{i % 3}.conv": (32 * (1 + i % 8), 16 * (1 + i % 8)) for i in range(120)}
    large = _read_png(plot_kept_channels(many, tmp_path / "many.png"))
    assert large.shape[0] > 3 * small.shape[0]
    assert _open_figures() == figures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.png", "many.png"]  # no temp files


def test_kept_channels_bad_input_names_layer(tmp_path) -> None:
    with pytest.raises(DataError, match=r"layer 'fc': kept 12 of 10 channels"):
        plot_kept_channels({"conv1": (8, 4), "fc": (10, 12)}, tmp_path / "k.png")
    with pytest.raises(DataError, match=r"layer 'conv1': expected \(original, kept\)"):
        plot_kept_channels({"conv1": 8}, tmp_path / "k.png")
    with pytest.raises(DataError, match="no layers"):
        plot_kept_channels({}, tmp_path / "k.png")
    with pytest.raises(DataError, match="unsupported plot format"):
        plot_kept_channels({"conv1": (8, 4)}, tmp_path / "k.jpg")
    assert list(tmp_path.iterdir()) == []


def test_sensitivity_comparison_with_and_without_ci(tmp_path) -> None:
    base, compressed = _metrics(0, 2.0), _metrics(1, 1.0)
    assert base["ci"]["per_class.sick.sensitivity"] is not None  # the key format the plot reads
    figures = _open_figures()
    with_ci = _read_png(plot_sensitivity_comparison(base, compressed, CLASSES, tmp_path / "ci.png",
                                                    title="Base vs pruned — synthetic data (phantom)"))
    no_ci = [copy.deepcopy(m) for m in (base, compressed)]
    for m in no_ci:
        m["ci"] = {}
    without = _read_png(plot_sensitivity_comparison(*no_ci, CLASSES, tmp_path / "no_ci.png",
                                                     title="Base vs pruned — synthetic data (phantom)"))
    assert with_ci.shape == without.shape and not np.array_equal(with_ci, without)  # error bars drawn
    # n_bootstrap=0 results and a single missing interval work too
    partial = copy.deepcopy(base)
    partial["ci"]["per_class.sick.specificity"] = None
    _read_png(plot_sensitivity_comparison(partial, _metrics(2, 1.0, n_bootstrap=0), CLASSES, tmp_path / "p.png"))
    assert _open_figures() == figures


def test_sensitivity_comparison_undefined_value_and_many_classes(tmp_path) -> None:
    base = _metrics(0, 2.0)
    compressed = copy.deepcopy(base)
    compressed["per_class"]["sick"]["sensitivity"] = None  # undefined: "n/a", no bar
    _read_png(plot_sensitivity_comparison(base, compressed, CLASSES, tmp_path / "na.png",
                                          metrics=("sensitivity", "specificity", "f1")))
    names = [f"class_{i}" for i in range(8)]
    per_class = {c: {"sensitivity": 0.1 * i, "specificity": 0.9} for i, c in enumerate(names)}
    many = {"per_class": per_class, "ci": {f"per_class.{c}.sensitivity": [0.0, 0.8] for c in names}}
    _read_png(plot_sensitivity_comparison(many, many, names, tmp_path / "many.png"))


def test_sensitivity_comparison_missing_class_named(tmp_path) -> None:
    base = _metrics(0, 2.0)
    with pytest.raises(DataError, match=r"base metrics have no per_class entry for class 'plaque' "
                                        r"\(available: healthy, sick\)"):
        plot_sensitivity_comparison(base, base, ["healthy", "plaque"], tmp_path / "x.png")
    with pytest.raises(DataError, match="no classes"):
        plot_sensitivity_comparison(base, base, [], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
