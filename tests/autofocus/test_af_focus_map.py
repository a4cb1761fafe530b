"""The focus map: exact on planes and quadratics, sane on one row, deaf to outliers."""

from __future__ import annotations

import numpy as np
import pytest

from agent.acquisition.focus_map import FocusMap


def grid(rows: int, cols: int, pitch_x_um: float = 211.2, pitch_y_um: float = 132.0):
    return [(5000 + c * pitch_x_um, 5000 + r * pitch_y_um) for r in range(rows) for c in range(cols)]


def test_empty_map_predicts_nothing():
    assert FocusMap().predict(0.0, 0.0) is None


def test_one_point_predicts_its_own_z():
    m = FocusMap()
    m.add(100.0, 200.0, 501.5)
    p = m.predict(400.0, 200.0)
    assert p.model == "nearest" and p.z_um == pytest.approx(501.5)


def test_plane_is_recovered_from_three_points():
    plane = lambda x, y: 500.0 + 0.002 * (x - 5000) - 0.001 * (y - 5000)
    m = FocusMap()
    for x, y in [(5000, 5000), (7000, 5000), (5000, 7000)]:
        m.add(x, y, plane(x, y))
    p = m.predict(6000, 6000)
    assert p.model == "plane"
    assert p.z_um == pytest.approx(plane(6000, 6000), abs=0.02)


def test_quadratic_surface_is_predicted_along_a_serpentine():
    surface = lambda x, y: 500.0 + 0.001 * (x - 10000) + 2.0 * ((x - 10000) ** 2 + (y - 10000) ** 2) / 5000.0**2
    m = FocusMap()
    errors = []
    for i, (x, y) in enumerate(grid(3, 30)):
        if i >= 5:
            errors.append(abs(m.predict(x, y).z_um - surface(x, y)))
        m.add(x, y, surface(x, y))
    assert max(errors) < 0.15


def test_one_row_gives_a_flat_guess_across_rows():
    # Only one row is known: nothing says how z changes with y, so the next row is not extrapolated.
    m = FocusMap()
    for x, _ in grid(1, 20):
        m.add(x, 5000.0, 500.0 + 0.001 * (x - 5000))
    p = m.predict(5000.0 + 19 * 211.2, 5132.0)
    assert p.z_um == pytest.approx(500.0 + 0.001 * 19 * 211.2, abs=0.05)


def test_outliers_do_not_bend_the_surface():
    plane = lambda x, y: 500.0 + 0.001 * (x - 5000) + 0.0005 * (y - 5000)
    m = FocusMap()
    rng = np.random.default_rng(3)
    for i, (x, y) in enumerate(grid(3, 10)):
        bad = 4.0 if i in (7, 15, 22) else 0.0
        m.add(x, y, plane(x, y) + bad + rng.normal(0, 0.03))
    p = m.predict(5000 + 5 * 211.2, 5000 + 132.0)
    assert abs(p.z_um - plane(5000 + 5 * 211.2, 5000 + 132.0)) < 0.1
    assert p.points == 27


def test_non_finite_points_are_refused():
    with pytest.raises(ValueError):
        FocusMap().add(0.0, float("nan"), 1.0)
