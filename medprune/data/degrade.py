"""Seeded image degradations (JPEG, noise, blur) that record the level they applied.

Point-of-care images are JPEG-compressed, noisy or blurred. For degradation-aware classification
(Endo, Tanaka & Okutomi 2020) each training image gets a random degradation whose level travels
with the sample as a normalised severity ``q`` in [0, 1], and the model is evaluated on a grid of
fixed levels. The transforms are albumentations' own (``ImageCompression``, ``GaussNoise``,
``GaussianBlur``), configured so that each applies exactly one value.

A degradation kind is a small registered class (:data:`DEGRADATIONS`): its native ``unit``, its
default training range and evaluation grid, the map to and from ``q``, and the albumentations
transform of one value:

========  =======================  ===========  =========================  ===============
kind      native unit              range        grid                       q
========  =======================  ===========  =========================  ===============
``jpeg``  JPEG quality Q, 1..100   [10, 100]    90, 70, 50, 30, 10         (100 − Q) / 100
``noise`` σ in 8-bit grey levels   [0, 50]      5, 15, 25, 35, 50          σ / 50, clipped
``blur``  σ in pixels              [0, 3]       0.5, 1, 1.5, 2, 3          σ / 3, clipped
========  =======================  ===========  =========================  ===============

:class:`Degrader` separates drawing a level from applying it (MONAI's ``randomize``/``apply``):
:meth:`Degrader.randomize` draws a :class:`DegradationDraw` (kind, value, q vector and the seed of
the noise pattern), :meth:`Degrader.apply` applies it deterministically. Datasets draw per item
with :meth:`Degrader.draw_for` ``(seed, epoch, index)``, so an item's degradation does not depend
on the DataLoader worker that loads it.

**The q convention.** A classification dataset with ``data.degradation`` carries q as D constant
planes appended to the image tensor (:func:`pack_q`; D = number of configured kinds, one slot per
kind in config order, the drawn kind's slot holds its q, the others 0; all zeros for a clean
image; the planes are not normalised by ``data.mean``/``data.std``). So every stage that moves a
batch (trainer, DDP, pruning calibration, quantisation, bench) carries q without knowing about
it; the degradation-aware model (``medprune.models.degradation``) splits them off
(:func:`unpack_q`).

**Active and inactive.** A degradation run builds a :class:`Degrader` for every split
(:func:`build_degrader`), even for a split that stays clean (``train: false`` for the
clean-trained baseline, ``eval: false``): an inactive degrader draws clean images with q = 0,
so the model's input still has C + D channels.

Example::

    cfg = DegradationConfig(kinds=["jpeg", "noise"])
    train = build_degrader(cfg, train=True)        # a fresh draw per (seed, epoch, index)
    draw = train.draw_for(0, 3, 17)                # e.g. kind='noise', value=21.3, q=[0, 0.426]
    degraded = train.apply(image, draw)            # image: (H, W, C) float32 in [0, 1]
    x = pack_q(tensor, draw.q)                     # (C + 2, H, W)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medprune.data.augment import albumentations
from medprune.errors import ConfigError
from medprune.registry import Registry, suggest

if TYPE_CHECKING:
    from medprune.data.settings import DegradationConfig

__all__ = [
    "DEGRADATIONS",
    "Degradation",
    "DegradationDraw",
    "Degrader",
    "build_degrader",
    "degradation",
    "pack_q",
    "unpack_q",
]

#: Degradation kinds by name: ``jpeg``, ``noise``, ``blur``.
DEGRADATIONS = Registry("degradation")

# Mixed into the per-item SeedSequence so that a degradation draw is independent of the
# augmentation draw of the same (seed, epoch, index) (medprune.data.dataset.augmentation_seed).
_SALT = 0x64656772  # "degr"


class Degradation:
    """One degradation kind: native unit, default range and grid, ``q`` map, albumentations transform.

    Subclasses set the class attributes and :meth:`to_q`, :meth:`from_q`, :meth:`_transform`;
    ``domain`` is the interval of valid native values (config ranges and grids are checked against it).
    """

    name: str = ""
    unit: str = ""
    default_range: tuple[float, float] = (0.0, 0.0)
    default_grid: tuple[float, ...] = ()
    domain: tuple[float, float] = (0.0, math.inf)
    #: The native value of severity 1: by default q = value / full_scale, clipped to [0, 1].
    full_scale: float = 1.0

    def to_q(self, value: float) -> float:
        """The normalised severity in [0, 1] of native ``value``."""
        return float(np.clip(value / self.full_scale, 0.0, 1.0))

    def from_q(self, q: float) -> float:
        """The native value of severity ``q`` (inverse of :meth:`to_q` on [0, 1])."""
        return float(self.full_scale * np.clip(q, 0.0, 1.0))

    def sample(self, rng: np.random.Generator, low: float, high: float) -> float:
        """A value drawn uniformly from ``[low, high]``, as the transform will apply it."""
        return float(rng.uniform(low, high))

    def transform(self, value: float) -> Any:
        """An albumentations transform with ``p=1`` that applies exactly ``value``."""
        lo, hi = self.domain
        if not lo <= value <= hi:
            raise ConfigError(f"degradation {self.name}: {value:g} is outside [{lo:g}, {hi:g}], the valid range of "
                              f"{self.unit}")
        return self._transform(float(value))

    def _transform(self, value: float) -> Any:
        raise NotImplementedError


@DEGRADATIONS.register
class Jpeg(Degradation):
    """JPEG compression at quality Q (albumentations ``ImageCompression``); q = (100 − Q) / 100."""

    name = "jpeg"
    unit = "JPEG quality Q"
    default_range = (10.0, 100.0)
    default_grid = (90.0, 70.0, 50.0, 30.0, 10.0)
    domain = (1.0, 100.0)

    def to_q(self, value: float) -> float:
        return float(np.clip((100.0 - value) / 100.0, 0.0, 1.0))

    def from_q(self, q: float) -> float:
        return float(np.clip(round(100.0 - 100.0 * q), 1.0, 100.0))

    def sample(self, rng: np.random.Generator, low: float, high: float) -> float:
        # JPEG quality is an integer: draw one of the integers in the range, each equally likely.
        return float(rng.integers(math.ceil(low), math.floor(high) + 1))

    def _transform(self, value: float) -> Any:
        quality = int(round(value))
        return albumentations().ImageCompression(compression_type="jpeg", quality_range=(quality, quality), p=1.0)


@DEGRADATIONS.register
class Noise(Degradation):
    """Additive Gaussian noise of σ grey levels out of 255 (albumentations ``GaussNoise``, per channel);
    q = σ / 50, clipped to 1. The result is clipped to [0, 1]."""

    name = "noise"
    unit = "noise σ in 8-bit grey levels"
    default_range = (0.0, 50.0)
    default_grid = (5.0, 15.0, 25.0, 35.0, 50.0)
    domain = (0.0, 255.0)

    full_scale = 50.0

    def _transform(self, value: float) -> Any:
        A = albumentations()
        if value == 0.0:
            return A.NoOp(p=1.0)
        # std_range is a fraction of the image's maximum value (1.0 for our float images).
        std = value / 255.0
        return A.GaussNoise(std_range=(std, std), mean_range=(0.0, 0.0), per_channel=True, p=1.0)


@DEGRADATIONS.register
class Blur(Degradation):
    """Gaussian blur of σ pixels (albumentations ``GaussianBlur``, kernel size derived from σ as
    ``int(3.5 σ) * 2 + 1``); q = σ / 3, clipped to 1. σ = 0 is the identity."""

    name = "blur"
    unit = "blur σ in pixels"
    default_range = (0.0, 3.0)
    default_grid = (0.5, 1.0, 1.5, 2.0, 3.0)
    domain = (0.0, math.inf)

    full_scale = 3.0

    def _transform(self, value: float) -> Any:
        A = albumentations()
        if value == 0.0:  # albumentations' kernel divides by sigma
            return A.NoOp(p=1.0)
        return A.GaussianBlur(blur_limit=0, sigma_limit=(value, value), p=1.0)


def degradation(name: str) -> Degradation:
    """The registered degradation kind ``name`` (unknown names suggest close ones)."""
    return DEGRADATIONS.create(name)


@dataclass(frozen=True, eq=False)
class DegradationDraw:
    """One item's degradation: ``kind`` and native ``value`` (both ``None`` for a clean image),
    ``q`` (float32, one slot per configured kind; the drawn kind's slot holds its severity, the
    others 0) and ``seed``, the seed of the transform's own randomness (the noise pattern)."""

    kind: str | None
    value: float | None
    q: np.ndarray
    seed: int = 0

    @property
    def clean(self) -> bool:
        return self.kind is None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "q": [float(v) for v in self.q], "seed": self.seed}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DegradationDraw):
            return NotImplemented
        return (self.kind, self.value, self.seed) == (other.kind, other.value, other.seed) and np.array_equal(
            self.q, other.q)

    __hash__ = None  # type: ignore[assignment]


