"""Private statistics machinery behind the criteria in :mod:`medprune.compress.importance`.

Everything here aggregates over an unbounded stream of batches without keeping activations:
per-channel moments and the channel covariance are merged batch by batch with Chan et al.'s
pairwise update (numerically stable, equal to the statistics of the concatenated data), and
histograms use one range per layer, fixed on the first batch. Accumulators live on the CPU in
float64; per-batch reductions run on the activations' device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "ChannelMoments",
    "ChannelCovariance",
    "ChannelHistogram",
    "channels_first",
    "out_channels",
    "weight_rows",
    "entropy",
    "minmax",
    "offdiag_abs_mean",
    "pooled_std",
    "weight_correlation",
    "histogram_rows",
]

_EPS = 1e-12


def _work_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everything else reduces in double precision.
    return torch.float32 if device.type == "mps" else torch.float64


def channels_first(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Reshape a layer's input or output to ``(channels, values)``.

    Convolutions carry channels on dim 1 (``N, C, *spatial``); linear layers on the last dim
    (``N, F`` or ``N, L, F``).
    """
    x = x.detach()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1]).t()
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def out_channels(module: nn.Module) -> int:
    """Number of output channels of a conv, linear, BatchNorm or InstanceNorm layer, read from its weight."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.weight.shape[1] * module.groups if module.transposed else module.weight.shape[0])
    if isinstance(module, nn.Linear):
        return int(module.weight.shape[0])
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return int(module.num_features if module.weight is None else module.weight.shape[0])
    raise TypeError(f"no output channels defined for {type(module).__name__}")


def weight_rows(module: nn.Module, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """The weights of each output filter as a float64 CPU matrix ``(out_channels, fan_in)``.

    ``tensor`` (default: ``module.weight``) is any tensor laid out like the weight, e.g. an
    accumulated ``weight * grad``.
    """
    w = (module.weight if tensor is None else tensor).detach()
    if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
        # (in, out/groups, *k): group g's output channels read group g's input rows.
        g = module.groups
        w = w.reshape(g, w.shape[0] // g, *w.shape[1:]).transpose(1, 2)
        w = w.reshape(g * w.shape[1], -1)
    return w.reshape(w.shape[0], -1).to("cpu", torch.float64)


class ChannelMoments:
    """Per-channel count, mean and sum of squared deviations (M2), merged batch by batch."""

    def __init__(self) -> None:
        self.n: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add a ``(channels, values)`` block."""
        if x.shape[1] == 0:
            return
        xd = x.to(_work_dtype(x.device))
        nb = torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64)
        mb = xd.mean(1)
        m2b = ((xd - mb[:, None]) ** 2).sum(1)
        mb, m2b = mb.to("cpu", torch.float64), m2b.to("cpu", torch.float64)
        if self.n is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.n = n

    @property
    def channels(self) -> int:
        return 0 if self.n is None else int(self.n.numel())

    def std(self) -> torch.Tensor:
        """Population standard deviation per channel."""
        assert self.n is not None and self.m2 is not None
        return (self.m2 / self.n).clamp_min(0.0).sqrt()


def pooled_std(moments: ChannelMoments, groups: int) -> torch.Tensor:
    """Standard deviation of all values of each of ``groups`` contiguous channel blocks."""
    assert moments.n is not None and moments.mean is not None and moments.m2 is not None
    n = moments.n.reshape(groups, -1)
    mean = moments.mean.reshape(groups, -1)
    m2 = moments.m2.reshape(groups, -1)
    total = n.sum(1)
    gmean = (n * mean).sum(1) / total
    gm2 = m2.sum(1) + (n * (mean - gmean[:, None]) ** 2).sum(1)
    return (gm2 / total).clamp_min(0.0).sqrt()


class ChannelCovariance:
    """Channel mean vector and scatter matrix, merged batch by batch (float64, CPU)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add a ``(channels, values)`` block."""
        nb = int(x.shape[1])
        if nb == 0:
            return
        xd = x.to(_work_dtype(x.device))
        mb = xd.mean(1)
        xc = xd - mb[:, None]
        sb = (xc @ xc.t()).to("cpu", torch.float64)
        mb = mb.to("cpu", torch.float64)
        if self.mean is None:
            self.n, self.mean, self.scatter = nb, mb, sb
            return
        n = self.n + nb
        delta = mb - self.mean
        self.scatter = self.scatter + sb + torch.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    @property
    def channels(self) -> int:
        return 0 if self.mean is None else int(self.mean.numel())

    def correlation(self) -> torch.Tensor:
        """Pearson correlation matrix; a constant channel correlates 1 with every channel.

        A channel whose output never changes carries nothing the next layer's bias could not
        carry, so it is treated as fully redundant rather than as "independent".
        """
        assert self.scatter is not None
        return _correlation_from_scatter(self.scatter)


