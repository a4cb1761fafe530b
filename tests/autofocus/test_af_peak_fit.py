"""The peak search on synthetic focus curves: fit accuracy, bracketing, and refusing flat curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.acquisition.autofocus import PeakSearch, SearchParams, fit_log_parabola, model_peak


def focus_curve(truth_um: float, *, fwhm_um: float = 1.2, floor: float = 10.0, peak: float = 3000.0,
                above_faster: float = 1.2):
    """A sharp, slightly asymmetric peak on long tails, like laplacian_variance on the virtual camera."""
    def score(z_um: float) -> float:
        dz = z_um - truth_um
        dz = dz * above_faster if dz > 0 else dz
        return floor + peak / (1.0 + (2.0 * dz / fwhm_um) ** 2) ** 1.5
    return score


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, z_um: float) -> float:
        self.calls.append(z_um)
        return self.fn(z_um)


def test_log_parabola_recovers_a_gaussian_peak_from_uneven_samples():
    gauss = lambda z: 50.0 * math.exp(-((z - 3.3) ** 2) / (2 * 0.7**2))
    samples = [(z, gauss(z)) for z in (2.6, 3.1, 4.2)]
    assert fit_log_parabola(samples) == pytest.approx(3.3, abs=1e-9)


def test_log_parabola_refuses_a_valley():
    assert fit_log_parabola([(0.0, 5.0), (1.0, 1.0), (2.0, 5.0)]) is None


@pytest.mark.parametrize("offset_um", np.linspace(-0.24, 0.24, 7))
def test_confirmation_around_a_good_prediction_takes_three_frames(offset_um):
    probe = Counter(focus_curve(100.0 + offset_um))
    out = PeakSearch(SearchParams()).run(probe, 100.0, 0.5, 94.0, 106.0)
    assert out.success
    assert len(probe.calls) == 3
    assert abs(out.z_um - (100.0 + offset_um)) <= 0.25


@pytest.mark.parametrize("offset_um", [-9.0, -4.4, -1.3, 0.0, 0.7, 2.9, 6.1])
def test_coarse_search_brackets_then_fits(offset_um):
    probe = Counter(focus_curve(100.0 + offset_um))
    out = PeakSearch(SearchParams()).run(probe, 100.0, 1.5, 80.0, 120.0)
    assert out.success, out.reason
    assert abs(out.z_um - (100.0 + offset_um)) <= 0.3
    if abs(offset_um) <= 2.0:
        assert len(probe.calls) <= 7


def test_a_flat_curve_is_refused_with_a_reason():
    probe = Counter(lambda z: 25.0 + 0.01 * math.sin(7 * z))
    out = PeakSearch(SearchParams(max_frames=12)).run(probe, 100.0, 1.5, 90.0, 110.0)
    assert not out.success
    assert "flat" in out.reason
    assert len(probe.calls) == 5  # the bracket and one widening on both sides


def test_a_peak_beyond_the_range_is_refused():
    probe = Counter(focus_curve(108.0))
    out = PeakSearch(SearchParams()).run(probe, 100.0, 1.5, 94.0, 106.0)
    assert not out.success
    assert "outside" in out.reason
    assert max(probe.calls) <= 106.0


def test_samples_stay_inside_the_limits():
    probe = Counter(focus_curve(1.0))
    out = PeakSearch(SearchParams()).run(probe, 0.5, 1.5, 0.0, 10.0)
    assert out.success
    assert min(probe.calls) >= 0.0


def test_asymmetric_fit_removes_the_bias_of_a_peak_falling_faster_above():
    def curve(z: float) -> float:  # a Gaussian top that falls 1.2x faster above its peak at 100
        u = (z - 100.0) * (1.2 if z > 100.0 else 1.0)
        return 3000.0 * math.exp(-u * u / (2 * 0.6**2))
    for centre in (99.8, 100.0, 100.2):
        samples = [(z, curve(z)) for z in (centre - 0.5, centre, centre + 0.5)]
        plain = fit_log_parabola(samples) - 100.0
        corrected = fit_log_parabola(samples, asymmetry=1.2) - 100.0
        assert plain < -0.02  # the symmetric fit is pulled towards the slower side
        assert corrected == pytest.approx(0.0, abs=1e-4)


def coarse_curve(truth_um: float, a: float = 8.5):
    """The coarse (downsample 8) curve's shape as model_peak assumes it."""
    def score(z_um: float) -> float:
        u = z_um - (truth_um - 0.29)
        u = 1.2 * u if u > 0 else u
        return math.exp(a - 1.94 * math.log1p((u / 2.27) ** 2))
    return score


@pytest.mark.parametrize("offset_um", [-3.0, 0.4, 2.5, 8.0])
def test_model_peak_places_the_peak_from_three_frames_on_a_tail(offset_um):
    curve = coarse_curve(100.0 + offset_um)
    samples = [(z, curve(z)) for z in (97.0, 100.0, 103.0)]
    assert model_peak(samples, 80.0, 120.0) == pytest.approx(100.0 + offset_um, abs=0.03)


@pytest.mark.parametrize("offset_um", [-1.0, 0.0, 1.7, 4.5, 8.8])
def test_cold_search_with_a_coarse_score_takes_few_frames(offset_um):
    fine, coarse = focus_curve(100.0 + offset_um), coarse_curve(100.0 + offset_um)
    probe = Counter(lambda z: (fine(z), coarse(z)))
    out = PeakSearch(SearchParams()).run(probe, 100.0, 3.0, 80.0, 120.0)
    assert out.success, out.reason
    assert abs(out.z_um - (100.0 + offset_um)) <= 0.3
    assert len(probe.calls) <= 7
