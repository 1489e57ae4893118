"""Two stages as one model: segment, remove the background, detect (Li et al.'s IVOCT detector).

:class:`TwoStageDetector` chains a segmentation model (stage 1) and a detector trained on its
output (stage 2) exactly as the two-stage run prepared the detector's training frames
(:mod:`medprune.workflows.two_stage`):

1. the frame, normalised with stage 1's ``mean``/``std``, goes through the segmenter;
2. a pixel is kept where its foreground probability ``1 − P(background)`` reaches the calibrated
   ``threshold``; the others become 0 — on the frame's own [0, 1] grey levels, rounded to the
   8-bit levels of the PNG frames the detector trained on;
3. the cleaned frame, normalised with stage 2's ``mean``/``std``, goes through the detector, whose
   eval output is the padded ``(N, K, 6)`` detection tensor.

Both stages are whatever models the runs produced (pruned or not); the module only composes them,
so ``medprune predict`` and the ONNX export see one network with one input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["TwoStageDetector"]


def _per_channel(value: float | Sequence[float], channels: int) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.repeat(channels)
    return t.view(1, channels, 1, 1)


class TwoStageDetector(nn.Module):
    """``segmenter`` → background removal at ``threshold`` → ``detector``; see the module docstring.

    ``mean1``/``std1`` and ``mean2``/``std2`` are the stages' ``data.mean``/``data.std`` (the input
    is normalised with stage 1's); ``channels`` the number of input channels (grey: 1).
    """

    #: One frame per ONNX run, as the detector inside (:attr:`PlaqueDetector.export_batch`).
    export_batch = 1
    data_dependent_shapes = True

    def __init__(self, segmenter: nn.Module, detector: nn.Module, threshold: float, *, channels: int,
                 mean1: float | Sequence[float], std1: float | Sequence[float], mean2: float | Sequence[float],
                 std2: float | Sequence[float]) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.detector = detector
        self.threshold = float(threshold)
        self.register_buffer("mean1", _per_channel(mean1, channels))
        self.register_buffer("std1", _per_channel(std1, channels))
        self.register_buffer("mean2", _per_channel(mean2, channels))
        self.register_buffer("std2", _per_channel(std2, channels))

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        """The frame ``x`` (stage-1 normalised) with its background removed, in [0, 1] grey levels."""
        logits = self.segmenter(x)
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        foreground = 1.0 - torch.softmax(logits.float(), dim=1)[:, :1]
        keep = (foreground >= self.threshold).to(x.dtype)
        grey = (x * self.std1 + self.mean1).clamp(0.0, 1.0) * keep
        return torch.round(grey * 255.0) / 255.0  # the 8-bit levels of the frames stage 2 trained on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector((self.clean(x) - self.mean2) / self.std2)