class Degrader:
    """Draws and applies one degradation per item, from a :class:`~medprune.data.settings.DegradationConfig`.

    Args:
        config: the kinds, their training ranges, ``p_clean`` and the seed of the draws.
        train: a training split draws afresh per ``(seed, epoch, index)``; an evaluation split
            draws per ``(seed, 0, index)``, the same level every epoch (see :meth:`draw_for_epoch`).
        active: ``False`` draws clean images only (q = 0): a split of a degradation run that is
            not degraded still carries q.

    :meth:`fixed` gives the degrader of one evaluation-grid level.
    """

    def __init__(self, config: DegradationConfig, *, train: bool, active: bool = True,
                 level: tuple[str | None, float | None] | None = None) -> None:
        self.config = config
        self.kinds = list(config.kinds)
        self.q_dim = len(self.kinds)
        self.train = bool(train)
        self.active = bool(active)
        self.seed = int(config.seed)
        self._kinds = [degradation(k) for k in self.kinds]
        self._ranges = [config.range_of(k) for k in self.kinds]
        self.level = level
        if level is not None and level[0] is not None:
            kind, value = level
            if kind not in self.kinds:
                raise ConfigError(suggest(str(kind), self.kinds, "degradation kind of this run"))
            lo, hi = degradation(kind).domain
            if value is None or not lo <= value <= hi:
                raise ConfigError(f"degradation {kind}: level {value!r} is outside [{lo:g}, {hi:g}]")

    def __repr__(self) -> str:
        level = f", level={self.level}" if self.level is not None else ""
        return f"Degrader(kinds={self.kinds}, train={self.train}, active={self.active}{level})"

    def fixed(self, kind: str | None, value: float | None = None) -> Degrader:
        """A degrader that always applies exactly ``value`` of ``kind`` (``kind=None``: always clean),
        with the same kinds (so the same q slots) as this one."""
        return Degrader(self.config, train=self.train, active=True, level=(kind, value))

    def q_of(self, kind: str | None, value: float | None) -> np.ndarray:
        """The q vector of ``value`` of ``kind`` (zeros for ``None``)."""
        q = np.zeros(self.q_dim, dtype=np.float32)
        if kind is not None:
            slot = self.kinds.index(kind)
            q[slot] = self._kinds[slot].to_q(float(value))  # type: ignore[arg-type]
        return q

    def randomize(self, rng: np.random.Generator) -> DegradationDraw:
        """Draw one item's degradation: clean with probability ``p_clean``, else a kind chosen
        uniformly among ``kinds`` and a value uniformly in its range (a fixed degrader draws its level)."""
        # Every draw consumes the same random numbers, so the seed of the pattern does not depend on the branch.
        u_clean = rng.random()
        slot = int(rng.integers(self.q_dim))
        u_value = np.random.default_rng(rng.integers(2**32))
        seed = int(rng.integers(2**32))
        if self.level is not None:
            kind, value = self.level
            if kind is None:
                return self._clean(seed)
            return DegradationDraw(kind, float(value), self.q_of(kind, value), seed)  # type: ignore[arg-type]
        if not self.active or u_clean < self.config.p_clean:
            return self._clean(seed)
        low, high = self._ranges[slot]
        value = self._kinds[slot].sample(u_value, low, high)
        return DegradationDraw(self.kinds[slot], value, self.q_of(self.kinds[slot], value), seed)

    def _clean(self, seed: int) -> DegradationDraw:
        return DegradationDraw(None, None, np.zeros(self.q_dim, dtype=np.float32), seed)

    def draw_for(self, seed: int, epoch: int, index: int) -> DegradationDraw:
        """The draw of item ``index`` at ``epoch``, a function of the three integers only."""
        entropy = [int(seed), int(epoch), int(index), _SALT]
        return self.randomize(np.random.default_rng(np.random.SeedSequence(entropy)))

    def draw_for_epoch(self, epoch: int, index: int) -> DegradationDraw:
        """Item ``index``'s draw under this degrader's seed: at ``epoch`` for a training split, at
        epoch 0 (fixed across epochs) for an evaluation split."""
        return self.draw_for(self.seed, epoch if self.train else 0, index)

    def apply(self, image: np.ndarray, draw: DegradationDraw, seed: int | None = None) -> np.ndarray:
        """``image`` ((H, W, C) float32 in [0, 1]) degraded as ``draw`` says, with the transform's
        randomness seeded by ``seed`` (default ``draw.seed``); the same seed gives the same pixels."""
        if draw.kind is None:
            return image
        transform = degradation(draw.kind).transform(float(draw.value))  # type: ignore[arg-type]
        transform.set_random_seed(int(draw.seed if seed is None else seed) % 2**32)
        out = np.asarray(transform(image=image)["image"], dtype=np.float32)
        if out.ndim == 2:
            out = out[:, :, None]
        if out.shape != image.shape:  # pragma: no cover - the three kinds keep the shape
            raise ConfigError(f"degradation {draw.kind}: changed the image from {image.shape} to {out.shape}")
        return out


