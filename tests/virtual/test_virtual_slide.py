"""The procedural slide: deterministic, seamless, truthful about where its white cells are."""

from __future__ import annotations

import numpy as np
import pytest

from agent.hardware.virtual_slide import SlideSettings, VirtualSlide

UM_PER_PX = 0.11


@pytest.fixture(scope="module")
def slide() -> VirtualSlide:
    return VirtualSlide(SlideSettings(seed=1))


def test_same_field_renders_identically(slide: VirtualSlide) -> None:
    a = slide.render(6000.0, 7000.0, 640, 400, UM_PER_PX)
    b = slide.render(6000.0, 7000.0, 640, 400, UM_PER_PX)
    c = VirtualSlide(SlideSettings(seed=1)).render(6000.0, 7000.0, 640, 400, UM_PER_PX)
    assert a.dtype == np.uint8 and a.shape == (400, 640, 3)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_other_seed_gives_other_slide() -> None:
    a = VirtualSlide(SlideSettings(seed=1)).render(6000.0, 7000.0, 320, 200, UM_PER_PX)
    b = VirtualSlide(SlideSettings(seed=2)).render(6000.0, 7000.0, 320, 200, UM_PER_PX)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("shift_px", [(137, 0), (-250, 91), (3, -333)])
def test_overlapping_fields_agree(slide: VirtualSlide, shift_px: tuple[int, int]) -> None:
    w, h = 640, 400
    dx, dy = shift_px
    a = slide.render(8000.0, 8000.0, w, h, UM_PER_PX)
    b = slide.render(8000.0 + dx * UM_PER_PX, 8000.0 + dy * UM_PER_PX, w, h, UM_PER_PX)
    # pixel (i, j) of b shows the slide point of pixel (i + dy, j + dx) of a
    ya, yb = max(dy, 0), max(-dy, 0)
    xa, xb = max(dx, 0), max(-dx, 0)
    oh, ow = h - abs(dy), w - abs(dx)
    assert np.array_equal(a[ya : ya + oh, xa : xa + ow], b[yb : yb + oh, xb : xb + ow])


def _fields(n: int) -> list[tuple[float, float]]:
    return [(3000.0 + 311.0 * k, 4000.0 + 173.0 * k) for k in range(n)]


def test_truth_boxes_cover_stained_cells(slide: VirtualSlide) -> None:
    checked = 0
    for x, y in _fields(30):
        img = slide.render(x, y, 1920, 1200, UM_PER_PX)
        red = img[:, :, 2].astype(np.float32)
        for cell in slide.truth(x, y, 1920, 1200, UM_PER_PX).cells:
            bx, by, bw, bh = cell.box
            assert 0 <= bx and 0 <= by and bx + bw <= 1920 and by + bh <= 1200
            if not cell.fully_inside:
                continue
            checked += 1
            # 60-160 px at 0.11 um/px: 6.6-17.6 um, white cells not red cells or platelets
            assert 60 <= max(bw, bh) <= 170, cell
            box = red[by : by + bh, bx : bx + bw]
            # nuclei absorb red strongly; haemoglobin does not, so this separates a WBC from the RBCs
            assert np.percentile(box, 10) < 150, cell
            assert box.mean() < red.mean() - 10, cell
    assert checked >= 10


def test_truth_box_is_tight(slide: VirtualSlide) -> None:
    for x, y in _fields(30):
        for cell in slide.truth(x, y, 1920, 1200, UM_PER_PX).cells:
            if not cell.fully_inside:
                continue
            bx, by, bw, bh = cell.box
            img = slide.render(x, y, 1920, 1200, UM_PER_PX).astype(np.float32)
            plasma = np.percentile(img.mean(axis=2), 95)
            # each edge row/column of the box must cut into the cell (some darker-than-plasma pixel)
            for edge in (img[by, bx : bx + bw], img[by + bh - 1, bx : bx + bw], img[by : by + bh, bx], img[by : by + bh, bx + bw - 1]):
                assert edge.mean(axis=1).min() < plasma - 15
            return
    pytest.fail("no white cell in the sampled fields")


def test_white_cell_density_and_classes(slide: VirtualSlide) -> None:
    counts, labels = [], []
    for x, y in _fields(150):
        cells = slide.truth(x, y, 1920, 1200, UM_PER_PX).cells
        counts.append(sum(c.fully_inside for c in cells))
        labels += [c.label for c in cells]
    assert 0.8 <= np.mean(counts) <= 2.2
    assert 0 in counts
    assert labels.count("neutrophil") > labels.count("monocyte")
    assert labels.count("lymphocyte") > labels.count("basophil")


def test_white_cells_never_overlap(slide: VirtualSlide) -> None:
    cells = slide._wbcs_near(0, 0, 40000, 40000, UM_PER_PX)
    assert len(cells) > 50
    for i, a in enumerate(cells):
        for b in cells[i + 1 :]:
            assert np.hypot(a.x_um - b.x_um, a.y_um - b.y_um) > a.radius_um + b.radius_um


def test_focus_surface_tilt_and_curvature() -> None:
    s = SlideSettings(z_focus_um=500.0, tilt_x_um_per_mm=1.0, tilt_y_um_per_mm=0.0, curvature_um=2.0, curvature_span_mm=10.0)
    slide = VirtualSlide(s)
    cx, cy = s.width_um / 2, s.height_um / 2
    assert slide.focus_z_um(cx, cy) == pytest.approx(500.0)
    # +5 mm in x: tilt 5 um + full sag 2 um; -5 mm: -5 + 2
    assert slide.focus_z_um(cx + 5000, cy) == pytest.approx(507.0)
    assert slide.focus_z_um(cx - 5000, cy) == pytest.approx(497.0)
    # along y there is no tilt, only sag (quadratic: 1/4 of it at half the distance)
    assert slide.focus_z_um(cx, cy + 5000) == pytest.approx(502.0)
    assert slide.focus_z_um(cx, cy - 2500) == pytest.approx(500.5)
    assert slide.truth(cx + 1000, cy, 64, 64, UM_PER_PX).z0_um == pytest.approx(slide.focus_z_um(cx + 1000, cy))
    flat = VirtualSlide(SlideSettings(tilt_x_um_per_mm=0.0, curvature_um=0.0))
    assert flat.focus_z_um(100.0, 19000.0) == pytest.approx(500.0)
