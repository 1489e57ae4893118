"""Settings of the data layer: where samples come from, how they are split and turned into tensors.

``data:`` in an experiment config (:mod:`medprune.config` assembles the sections); every value is
checked at load, errors name the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medprune.errors import MedpruneError
from medprune.schema import FieldError, check, check_options
from medprune.registry import suggest

__all__ = ["DegradationConfig", "PhantomConfig", "SplitConfig", "DataConfig"]


@dataclass
class PhantomConfig:
    """Synthetic (phantom) data generated when no manifest is given — never clinical data.

    ``kind`` names a registered phantom generator (:func:`medprune.data.phantom_kinds`:
    ``thermography``, ``ivoct``); ``patients``, ``size`` and ``seed`` are common to all;
    ``imbalance`` and ``views`` are the thermography phantom's (healthy patients per sick one, images
    per patient), and ``options`` holds any other keyword of the generator (``frames``,
    ``plaque_fraction`` for ``ivoct``), checked against its signature.
    """

    kind: str = "thermography"
    patients: int = 40
    imbalance: float | None = None
    views: int | None = None
    size: tuple[int, int] = (60, 80)
    seed: int = 0
    out: str | None = None  # default: <run dir>/phantom
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from medprune.data.phantoms import PHANTOMS

        if self.kind not in PHANTOMS:
            raise FieldError("kind", suggest(self.kind, PHANTOMS.names(), "phantom"))
        check(self.patients >= 4, "patients", f"must be >= 4, got {self.patients}")
        if self.imbalance is not None:
            check(self.imbalance > 0, "imbalance", f"must be > 0, got {self.imbalance}")
        if self.views is not None:
            check(self.views >= 1, "views", f"must be >= 1, got {self.views}")
        check(min(self.size) >= 16, "size", f"must be at least 16x16, got {list(self.size)}")
        generator = PHANTOMS.get(self.kind)
        given = {k: v for k, v in (("imbalance", self.imbalance), ("views", self.views)) if v is not None}
        check_options(generator, given, "", f"option of the {self.kind} phantom")
        check_options(generator, self.options, "options", f"option of the {self.kind} phantom")

    def generator_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the phantom generator (besides the output folder)."""
        given = {k: v for k, v in (("imbalance", self.imbalance), ("views", self.views)) if v is not None}
        return {"patients": self.patients, "size": tuple(self.size), "seed": self.seed, **given, **self.options}


@dataclass
class SplitConfig:
    """Patient-level split fractions; a manifest's own ``split`` column takes precedence."""

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            check(0.0 <= value < 1.0, key, f"must be in [0, 1), got {value}")
        total = self.val_fraction + self.test_fraction
        check(total < 1.0, "test_fraction", f"val_fraction + test_fraction must be < 1, got {total:g}")


@dataclass
class DegradationConfig:
    """Seeded JPEG / noise / blur degradations whose level travels with the sample (``data.degradation``).

    ``kinds`` names registered degradations (:data:`medprune.data.degrade.DEGRADATIONS`: ``jpeg``,
    ``noise``, ``blur``); each training image gets one kind, chosen uniformly, at a level drawn
    uniformly from ``ranges[kind]`` (native units: JPEG quality 1-100, noise σ in grey levels
    0-255, blur σ in pixels; missing kinds take the kind's default range), or stays clean with
    probability ``p_clean``. ``grid[kind]`` lists the evaluation levels (default: the kind's
    grid). ``train: false`` trains on clean images (the clean-trained baseline); ``eval`` degrades
    validation and test with one draw per item, the same every epoch. ``baselines`` lists the
    models compared (``clean``, ``degraded``). See :mod:`medprune.data.degrade`.
    """

    kinds: list[str] = field(default_factory=lambda: ["jpeg"])
    ranges: dict[str, list[float]] = field(default_factory=dict)
    grid: dict[str, list[float]] = field(default_factory=dict)
    p_clean: float = 0.0
    train: bool = True
    eval: bool = True
    seed: int = 0
    baselines: list[str] = field(default_factory=lambda: ["clean", "degraded"])

    def __post_init__(self) -> None:
        from medprune.data.degrade import DEGRADATIONS, degradation

        check(len(self.kinds) >= 1, "kinds", "needs at least one degradation kind, e.g. [jpeg]")
        for i, kind in enumerate(self.kinds):
            if kind not in DEGRADATIONS:
                raise FieldError(f"kinds[{i}]", suggest(kind, DEGRADATIONS.names(), "degradation"))
        dupes = sorted({k for k in self.kinds if self.kinds.count(k) > 1})
        check(not dupes, "kinds", f"duplicate kinds {dupes}")
        for name, table in (("ranges", self.ranges), ("grid", self.grid)):
            for kind, values in table.items():
                key = f"{name}.{kind}"
                if kind not in self.kinds:
                    raise FieldError(key, f"{kind!r} is not one of kinds ({', '.join(self.kinds)}); add it to "
                                          "kinds or remove this entry")
                spec = degradation(kind)
                lo, hi = spec.domain
                if name == "ranges":
                    check(len(values) == 2 and values[0] <= values[1], key,
                          f"must be [low, high] with low <= high, got {values}")
                else:
                    check(len(values) >= 1, key, "needs at least one level")
                bad = [v for v in values if not lo <= v <= hi]
                check(not bad, key, f"{', '.join(f'{v:g}' for v in bad)} outside [{lo:g}, {hi:g}], the valid "
                                    f"range of {spec.unit}")
        check(0.0 <= self.p_clean <= 1.0, "p_clean", f"must be in [0, 1], got {self.p_clean}")
        for i, name in enumerate(self.baselines):
            if name not in ("clean", "degraded"):
                raise FieldError(f"baselines[{i}]", suggest(name, ["clean", "degraded"], "baseline"))
        dupes = sorted({b for b in self.baselines if self.baselines.count(b) > 1})
        check(not dupes, "baselines", f"duplicate baselines {dupes}")

    @property
    def q_dim(self) -> int:
        """The length of the q vector: one slot per kind, in ``kinds`` order."""
        return len(self.kinds)

    def range_of(self, kind: str) -> tuple[float, float]:
        """The training range of ``kind`` in native units."""
        from medprune.data.degrade import degradation

        lo, hi = self.ranges.get(kind) or degradation(kind).default_range
        return float(lo), float(hi)

    def grid_of(self, kind: str) -> list[float]:
        """The evaluation levels of ``kind`` in native units."""
        from medprune.data.degrade import degradation

        return [float(v) for v in self.grid.get(kind) or degradation(kind).default_grid]