def build_degrader(config: DegradationConfig | None, *, train: bool) -> Degrader | None:
    """The degrader of one split: ``None`` without ``data.degradation``; otherwise a degrader that is
    active on a training split if ``config.train`` and on an evaluation split if ``config.eval``
    (an inactive one still gives q = 0, so the input keeps its C + D channels)."""
    if config is None:
        return None
    return Degrader(config, train=train, active=config.train if train else config.eval)


def pack_q(image: torch.Tensor, q: np.ndarray | torch.Tensor | Sequence[float]) -> torch.Tensor:
    """``image`` (C, H, W) with D constant planes holding ``q`` (D,) appended → (C + D, H, W).

    The planes are not normalised: plane ``c + d`` is ``q[d]`` everywhere.
    """
    qt = torch.as_tensor(np.asarray(q, dtype=np.float32), dtype=image.dtype, device=image.device).reshape(-1)
    planes = qt[:, None, None].expand(qt.numel(), *image.shape[1:])
    return torch.cat([image, planes], dim=0)


def unpack_q(x: torch.Tensor, q_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a batch (N, C + D, H, W) packed by :func:`pack_q` into image (N, C, H, W) and q (N, D),
    q read from pixel [0, 0] of its planes."""
    if not 0 <= q_dim < x.shape[1]:
        raise ValueError(f"q_dim {q_dim} must be in [0, {x.shape[1]}) for an input of {x.shape[1]} channels")
    channels = x.shape[1] - q_dim
    return x[:, :channels], x[:, channels:, 0, 0]
