"""Detectors at their real size: shape-only views mistaken for flattens, and tracing memory (_graph gaps 5, 6).

Torch-Pruning 1.6.1 maps the squeeze PyTorch inserts when one RoI lands on a pyramid level as a second
flatten in front of the box head's real one, so indices were expanded 49× twice and grouping a stock
Faster R-CNN ran out of memory; its trace also kept every activation of an 800 px training forward.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torchvision.ops import MultiScaleRoIAlign

from medprune.compress import prune_channels
from medprune.compress._graph import build_graph, drop_nested_flattens, structure_only

WIDTH, POOL = 8, 7  # pyramid channels; RoIAlign output side (POOL² = 49 fc inputs per channel, as in fc6)


class _TwoLevelBoxHead(nn.Module):
    """Faster R-CNN's box path in miniature: two pyramid levels → ``MultiScaleRoIAlign`` → flatten → fc.

    A 1×1 head shared by both levels (as the RPN head is) couples them into one group, so the
    pooler's chain of ``index_put`` nodes is reached along several paths. On a 128 px image the
    full-image box is the only RoI of level 1 (√area ≥ 112), which makes PyTorch insert the
    ``(1, C, 7, 7) → (C, 7, 7)`` view that Torch-Pruning took for a flatten; the other boxes go to level 0.
    """

    boxes = torch.tensor([[0.0, 0.0, 128.0, 128.0], [8.0, 8.0, 40.0, 40.0], [60.0, 30.0, 100.0, 90.0]])

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, WIDTH, 3, stride=4, padding=1)  # 1/4 of the image
        self.level0 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        self.down = nn.Conv2d(WIDTH, WIDTH, 3, stride=2, padding=1)  # 1/8
        self.level1 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        self.shared = nn.Conv2d(WIDTH, 2, 1)
        self.pool = MultiScaleRoIAlign(["0", "1"], output_size=POOL, sampling_ratio=2)
        self.fc = nn.Linear(WIDTH * POOL * POOL, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.relu(self.stem(x))
        f0, f1 = self.level0(s), self.level1(self.down(s))
        pooled = self.pool({"0": f0, "1": f1}, [self.boxes], [tuple(x.shape[-2:])])
        objectness = self.shared(f0).mean((2, 3)) + self.shared(f1).mean((2, 3))
        return self.fc(pooled.flatten(1)), objectness


def _tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return _TwoLevelBoxHead().eval(), torch.rand(1, 3, 128, 128)


def _forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return model(x)


def _flattens(graph: tp.DependencyGraph) -> list:
    """Reshape nodes whose input edges Torch-Pruning maps as a flatten (read independently of medprune)."""
    flatten = tp.dependency.index_mapping._FlattenIndexMapping
    return [n for n in graph.module2node.values() if n.type == tp.ops.OPTYPE.RESHAPE
            and any(isinstance(d.index_mapping[0], flatten) for i in n.inputs for d in i.dependencies if d.target is n)]


def _one_flatten_graph(model: nn.Module, x: torch.Tensor) -> tp.DependencyGraph:
    """medprune's graph, checked to hold only the real flatten before anything walks it: with a second
    one a regression would not fail, it would grow index lists until memory runs out (about a minute)."""
    graph = build_graph(model, x, _forward)
    flattens = _flattens(graph)
    assert [n.outputs[0].module for n in flattens] == [model.fc], flattens
    return graph


def test_plain_torch_pruning_maps_the_single_roi_view_as_a_second_flatten():
    """The gap itself: Torch-Pruning maps two flattens on the path to fc; the one unmapped is the view of the
    lone level-1 RoI — input ``(1, C, 7, 7)``, no channels merged at all — and the real flatten stays."""
    model, x = _tiny()
    with torch.enable_grad():
        plain = tp.DependencyGraph().build_dependency(model, example_inputs=x, forward_fn=_forward)
    assert len(_flattens(plain)) == 2
    nested = drop_nested_flattens(plain)
    assert [tuple(n.grad_fn._saved_self_sym_sizes) for n in nested] == [(1, WIDTH, POOL, POOL)]
    assert [n.outputs[0].module for n in _flattens(plain)] == [model.fc]
    assert drop_nested_flattens(plain) == []  # idempotent: nothing left to unmap


def test_pyramid_group_maps_each_channel_to_its_49_fc_columns_once():
    """Every index of the level group stays inside its layer, and fc gets exactly 49 columns per channel."""
    model, x = _tiny()
    graph = _one_flatten_graph(model, x)
    group = graph.get_pruning_group(model.level0, tp.prune_conv_out_channels, [1, 4])
    idxs = {(dep.target.module, graph.is_in_channel_pruning_fn(dep.handler)): sorted(i) for dep, i in group}
    assert idxs[(model.fc, True)] == sorted(c * 49 + k for c in (1, 4) for k in range(49))
    assert idxs[(model.level1, False)] == idxs[(model.shared, True)] == [1, 4]
    assert max(len(i) for _, i in group) == 2 * 49  # was 2 → 98 → 4802 → … through the other level
    for (module, is_in), i in idxs.items():
        width = graph.get_in_channels(module) if is_in else graph.get_out_channels(module)
        assert width is None or max(i) < width, (module, width, max(i))


def test_pruning_the_pyramid_slices_fc_in_blocks_of_49_and_keeps_outputs():
    """Channels that are zero in both levels carry nothing: removing them (and their 49 fc columns each)
    leaves both outputs unchanged."""
    model, x = _tiny()
    _one_flatten_graph(model, x)  # prune_channels builds the same graph
    dead = [1, 4, 6]
    with torch.no_grad():
        for conv in (model.level0, model.level1):
            conv.weight[dead] = 0.0
            conv.bias[dead] = 0.0
        before = model(x)
    prune_channels(model, x, {"level0": dead}, forward_fn=_forward)
    assert model.level0.out_channels == model.level1.out_channels == model.shared.in_channels == WIDTH - 3
    assert model.fc.in_features == (WIDTH - 3) * 49
    with torch.no_grad():
        after = model(x)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_structure_only_graph_cannot_be_backpropagated_by_mistake():
    """The trace keeps no activations; a backward through it says why it fails."""
    w = torch.randn(3, requires_grad=True)
    with structure_only():
        y = (w * w).sum()
    with pytest.raises(RuntimeError, match="structure-only"):
        y.backward()


# The stock detector at its real size, in a child process so that its peak memory is its own.
_REAL_SIZE = textwrap.dedent("""
    import json, math, resource, sys
    import torch, torchvision
    from medprune.compress import prune_model

    torch.manual_seed(0)
    n_images = int(sys.argv[1])
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    images = [torch.rand(3, 600, 800) for _ in range(n_images)]
    result = prune_model(model, images, criterion="l1", ratio=0.5)
    model.eval()
    model.roi_heads.score_thresh = 0.0  # an untrained head scores ~1/91 per class; keep its boxes
    with torch.no_grad():
        detections = model(images)
    model.train()
    targets = [{"boxes": torch.tensor([[100.0, 120.0, 420.0, 500.0]]), "labels": torch.tensor([3])}
               for _ in images]
    losses = model(images, targets)
    print(json.dumps({
        "params": [result.params_before, result.params_after],
        "macs": [result.macs_before, result.macs_after],
        "fpn": [b[0].out_channels for b in model.backbone.fpn.layer_blocks],
        "rpn_in": model.rpn.head.conv[0][0].in_channels,
        "fc6_in": model.roi_heads.box_head.fc6.in_features,
        "classes": model.roi_heads.box_predictor.cls_score.out_features,
        "boxes": [list(d["boxes"].shape) for d in detections],
        "losses": {k: float(v) for k, v in losses.items()},
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))
""")


def _cap_address_space() -> None:
    """A generous virtual-memory cap: a regression fails fast instead of exhausting the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, 16 * 2**30))


