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