@dataclass
class DataConfig:
    """Where the images come from and how they are turned into tensors.

    Segmentation adds ``mask_values`` (which raw mask values make each of ``classes``, e.g.
    ``{background: 0, tissue: 1, plaque: 2}``; default: class i is value i) and ``label_classes``
    (the frame-level labels of the manifest's ``label`` column, e.g. ``[normal, plaque]``, which
    sampling and pruning calibration balance over). Detection adds ``boxes``: the boxes file
    (:func:`medprune.data.polar.write_boxes`; default ``boxes.json`` beside the manifest).
    ``stage1`` names a segmentation experiment config (relative to this config's folder) whose
    final model and calibrated background threshold clean the frames this run trains on: its data
    and patient split become this run's, its frames with the background removed
    (:mod:`medprune.workflows.two_stage`; the IVOCT two-stage detector). ``degradation`` adds seeded
    JPEG / noise / blur degradations that record their level (:class:`DegradationConfig`).
    """

    manifest: str | None = None
    phantom: PhantomConfig | None = None
    classes: list[str] = field(default_factory=lambda: ["healthy", "sick"])
    image_size: int | tuple[int, int] = (299, 299)
    channels: Literal["gray", "color"] = "color"
    colormap: str = "inferno"
    temperature_window: tuple[float, float] = (24.0, 38.0)
    dicom_window: tuple[float, float] | None = None
    dicom_frame: int | None = None
    mean: float = 0.5
    std: float = 0.25
    augmentation: list[dict[str, Any]] = field(default_factory=list)
    on_bad_sample: Literal["error", "skip"] = "error"
    split: SplitConfig = field(default_factory=SplitConfig)
    mask_values: dict[str, Any] | None = None
    label_classes: list[str] | None = None
    boxes: str | None = None
    stage1: str | None = None
    degradation: DegradationConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        check(min(self.image_size) >= 8, "image_size", f"must be >= 8 pixels, got {list(self.image_size)}")
        check(self.manifest is not None or self.phantom is not None or self.stage1 is not None, "manifest",
              "is required (or set data.phantom to train on synthetic phantom data)")
        if self.stage1 is not None:
            check(self.manifest is None and self.phantom is None, "stage1",
                  "takes its data from the stage-1 experiment; remove data.manifest and data.phantom")
        check(len(self.classes) >= 2, "classes", f"needs at least 2 classes, got {self.classes}")
        dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
        check(not dupes, "classes", f"duplicate class names {dupes}")
        lo, hi = self.temperature_window
        check(lo < hi, "temperature_window", f"low must be < high, got [{lo}, {hi}]")
        if self.dicom_window is not None:
            check(self.dicom_window[0] < self.dicom_window[1], "dicom_window", "low must be < high")
        if self.dicom_frame is not None:
            check(self.dicom_frame >= 0, "dicom_frame", f"must be >= 0, got {self.dicom_frame}")
        check(self.std > 0, "std", f"must be > 0, got {self.std}")
        import matplotlib

        if self.colormap not in matplotlib.colormaps:
            raise FieldError("colormap", suggest(self.colormap, list(matplotlib.colormaps), "colormap"))
        from medprune.data.augment import validate_augmentation

        try:
            validate_augmentation(self.augmentation)
        except MedpruneError as exc:
            raise FieldError("augmentation", str(exc)) from None
