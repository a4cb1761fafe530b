"""The classifier's cell square (agent/inference/cell_crop.py) on synthetic stained cells."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.inference.cell_crop import (
    REFERENCE_BACKGROUND_BGR,
    background_colour,
    balance_background,
    cut_square,
    locate_cell,
)
from agent.inference.cell_finder import CellFinder

PLASMA = (236, 226, 232)  # BGR, pale pink
NUCLEUS = (150, 60, 90)   # BGR, violet


def _cell(size: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    img = np.full((size, size, 3), PLASMA, np.uint8)
    cv2.circle(img, centre, radius, NUCLEUS, -1)
    return img


@pytest.mark.parametrize("radius", [12, 25, 60])
def test_square_is_the_factor_times_the_nucleus_diameter_at_any_scale(radius):
    img = _cell(6 * radius, (3 * radius, 3 * radius), radius)
    sq = locate_cell(img, 2.5)
    assert sq.found
    assert sq.side_px == pytest.approx(2.5 * 2 * radius, rel=0.08)
    assert (sq.cx, sq.cy) == pytest.approx((3 * radius, 3 * radius), abs=2)


def test_the_cell_nearest_the_middle_wins_over_a_bigger_one_at_the_edge():
    img = np.full((300, 300, 3), PLASMA, np.uint8)
    cv2.circle(img, (150, 150), 30, NUCLEUS, -1)
    cv2.circle(img, (20, 20), 40, NUCLEUS, -1)
    sq = locate_cell(img, 2.5)
    assert (sq.cx, sq.cy) == pytest.approx((150, 150), abs=3)


def test_cut_square_pads_with_the_background_and_survives_huge_squares():
    img = np.full((20, 30, 3), (200, 220, 250), np.uint8)
    img[5:15, 10:20] = (120, 40, 80)  # a stained blob on plasma
    inside = cut_square(img, 15.0, 10.0, 20, 20)
    assert np.array_equal(inside, img[0:20, 5:25])  # inside: an exact cut, no resampling
    padded = cut_square(img, 15.0, 10.0, 40, 40)  # 10 px beyond every edge
    assert padded[0, 0].tolist() == [200, 220, 250] and padded[20, 20].tolist() == [120, 40, 80]
    big = cut_square(img, 0, 0, 500, 64)  # 25x the image
    assert big.shape == (64, 64, 3) and big.dtype == np.uint8 and big[0, 0].tolist() == [200, 220, 250]


def test_background_balance_brings_another_lamp_to_the_training_background():
    img = np.full((100, 100, 3), (248, 246, 250), np.uint8)  # a white-ish lamp (miLab 0152's plasma)
    cv2.circle(img, (50, 50), 20, (150, 60, 90), -1)
    out = balance_background(img)
    assert out[5, 5].tolist() == pytest.approx(REFERENCE_BACKGROUND_BGR, abs=1.5)
    # The cell is scaled by the same gains: its colour relative to the background is kept.
    expected = np.array((150, 60, 90)) * np.array(REFERENCE_BACKGROUND_BGR) / np.array((248, 246, 250))
    assert out[50, 50].tolist() == pytest.approx(expected.tolist(), abs=1.5)


def test_background_balance_leaves_a_square_without_background_alone():
    dark = np.full((60, 60, 3), (120, 40, 80), np.uint8)  # a cell filling the square
    assert np.array_equal(balance_background(dark), dark)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 3001])
def test_finder_percentiles_are_numpys(n):
    from agent.inference.cell_finder import _percentiles

    rng = np.random.default_rng(n)
    values = rng.normal(size=(n,)).astype(np.float32).reshape(-1, 1)
    qs = (0.0, 5.0, 50.0, 95.0, 100.0)
    assert _percentiles(values, qs) == pytest.approx(np.percentile(values, qs), abs=1e-6)
    sums = rng.integers(0, 766, n).astype(np.int16)  # background_colour's channel sums, ties included
    assert _percentiles(sums, (50.0, 90.0)) == pytest.approx(np.percentile(sums, (50.0, 90.0)), rel=1e-12)


def test_background_colour_is_the_median_of_the_brightest_tenth():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    pixels = image.reshape(-1, 3).astype(np.int64)
    brightness = pixels.sum(axis=1)
    expected = np.median(pixels[brightness >= np.percentile(brightness, 90)], axis=0)
    assert np.array_equal(background_colour(image), expected.astype(np.float32))


class _RecordingFinder(CellFinder):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def find(self, crop_bgr, um_per_px_hint):
        self.shapes.append(crop_bgr.shape)
        return super().find(crop_bgr, um_per_px_hint)


def _lobed_cell(size: int = 360) -> np.ndarray:
    img = np.full((size, size, 3), PLASMA, np.uint8)
    for centre in ((165, 170), (190, 160), (200, 190), (175, 195)):  # four touching lobes
        cv2.circle(img, centre, 14, NUCLEUS, -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def test_a_hint_that_implies_a_large_nucleus_sizes_it_first_on_a_shrunk_copy_with_the_same_square():
    img = _lobed_cell()
    reference = locate_cell(img, 2.5, 0.17)  # ~50 px nucleus: both passes at full resolution
    finder = _RecordingFinder()
    wide = locate_cell(img, 2.5, 0.03, finder)  # the hint expects a ~280 px nucleus
    assert finder.shapes[0][0] < img.shape[0] // 4 and finder.shapes[1] == img.shape
    assert wide.side_px == pytest.approx(reference.side_px, rel=0.03)
    assert (wide.cx, wide.cy) == pytest.approx((reference.cx, reference.cy), abs=1.5)
    assert locate_cell(img, 2.5).side_px == pytest.approx(reference.side_px, rel=0.03)  # no hint
