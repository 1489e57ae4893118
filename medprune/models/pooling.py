"""Downsampling poolings by name, and hybrid wavelet pooling.

Every downsampling pool of a registry model (a ``MaxPool2d``/``AvgPool2d`` with stride > 1,
Inception's reduction-block pools included) can be swapped for another registered pooling::

    model = create_model("inception_v3", num_classes=2, in_chans=1, width=0.25)
    replace_pooling(model, "wavelet_hybrid", wavelet="haar", keep="LL", combine="gate")
    list_poolings()                          # ['avg', 'max', 'wavelet_hybrid']

or from a config: ``model: {name: inception_v3, pooling: {kind: wavelet_hybrid, combine: gate}}``.
Global pools (``AdaptiveAvgPool2d``) and stride-1 pools (Inception's ``avg_pool`` branches) are
left alone. The swap is recorded in ``model.medprune_spec["transforms"]`` as ``{"kind": "pooling",
"name": <pooling>, <every option, defaults filled in>}``, so a pooled model saved with
:func:`medprune.save_model` is rebuilt the same way by :func:`medprune.load_model`.

**Hybrid wavelet pooling** (Trevino-Sanchez & Alarcon-Aquino 2022; *confirmed*: an existing max or
average pooling combined with a wavelet transform so downsampling keeps detail). The layer
details below are *our reconstruction* and each is an option:

- The DWT is one level of PyWavelets' filter bank (``pywt.Wavelet(name).dec_lo/dec_hi``) applied
  as a fixed stride-2 depthwise convolution (``F.conv2d`` with a buffer, never trained; Haar's LL
  alone runs as its closed form, 2 × ``avg_pool2d``, which is faster on CPU). Boundary:
  **periodization** — the same coefficients as ``pywt.dwt2(x, wavelet, mode="periodization")``
  (odd sizes are first extended by repeating the last row/column, as PyWavelets does), which gives
  exactly ``ceil(H/2) × ceil(W/2)`` coefficients. Haar needs no boundary at all on even sizes;
  longer filters wrap ``len(filter)/2 - 1`` rows/columns around the border.
- Subbands: ``LL`` (pywt's cA), ``HL`` (cH: high-pass down the rows, low-pass along them), ``LH``
  (cV) and ``HH`` (cD); ``keep`` chooses ``"LL"``, ``"LL+HH"`` or ``"all"``. Orthonormal scaling
  is kept, so Haar's LL is 2 × the 2×2 mean. Summed, Haar's four subbands reduce to 2 × the
  top-left pixel of each 2×2 block (plain subsampling) and LL + HH to the sum of its diagonal: use
  ``combine="concat"`` to keep the subbands apart.
- ``combine``: with P the base pooling and W the sum of the kept subbands, ``sum`` gives P + W,
  ``mean`` (P + W) / 2, ``gate`` σ(g)·P + (1 − σ(g))·W with one learned g per channel (starts at
  g = 0, i.e. as ``mean``), ``concat`` a learned 1×1 convolution of [P, band₁, …] back to the
  input width (initialised to reproduce ``mean``).
- **Size matching**: the output has the size of the base pooling (the pooling it replaces), so
  Inception's 3×3 stride-2 valid pools (⌊(H−3)/2⌋+1, one less than ⌈H/2⌉ on odd and even H) still
  line up with the conv branches of their reduction block. Extra wavelet rows/columns are
  **cropped at the bottom/right**; where the pooling is larger (padding, ``ceil_mode``) the last
  row/column is repeated.

Pruning: the DWT's channels follow its input (one fixed filter shared by all channels), which
Torch-Pruning treats as an element-wise op; the learned gate is a :class:`ChannelGate`, sliced
with its input by a customized pruner (see :mod:`medprune.compress._graph`); the ``concat`` 1×1
convolution is an ordinary ``nn.Conv2d``.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from medprune.errors import CheckpointError, ConfigError
from medprune.registry import Registry, suggest

__all__ = ["POOLINGS", "PoolSite", "HybridWaveletPool2d", "ChannelGate", "dwt2", "wavelet_filters",
           "list_poolings", "replace_pooling", "apply_pooling_spec", "pooling_problem", "downsampling_pools"]

log = logging.getLogger(__name__)

#: Every pooling a downsampling site can be replaced with, by name.
POOLINGS = Registry("pooling")

KEEP: dict[str, tuple[str, ...]] = {"LL": ("LL",), "LL+HH": ("LL", "HH"), "all": ("LL", "HL", "LH", "HH")}
"""Subband selections: ``keep`` value → subbands (``XY``: filter X down the rows, Y along them)."""
BASES = ("max", "avg")
COMBINES = ("sum", "mean", "gate", "concat")

_Pair = tuple[int, int]


def _pair(value: int | tuple[int, ...]) -> _Pair:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[-1]))


# ============================================================================ the transform
def _discrete_wavelets() -> list[str]:
    import pywt

    return pywt.wavelist(kind="discrete")


def wavelet_filters(wavelet: str, bands: tuple[str, ...] = ("LL", "HL", "LH", "HH"),
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(len(bands), 1, L, L)`` correlation taps of the 2-D subbands of PyWavelets' ``wavelet``.

    PyWavelets convolves with ``dec_lo``/``dec_hi``; ``F.conv2d`` correlates, so the taps are the
    reversed filters. Band ``"XY"`` is the outer product of filter X (down the rows, height) and
    filter Y (along the rows, width).
    """
    import pywt

    w = pywt.Wavelet(wavelet)
    taps = {"L": torch.tensor(w.dec_lo[::-1], dtype=torch.float64),
            "H": torch.tensor(w.dec_hi[::-1], dtype=torch.float64)}
    return torch.stack([torch.outer(taps[b[0]], taps[b[1]]) for b in bands]).unsqueeze(1).to(dtype)