@pytest.mark.slow
@pytest.mark.parametrize("n_images", [1, 2], ids=["one_image_lone_roi_view", "two_images_trace_memory"])
def test_stock_faster_rcnn_at_800px_prunes_in_under_4_gb(n_images):
    """``fasterrcnn_resnet50_fpn`` with its default 800 px transform prunes at ratio 0.5 in under 4 GB.

    One image puts its synthetic box alone on the coarsest level (gap 5: it used to die in a
    ``MemoryError`` inside the flatten index mapping); two images made the trace alone hold 4.7 GB (gap 6).
    """
    proc = subprocess.run([sys.executable, "-c", _REAL_SIZE, str(n_images)], capture_output=True, text=True,
                          preexec_fn=_cap_address_space, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_gb = out["peak_rss_kb"] * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    assert peak_gb < 4.0, f"peak RSS {peak_gb:.2f} GB"  # 6.7 GB with two images before gap 6 was closed
    (p0, p1), (m0, m1) = out["params"], out["macs"]
    assert p1 / p0 < 0.3 and m1 / m0 < 0.3, f"params ×{p1 / p0:.3f}, MACs ×{m1 / m0:.3f}"
    assert out["fpn"] == [128] * 4 and out["rpn_in"] == 128
    assert out["fc6_in"] == 128 * 49  # the box head lost the 49 RoIAlign columns of each pruned channel
    assert out["classes"] == 91
    assert out["boxes"] == [[100, 4]] * n_images  # detections_per_img boxes per image, (K, 4)
    assert set(out["losses"]) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(torch.tensor(v)) for v in out["losses"].values())