def _correlation_from_scatter(scatter: torch.Tensor) -> torch.Tensor:
    var = scatter.diagonal().clamp_min(0.0)
    scale = var.sqrt()
    dead = scale <= _EPS * max(1.0, float(scale.max()) if scale.numel() else 1.0)
    safe = torch.where(dead, torch.ones_like(scale), scale)
    corr = scatter / torch.outer(safe, safe)
    corr = corr.clamp(-1.0, 1.0)
    corr[dead, :] = 1.0
    corr[:, dead] = 1.0
    return corr


def weight_correlation(rows: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between the weight vectors (rows) of a layer's filters."""
    xc = rows - rows.mean(1, keepdim=True)
    return _correlation_from_scatter(xc @ xc.t())


class ChannelHistogram:
    """Running per-channel histograms over one range shared by all channels of the layer.

    The range is the first batch's ``[min, max]`` over *every* channel, widened by 50 % (25 % on
    each side); later values outside it are counted in the edge bins. This keeps memory at
    ``channels × bins`` however many batches are seen.

    The range is shared, as in the data-free weight histograms (:func:`histogram_rows`), so the
    entropy of a channel depends on how much of the layer's value range it spans: a channel that
    emits a faint copy of another channel's signal lands in fewer bins and has lower entropy. With
    a range per channel the entropy would be blind to amplitude and measure only the shape of the
    distribution — heavy-tailed channels that respond strongly to rare patterns would score lowest.
    """

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.low: torch.Tensor | None = None
        self.width: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add a ``(channels, values)`` block."""
        if x.shape[1] == 0:
            return
        xf = x.float()
        c = xf.shape[0]
        if self.low is None:
            lo, hi = float(xf.min()), float(xf.max())
            span = hi - lo
            pad = 0.25 * span if span > 0 else 0.5 * max(abs(lo), 1e-6)
            self.low = torch.full((c,), lo - pad, dtype=torch.float64)
            self.width = torch.full((c,), span + 2 * pad, dtype=torch.float64)
            self.counts = torch.zeros(c, self.bins, dtype=torch.float64)
        low = self.low.to(xf.device, torch.float32)[:, None]
        width = self.width.to(xf.device, torch.float32)[:, None]
        idx = ((xf - low) / width * self.bins).floor().clamp_(0, self.bins - 1).long()
        idx += torch.arange(c, device=xf.device)[:, None] * self.bins
        counts = torch.bincount(idx.flatten(), minlength=c * self.bins).view(c, self.bins)
        self.counts += counts.to("cpu", torch.float64)

    @property
    def channels(self) -> int:
        return 0 if self.counts is None else int(self.counts.shape[0])


def histogram_rows(rows: torch.Tensor, bins: int) -> torch.Tensor:
    """Histogram of each row over the shared range of all rows: ``(rows, bins)`` counts."""
    lo, hi = float(rows.min()), float(rows.max())
    if hi <= lo:
        counts = torch.zeros(rows.shape[0], bins, dtype=torch.float64)
        counts[:, 0] = rows.shape[1]
        return counts
    idx = ((rows - lo) / (hi - lo) * bins).floor().clamp_(0, bins - 1).long()
    counts = torch.zeros(rows.shape[0], bins, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(rows))
    return counts


def entropy(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of each row of a histogram-count matrix (0·log 0 = 0)."""
    p = counts / counts.sum(1, keepdim=True).clamp_min(_EPS)
    logp = torch.where(p > 0, torch.log2(p.clamp_min(_EPS)), torch.zeros_like(p))
    return -(p * logp).sum(1)


def offdiag_abs_mean(corr: torch.Tensor) -> torch.Tensor:
    """``mean_{j≠i} |corr[i, j]|`` per row; 0 for a single channel."""
    c = corr.shape[0]
    if c < 2:
        return torch.zeros(c, dtype=corr.dtype)
    a = corr.abs()
    return (a.sum(1) - a.diagonal()) / (c - 1)


def minmax(scores: torch.Tensor) -> torch.Tensor:
    """Min-max normalise to [0, 1]; a constant layer maps to all ones (no channel singled out)."""
    lo, hi = scores.min(), scores.max()
    if not math.isfinite(float(hi - lo)) or float(hi - lo) <= _EPS * max(1.0, float(hi.abs())):
        return torch.ones_like(scores)
    return (scores - lo) / (hi - lo)