def _periodize(x: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    """Extend ``x`` along ``dim`` as PyWavelets' periodization does, plus ``pad`` wrapped samples each side.

    An odd length is first made even by repeating the last sample. Done with one gather of fixed
    indices, so tracing, ONNX export and Torch-Pruning see a plain index op.
    """
    n = int(x.shape[dim])
    even = n + n % 2
    if pad == 0 and even == n:
        return x
    idx = [min((i % even), n - 1) for i in range(-pad, even + pad)]
    return x.index_select(dim, torch.tensor(idx, device=x.device))


def _analysis(x: torch.Tensor, filters: torch.Tensor, size: tuple[int, int] | None = None,
              haar_ll: bool = False) -> list[torch.Tensor]:
    """One stride-2 depthwise correlation of ``x`` per filter of ``filters`` ``(B, 1, L, L)``.

    ``size``: the output rows/columns that will be kept (the top-left ones). A 2-tap filter (Haar)
    reads rows 2k and 2k+1 only, so when those exist the input is cropped instead of extended.
    ``haar_ll``: ``filters`` is Haar's LL (all four taps 1/2), computed by its closed form
    2 × the 2×2 mean — the same numbers, and several times faster on CPU than a depthwise conv.
    """
    pad = filters.shape[-1] // 2 - 1
    if pad == 0 and size is not None and 2 * size[0] <= x.shape[-2] and 2 * size[1] <= x.shape[-1]:
        x = x[..., :2 * size[0], :2 * size[1]]
    x = _periodize(_periodize(x, 2, pad), 3, pad)
    if haar_ll:
        return [2.0 * F.avg_pool2d(x, 2)]
    c, k = int(x.shape[1]), int(filters.shape[-1])  # static ints: ONNX needs a conv kernel of known shape
    filters = filters.to(x.dtype)
    return [F.conv2d(x, filters[i:i + 1].expand(c, 1, k, k), stride=2, groups=c) for i in range(filters.shape[0])]


def dwt2(x: torch.Tensor, wavelet: str = "haar") -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One-level 2-D DWT of ``(N, C, H, W)`` ``x``: ``(cA, (cH, cV, cD))`` as ``pywt.dwt2``.

    Equals ``pywt.dwt2(x, wavelet, mode="periodization")`` on the last two axes; each output is
    ``(N, C, ceil(H/2), ceil(W/2))``.
    """
    ll, hl, lh, hh = _analysis(x, wavelet_filters(wavelet, dtype=x.dtype).to(x.device))
    return ll, (hl, lh, hh)


# ============================================================================ layers
class ChannelGate(nn.Module):
    """``x · sigmoid(weight)`` with one learned logit per channel (``weight``: ``(1, C, 1, 1)``, starts at 0).

    A module of its own so that pruning slices ``weight`` with the channels it multiplies.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = int(num_channels)
        self.weight = nn.Parameter(torch.zeros(1, self.num_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.weight)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"


def _option_problem(option: str, value: Any) -> str | None:
    """Why ``value`` is not valid for hybrid-pooling option ``option``, or ``None``."""
    if option == "wavelet":
        names = _discrete_wavelets()
        if not isinstance(value, str) or value not in names:
            return suggest(str(value), names, "wavelet") + " (PyWavelets' discrete wavelets)"
    elif option == "keep":
        if value not in KEEP:
            return suggest(str(value), list(KEEP), "keep")
    elif option == "base":
        if value is not None and value not in BASES:
            return suggest(str(value), list(BASES), "base pooling") + " (or null: that of the replaced pool)"
    elif option == "combine":
        if value not in COMBINES:
            return suggest(str(value), list(COMBINES), "combine")
    return None


def _base_pool(base: str, kernel_size: _Pair, stride: _Pair, padding: _Pair, ceil_mode: bool,
               count_include_pad: bool = False) -> nn.Module:
    if base == "max":
        return nn.MaxPool2d(kernel_size, stride, padding, ceil_mode=ceil_mode)
    return nn.AvgPool2d(kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


class HybridWaveletPool2d(nn.Module):
    """A max or average pooling combined with a fixed one-level DWT (see the module docstring).

    Args:
        channels: input channels; required for ``combine="gate"`` and ``"concat"`` (learned,
            per channel), optional otherwise.
        wavelet: a PyWavelets discrete wavelet (``"haar"``, ``"db2"``, ``"sym4"``, ...).
        keep: subbands entering the combination: ``"LL"``, ``"LL+HH"`` or ``"all"``.
        base: the pooling combined with the DWT, ``"max"`` or ``"avg"``.
        combine: ``"sum"``, ``"mean"``, ``"gate"`` or ``"concat"``.
        kernel_size, stride, padding, ceil_mode: the base pooling's geometry; the output has its
            size. ``stride`` must be 2 (the DWT halves the size).
        count_include_pad: for ``base="avg"`` with padding.

    Example::

        pool = HybridWaveletPool2d(64, wavelet="db2", keep="all", combine="concat", kernel_size=3, stride=2)
        pool(torch.randn(1, 64, 35, 35)).shape    # (1, 64, 17, 17), as nn.MaxPool2d(3, 2)
    """

    def __init__(self, channels: int | None = None, wavelet: str = "haar", keep: str = "LL", base: str = "max",
                 combine: str = "sum", kernel_size: int | tuple[int, int] = 2,
                 stride: int | tuple[int, int] = 2, padding: int | tuple[int, int] = 0,
                 ceil_mode: bool = False, count_include_pad: bool = False) -> None:
        super().__init__()
        for option, value in (("wavelet", wavelet), ("keep", keep), ("base", base), ("combine", combine)):
            problem = _option_problem(option, value)
            if problem is not None or value is None:
                raise ConfigError(f"HybridWaveletPool2d: {option}: {problem or 'must be max or avg'}")
        stride = _pair(stride)
        if stride != (2, 2):
            raise ConfigError(f"HybridWaveletPool2d: stride must be 2 (the wavelet transform halves the size), "
                              f"got {stride}")
        if combine in ("gate", "concat") and (channels is None or channels < 1):
            raise ConfigError(f"HybridWaveletPool2d: combine={combine!r} learns per-channel weights and needs "
                              f"channels, got {channels}")
        self.wavelet, self.keep, self.base, self.combine = wavelet, keep, base, combine
        self.pool = _base_pool(base, _pair(kernel_size), stride, _pair(padding), bool(ceil_mode), count_include_pad)
        bands = KEEP[keep]
        filters = wavelet_filters(wavelet, bands)
        if combine != "concat":  # the DWT is linear: summing the kept subbands = one summed filter
            filters = filters.sum(0, keepdim=True)
        self.register_buffer("filters", filters)
        self.gate = ChannelGate(channels) if combine == "gate" else None
        self.fuse: nn.Conv2d | None = None
        if combine == "concat" and channels is not None:
            self.fuse = nn.Conv2d(channels * (1 + len(bands)), channels, 1, bias=False)
            with torch.no_grad():  # start as ``mean``: (P + Σ bands) / 2
                self.fuse.weight.zero_()
                eye = 0.5 * torch.eye(channels)
                for i in range(1 + len(bands)):
                    self.fuse.weight[:, i * channels:(i + 1) * channels, 0, 0] = eye

    @property
    def kernel_size(self) -> Any:
        return self.pool.kernel_size

    @property
    def stride(self) -> Any:
        return self.pool.stride

    @property
    def padding(self) -> Any:
        return self.pool.padding

    @property
    def ceil_mode(self) -> bool:
        return bool(self.pool.ceil_mode)

    def extra_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, keep={self.keep!r}, base={self.base!r}, combine={self.combine!r}"

    def wavelet_macs(self, output: torch.Tensor) -> int:
        """Multiply-accumulates of the fixed DWT per image for ``output`` (not counted by conv/linear MAC counts)."""
        return int(output[0].numel() * self.filters.shape[0] * self.filters[0].numel())

    @staticmethod
    def _fit(band: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Crop extra bottom rows / right columns, or repeat the last ones, to ``h × w``."""
        band = band[..., :h, :w]
        dh, dw = h - band.shape[-2], w - band.shape[-1]
        if dh > 0 or dw > 0:
            band = F.pad(band, (0, max(dw, 0), 0, max(dh, 0)), mode="replicate")
        return band

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            # ONNX export traces one spatial size; the sizes read as ints here are constants of that
            # graph by design (only the batch dimension is dynamic), so the tracer's warnings are noise.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                return self._forward(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x)
        h, w = pooled.shape[-2], pooled.shape[-1]
        haar_ll = self.wavelet == "haar" and self.keep == "LL"
        bands = [self._fit(b, h, w) for b in _analysis(x, self.filters, (h, w), haar_ll)]
        if self.fuse is not None:
            return self.fuse(torch.cat([pooled, *bands], 1))
        wave = bands[0]
        if self.gate is not None:
            return wave + self.gate(pooled - wave)
        if self.combine == "mean":
            return 0.5 * (pooled + wave)
        return pooled + wave


# ============================================================================ registry
@dataclass(frozen=True)
class PoolSite:
    """A downsampling pool being replaced: its geometry, kind and input channels (if known)."""

    kernel_size: _Pair
    stride: _Pair
    padding: _Pair
    ceil_mode: bool
    kind: str  # "max" or "avg"
    count_include_pad: bool = True
    channels: int | None = None
    name: str = ""

    @classmethod
    def of(cls, module: nn.Module, name: str = "", channels: int | None = None) -> "PoolSite":
        pool = module.pool if isinstance(module, HybridWaveletPool2d) else module
        kind = "max" if isinstance(pool, nn.MaxPool2d) else "avg"
        stride = pool.stride if pool.stride is not None else pool.kernel_size
        return cls(_pair(pool.kernel_size), _pair(stride), _pair(pool.padding), bool(pool.ceil_mode), kind,
                   bool(getattr(pool, "count_include_pad", True)), channels, name)


def _register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    return POOLINGS.register(name)


@_register("max")
def max_pool(site: PoolSite) -> nn.Module:
    """``nn.MaxPool2d`` with the replaced pool's geometry."""
    return nn.MaxPool2d(site.kernel_size, site.stride, site.padding, ceil_mode=site.ceil_mode)


@_register("avg")
def avg_pool(site: PoolSite) -> nn.Module:
    """``nn.AvgPool2d`` with the replaced pool's geometry (padding excluded from the mean unless the
    replaced pool was an average pool that included it)."""
    include = site.count_include_pad if site.kind == "avg" else False
    return nn.AvgPool2d(site.kernel_size, site.stride, site.padding, ceil_mode=site.ceil_mode,
                        count_include_pad=include)


@_register("wavelet_hybrid")
def wavelet_hybrid(site: PoolSite, wavelet: str = "haar", keep: str = "LL", base: str | None = None,
                   combine: str = "sum") -> nn.Module:
    """:class:`HybridWaveletPool2d` with the replaced pool's geometry; ``base=None`` keeps its kind."""
    if site.stride != (2, 2):
        raise ConfigError(f"pooling 'wavelet_hybrid': layer {site.name!r} has stride {site.stride}; the wavelet "
                          "transform downsamples by 2 only")
    return HybridWaveletPool2d(site.channels, wavelet=wavelet, keep=keep, base=base or site.kind, combine=combine,
                               kernel_size=site.kernel_size, stride=site.stride, padding=site.padding,
                               ceil_mode=site.ceil_mode,
                               count_include_pad=site.count_include_pad if site.kind == "avg" else False)


def list_poolings() -> list[str]:
    """Names of the registered poolings, sorted: ``['avg', 'max', 'wavelet_hybrid']``."""
    return POOLINGS.names()


def _option_names(kind: str) -> list[str]:
    return [p for p in inspect.signature(POOLINGS.get(kind)).parameters if p != "site"]


def pooling_problem(kind: Any, options: dict[str, Any]) -> tuple[str, str] | None:
    """``(key, message)`` of the first problem with a pooling ``kind`` and its ``options``, else ``None``.

    ``key`` is ``"kind"`` or the option's name, for error messages that name the config key.
    """
    if not isinstance(kind, str) or kind not in POOLINGS:
        return "kind", suggest(str(kind), list_poolings(), "pooling")
    accepted = _option_names(kind)
    for option, value in options.items():
        if option not in accepted:
            return option, suggest(str(option), accepted, f"option of pooling {kind!r}") \
                + ("" if accepted else f" (pooling {kind!r} takes no options)")
        problem = _option_problem(option, value)
        if problem is not None:
            return option, problem
    return None


def _resolved(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every default filled in, so a replay does not depend on future defaults."""
    params = inspect.signature(POOLINGS.get(kind)).parameters
    return {name: options.get(name, p.default) for name, p in params.items() if name != "site"}


# ============================================================================ swapping
def _is_downsampling_pool(module: nn.Module) -> bool:
    if isinstance(module, HybridWaveletPool2d):
        return True
    if not isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return False
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    return max(stride) > 1


def downsampling_pools(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every pool :func:`replace_pooling` swaps (stride > 1, not global), in order."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{outer}.") for outer, m in found if isinstance(m, HybridWaveletPool2d)):
            continue  # the base pooling inside a hybrid pool
        if _is_downsampling_pool(module):
            if getattr(module, "return_indices", False):
                log.warning("replace_pooling: leaving %s alone: it returns indices (for unpooling)", name)
                continue
            found.append((name, module))
    return found


def _input_channels(model: nn.Module, pools: list[nn.Module],
                    input_size: tuple[int, ...] | None) -> dict[nn.Module, int]:
    """Input channels of each of ``pools``, from one forward on the meta device (shapes only)."""
    from medprune.models.cost import meta_forward

    size = input_size or getattr(model, "min_input_size", None) or getattr(model, "default_input_size", None)
    if size is None:
        raise ConfigError(f"replace_pooling: cannot tell the input channels of the pools of a "
                          f"{type(model).__name__}; pass input_size=(C, H, W)")
    seen: dict[nn.Module, int] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        seen[module] = int(args[0].shape[1])

    meta_forward(model, tuple(size), [(p, hook) for p in pools])
    return seen


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def replace_pooling(model: nn.Module, kind: str, *, input_size: tuple[int, int, int] | None = None,
                    **options: Any) -> nn.Module:
    """Swap every downsampling pool of ``model`` (in place) for pooling ``kind``; returns ``model``.

    Downsampling pools are ``nn.MaxPool2d``/``nn.AvgPool2d`` with stride > 1 and earlier
    :class:`HybridWaveletPool2d` (so a swap can be undone with ``"max"``); global and stride-1
    pools stay. The replacement has the replaced pool's kernel, stride, padding and ceil mode, so
    every output size is unchanged. ``input_size`` ``(C, H, W)`` is needed only for non-registry
    models with learned per-channel poolings (``combine: gate/concat``); registry models carry
    ``min_input_size``. The number swapped is logged; the swap is recorded in
    ``model.medprune_spec`` for :func:`medprune.save_model`.

    Raises :class:`~medprune.errors.ConfigError` for an unknown kind or option, with suggestions.

    Example::

        replace_pooling(model, "wavelet_hybrid", wavelet="db2", keep="LL+HH", combine="concat")
    """
    problem = pooling_problem(kind, options)
    if problem is not None:
        key, message = problem
        raise ConfigError(f"replace_pooling: {message}" if key == "kind" else f"replace_pooling: {key}: {message}")
    resolved = _resolved(kind, options)
    sites = downsampling_pools(model)
    if not sites:
        log.warning("replace_pooling: %s has no downsampling pooling layers (it downsamples with strided "
                    "convolutions); nothing replaced", type(model).__name__)
        return model
    needs_channels = resolved.get("combine") in ("gate", "concat")
    channels = _input_channels(model, [m for _, m in sites], input_size) if needs_channels else {}
    device, dtype = _device_dtype(model)
    modules = dict(model.named_modules())
    for name, old in sites:
        site = PoolSite.of(old, name, channels.get(old))
        if needs_channels and site.channels is None:
            raise ConfigError(f"replace_pooling: pool {name!r} is not reached by the model's forward, so its "
                              f"input channels are unknown; combine={resolved['combine']!r} needs them")
        new = POOLINGS.create(kind, site, **resolved).to(device=device, dtype=dtype)
        new.train(old.training)
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
    log.info("replace_pooling: replaced %d downsampling pool(s) of %s with %s %s", len(sites),
             type(model).__name__, kind, resolved)
    from medprune.models.structure import record_transform

    record_transform(model, "pooling", {"name": kind, **resolved})
    return model


def apply_pooling_spec(model: nn.Module, options: dict[str, Any], source: str) -> nn.Module:
    """Replay a recorded pooling swap (``{"name": kind, **options}``) on a freshly built model.

    Called by :func:`medprune.models.structure.build_from_spec` when a saved model is rebuilt;
    raises :class:`~medprune.errors.CheckpointError` naming ``source`` for a record it cannot replay.
    """
    opts = dict(options)
    kind = opts.pop("name", None)
    problem = pooling_problem(kind, opts)
    if problem is not None:
        raise CheckpointError(f"{source}: the model record's pooling change {options!r} cannot be replayed: "
                              f"{problem[0]}: {problem[1]} (saved by another medprune version?)")
    try:
        return replace_pooling(model, kind, **opts)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: the model record's pooling change cannot be replayed: {exc}") from None
