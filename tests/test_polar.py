"""Polar frame geometry: intervals, columns, boxes, IoU, rolls and the 60/90 rule — hand-computed.

Most cases use a 36-column frame: column j covers [10j, 10j + 10) degrees, centre 10j + 5.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medprune.data.polar import (
    BACKGROUND,
    FULL_CIRCLE,
    PLAQUE,
    TISSUE,
    FrameBoxes,
    LabelRule,
    box_to_interval,
    check_interval,
    columns_to_intervals,
    coverage_iou,
    coverage_overlap,
    coverage_union,
    interval_iou,
    interval_length,
    interval_overlap,
    interval_pieces,
    interval_to_boxes,
    interval_to_columns,
    interval_union,
    intervals_to_columns,
    merge_intervals,
    plaque_boxes,
    read_boxes,
    roll_frame,
    roll_interval,
    seam_shift,
    write_boxes,
)
from medprune.errors import ConfigError, DataError


def _columns(*indices: int, width: int = 36) -> np.ndarray:
    mask = np.zeros(width, dtype=bool)
    mask[list(indices)] = True
    return mask


# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    ("given", "canonical", "length"),
    [
        ((10, 20), (10.0, 20.0), 10.0),
        ((350, 20), (350.0, 20.0), 30.0),  # wraps
        ((350, 0), (350.0, 360.0), 10.0),  # end 0 is the seam: no wrap
        ((360, 10), (0.0, 10.0), 10.0),  # start 360 is 0
        ((0, 360), (0.0, 360.0), 360.0),  # the full circle
        ((359.5, 0.5), (359.5, 0.5), 1.0),
    ],
)
def test_check_interval_canonical_form_and_length(given, canonical, length) -> None:
    assert check_interval(given) == canonical
    assert interval_length(check_interval(given)) == length


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ((float("nan"), 10), r"interval \(nan, 10\): angles must be finite"),
        ((10, float("inf")), r"interval \(10, inf\): angles must be finite"),
        ((-1, 10), r"interval \(-1, 10\): angles must lie in \[0, 360\]"),
        ((10, 361), r"interval \(10, 361\): angles must lie in \[0, 360\]"),
        ((30, 30), r"interval \(30, 30\): start and end are the same angle"),
        ((0, 0), r"interval \(0, 0\): start and end are the same angle"),
        ((360, 0), r"interval \(360, 0\): start and end are the same angle"),  # only (0, 360) is full
        ((360, 360), r"interval \(360, 360\): start and end are the same angle"),
        (("a", 3), r"interval \('a', 3\): expected \(start_deg, end_deg\), two numbers"),
        ((1, 2, 3), r"interval \(1, 2, 3\): expected \(start_deg, end_deg\)"),
    ],
)
def test_check_interval_refusals_name_frame_and_interval(given, problem) -> None:
    with pytest.raises(DataError, match=r"^pullback PB1, frame 3: " + problem):
        check_interval(given, where="pullback PB1, frame 3")


def test_pieces_split_a_wrapping_interval_at_the_seam() -> None:
    assert interval_pieces((350.0, 20.0)) == [(350.0, 360.0), (0.0, 20.0)]
    assert interval_pieces((10.0, 20.0)) == [(10.0, 20.0)]
    assert interval_pieces(FULL_CIRCLE) == [(0.0, 360.0)]


# ----------------------------------------------------------------------------- columns


@pytest.mark.parametrize(
    ("interval", "columns"),
    [
        ((350.0, 20.0), [0, 1, 35]),  # centres 355, 5, 15
        ((5.0, 15.0), [0]),  # [5, 15) holds centre 5, not 15
        ((4.0, 6.0), [0]),
        ((6.0, 14.0), []),  # narrower than a column, no centre inside
        ((340.0, 360.0), [34, 35]),
        ((0.0, 360.0), list(range(36))),
    ],
)
def test_interval_to_columns_uses_column_centres(interval, columns) -> None:
    assert np.flatnonzero(interval_to_columns(interval, 36)).tolist() == columns


def test_union_of_columns() -> None:
    mask = intervals_to_columns([(350.0, 10.0), (100.0, 120.0)], 36)
    assert np.flatnonzero(mask).tolist() == [0, 10, 11, 35]
    assert not intervals_to_columns([], 36).any()


@pytest.mark.parametrize(
    ("columns", "intervals"),
    [
        ((0, 1, 35), [(350.0, 20.0)]),  # a run touching both edges joins into one wrapping interval
        ((0, 35), [(350.0, 10.0)]),
        ((5, 6), [(50.0, 70.0)]),
        ((35,), [(350.0, 360.0)]),
        ((0,), [(0.0, 10.0)]),
        ((0, 1, 5, 6, 35), [(50.0, 70.0), (350.0, 20.0)]),
        ((), []),
        (tuple(range(36)), [FULL_CIRCLE]),
    ],
)
def test_columns_to_intervals_merges_runs_and_wraps(columns, intervals) -> None:
    assert columns_to_intervals(_columns(*columns)) == intervals


@pytest.mark.parametrize("width", [7, 36, 256, 360, 500])
def test_column_masks_survive_the_round_trip_exactly(width: int) -> None:
    rng = np.random.default_rng(width)
    for _ in range(50):
        mask = rng.random(width) < rng.uniform(0.05, 0.95)
        assert np.array_equal(intervals_to_columns(columns_to_intervals(mask), width), mask)


def test_columns_to_intervals_refuses_a_2d_mask() -> None:
    with pytest.raises(DataError, match=r"expected a 1-D column mask, got shape \(2, 3\)"):
        columns_to_intervals(np.zeros((2, 3), bool))


# ----------------------------------------------------------------------------- merge and IoU


def test_merge_intervals_joins_overlaps_touches_and_the_seam() -> None:
    assert merge_intervals([(350.0, 5.0), (0.0, 10.0), (20.0, 30.0), (25.0, 40.0)]) == [(20.0, 40.0), (350.0, 10.0)]
    assert merge_intervals([(10.0, 20.0), (20.0, 30.0)]) == [(10.0, 30.0)]
    assert merge_intervals([(0.0, 180.0), (180.0, 360.0)]) == [FULL_CIRCLE]
    assert merge_intervals([(300.0, 360.0), (0.0, 10.0)]) == [(300.0, 10.0)]
    assert merge_intervals([]) == []


@pytest.mark.parametrize(
    ("a", "b", "overlap", "union"),
    [
        ((350.0, 20.0), (0.0, 40.0), 20.0, 50.0),  # wrap vs plain
        ((10.0, 20.0), (30.0, 40.0), 0.0, 20.0),
        ((10.0, 20.0), (20.0, 30.0), 0.0, 20.0),  # touching
        ((300.0, 60.0), (50.0, 310.0), 20.0, 360.0),  # overlap at both ends of the wrap
        ((350.0, 10.0), (355.0, 20.0), 15.0, 30.0),  # both wrap
        (FULL_CIRCLE, (10.0, 20.0), 10.0, 360.0),
        ((0.0, 90.0), (0.0, 90.0), 90.0, 90.0),
    ],
)
def test_overlap_union_iou_in_degrees(a, b, overlap, union) -> None:
    assert interval_overlap(a, b) == pytest.approx(overlap)
    assert interval_overlap(b, a) == pytest.approx(overlap)
    assert interval_union(a, b) == pytest.approx(union)
    assert interval_iou(a, b) == pytest.approx(overlap / union)


def test_coverage_iou_of_sets_of_arcs() -> None:
    pred = [(350.0, 10.0), (100.0, 110.0)]
    true = [(0.0, 20.0)]
    assert coverage_overlap(pred, true) == pytest.approx(10.0)
    assert coverage_union(pred, true) == pytest.approx(40.0)  # (350, 20) + (100, 110)
    assert coverage_iou(pred, true) == pytest.approx(0.25)
    # overlapping arcs of one set count once
    assert coverage_overlap([(0.0, 20.0), (10.0, 30.0)], [(0.0, 30.0)]) == pytest.approx(30.0)
    assert coverage_iou([], [(0.0, 10.0)]) == 0.0
    assert math.isnan(coverage_iou([], []))


# ----------------------------------------------------------------------------- boxes and rolls


def test_interval_to_boxes_splits_a_wrapping_arc_at_the_seam() -> None:
    assert interval_to_boxes((350.0, 20.0), 36, (10, 20)) == [(35.0, 10.0, 36.0, 20.0), (0.0, 10.0, 2.0, 20.0)]
    assert interval_to_boxes((45.0, 90.0), 256, (3, 7)) == [(32.0, 3.0, 64.0, 7.0)]
    assert interval_to_boxes(FULL_CIRCLE, 256, (0, 1)) == [(0.0, 0.0, 256.0, 1.0)]
    with pytest.raises(DataError, match=r"bottom > top, got \(5, 5\)"):
        interval_to_boxes((10.0, 20.0), 36, (5, 5))


def test_box_to_interval_inverts_and_merge_rejoins_the_halves() -> None:
    halves = interval_to_boxes((350.0, 20.0), 36, (10, 20))
    intervals = [box_to_interval(b, 36) for b in halves]
    assert intervals == [(350.0, 360.0), (0.0, 20.0)]
    assert merge_intervals(intervals) == [(350.0, 20.0)]
    assert box_to_interval((0, 0, 36, 5), 36) == FULL_CIRCLE
    assert box_to_interval((32.0, 3.0, 64.0, 7.0), 256) == (45.0, 90.0)
    with pytest.raises(DataError, match=r"box \(5, 0, 5, 3\): expected 0 <= x0 < x1 <= 36"):
        box_to_interval((5, 0, 5, 3), 36)
    with pytest.raises(DataError, match=r"x1 <= 36"):
        box_to_interval((30, 0, 37, 3), 36)


def test_roll_interval_and_roll_frame_agree() -> None:
    assert roll_interval((350.0, 20.0), 20.0) == (10.0, 40.0)
    assert roll_interval((340.0, 350.0), 10.0) == (350.0, 360.0)
    assert roll_interval((10.0, 20.0), -20.0) == (350.0, 360.0)
    assert roll_interval(FULL_CIRCLE, 45.0) == FULL_CIRCLE
    frame = np.tile(np.arange(36), (2, 1))
    assert roll_frame(frame, 3)[0, :4].tolist() == [33, 34, 35, 0]  # column 0 moved to column 3
    for interval in [(350.0, 20.0), (100.0, 130.0), (0.0, 10.0)]:
        for shift in (-5, 1, 12, 35):
            rolled = interval_to_columns(roll_interval(interval, shift * 10.0), 36)
            assert np.array_equal(rolled, roll_frame(interval_to_columns(interval, 36)[None, :], shift)[0])


def test_seam_shift_unwraps_every_arc() -> None:
    assert seam_shift([(10.0, 20.0), (100.0, 130.0)], 36) == 0  # nothing wraps
    assert seam_shift([], 36) == 0
    # widest gap (120, 350), middle 235 -> seam on the column edge at 240 degrees (column 24)
    intervals = [(350.0, 20.0), (100.0, 120.0)]
    shift = seam_shift(intervals, 36)
    assert shift == 12
    assert [roll_interval(iv, shift * 10.0) for iv in intervals] == [(110.0, 140.0), (220.0, 240.0)]
    with pytest.raises(DataError, match="cover the full circle"):
        seam_shift([(0.0, 200.0), (190.0, 10.0)], 36)
    # 4 columns (edges at 0, 90, 180, 270): the gaps (95, 100) and (340, 350) hold no edge
    with pytest.raises(DataError, match="no column edge of a 4-column frame lies between the intervals"):
        seam_shift([(350.0, 95.0), (100.0, 340.0)], 4)


# ----------------------------------------------------------------------------- the label rule


def test_label_rule_on_a_hand_made_frame() -> None:
    # 3 rows x 4 columns of 90 degrees each; the arc (180, 360) covers columns 2 and 3.
    frame = np.array(
        [
            [200, 200, 200, 200],  # catheter row
            [59, 60, 89, 90],
            [90, 255, 60, 59],
        ],
        dtype=np.uint8,
    )
    expected = np.array(
        [
            [TISSUE, TISSUE, PLAQUE, PLAQUE],
            [BACKGROUND, TISSUE, TISSUE, PLAQUE],  # 89 inside the arc is tissue
            [TISSUE, TISSUE, TISSUE, BACKGROUND],  # 90 outside the arc is tissue
        ]
    )
    assert np.array_equal(LabelRule().apply(frame, [(180.0, 360.0)]), expected)
    excluded = LabelRule(catheter_depth=1).apply(frame, [(180.0, 360.0)])
    assert excluded[0].tolist() == [0, 0, 0, 0] and np.array_equal(excluded[1:], expected[1:])
    # the wrapping arc (270, 90) covers columns 3 and 0
    assert LabelRule().apply(frame, [(270.0, 90.0)])[2].tolist() == [PLAQUE, TISSUE, TISSUE, BACKGROUND]
    assert LabelRule(tissue_threshold=50, plaque_threshold=60).apply(frame, [(180.0, 360.0)])[2].tolist() == [
        TISSUE, TISSUE, PLAQUE, TISSUE,
    ]
    assert LabelRule().apply(frame, []).max() == TISSUE


def test_label_rule_refuses_non_8_bit_frames_and_bad_thresholds() -> None:
    with pytest.raises(DataError, match=r"frame 7: the label rule needs a 2-D 8-bit frame \(uint8\), got float32"):
        LabelRule().apply(np.zeros((4, 4), np.float32), [], where="frame 7")
    with pytest.raises(ConfigError, match=r"tissue_threshold: 100 is above plaque_threshold 90"):
        LabelRule(tissue_threshold=100)
    with pytest.raises(ConfigError, match=r"plaque_threshold: expected an 8-bit level in \[0, 255\], got 300"):
        LabelRule(plaque_threshold=300)
    with pytest.raises(ConfigError, match=r"catheter_depth: expected rows >= 0, got -1"):
        LabelRule(catheter_depth=-1)
    with pytest.raises(ConfigError, match=r"tissue_threshold: expected an integer, got 60.5"):
        LabelRule(tissue_threshold=60.5)  # type: ignore[arg-type]


def test_plaque_boxes_take_the_depth_of_each_piece() -> None:
    labels = np.zeros((10, 36), np.uint8)
    labels[4:7, 35] = PLAQUE  # the half before the seam: rows 4..6
    labels[2:4, 0:2] = PLAQUE  # the half after it: rows 2..3
    labels[8, 20] = PLAQUE  # column 20 (200 degrees) lies outside every arc: in no box
    boxes, owners = plaque_boxes(labels, [(350.0, 20.0), (100.0, 120.0)])
    assert boxes == [(35.0, 4.0, 36.0, 7.0), (0.0, 2.0, 2.0, 4.0)]
    assert owners == [0, 0]  # the second arc holds no plaque pixel: no box


def test_boxes_file_round_trip_and_errors(tmp_path: Path) -> None:
    record = FrameBoxes("f/a.png", 3, "PB1", 10, 36, [(350.0, 20.0)], [(35.0, 4.0, 36.0, 7.0)], [0], "m/a.png")
    path = write_boxes(tmp_path / "boxes.json", [record])
    assert read_boxes(path) == [record]
    (tmp_path / "bad.json").write_text('{"format": "other", "frames": []}')
    with pytest.raises(DataError, match=r"bad.json: not a boxes file"):
        read_boxes(tmp_path / "bad.json")
    data = record.to_dict() | {"box_interval": [1]}
    with pytest.raises(DataError, match=r"record 0: box_interval must give a valid interval index"):
        FrameBoxes.from_dict(data, "record 0")
    with pytest.raises(DataError, match=r"record 0: interval \(10, 10\): start and end are the same angle"):
        FrameBoxes.from_dict(record.to_dict() | {"intervals": [[10, 10]]}, "record 0")
    with pytest.raises(DataError, match=r"missing key 'width'"):
        FrameBoxes.from_dict({k: v for k, v in record.to_dict().items() if k != "width"}, "record 0")
