"""Optics model: focus measures peak at focus, blur is asymmetric, noise is fresh and plausible."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.hardware.optics import Optics, OpticsSettings
from agent.hardware.virtual_slide import VirtualSlide

UM_PER_PX = 0.11


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    return VirtualSlide().render(7000.0, 9000.0, 960, 600, UM_PER_PX)


def laplacian_variance(img: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    half = cv2.resize(grey, (grey.shape[1] // 2, grey.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(half.astype(np.float32), cv2.CV_32F).var())


def normalised_variance(img: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float(grey.var() / grey.mean())


@pytest.mark.parametrize("measure", [laplacian_variance, normalised_variance])
def test_focus_measure_peaks_at_focus(field: np.ndarray, measure) -> None:
    optics = Optics()
    rng = np.random.default_rng(0)
    dzs = np.arange(-10.0, 10.01, 0.5)
    values = np.array([measure(optics.image(field, float(dz), UM_PER_PX, rng)) for dz in dzs])
    peak = int(values.argmax())
    assert abs(dzs[peak]) <= optics.settings.depth_of_field_um
    # monotonic-ish: moving away from the peak never gains more than a few percent
    for side in (values[peak::-1], values[peak:]):
        assert np.all(np.diff(side) <= 0.03 * side[0])
        assert side[-1] < 0.5 * side[0]


def test_blur_grows_faster_above_focus(field: np.ndarray) -> None:
    optics = Optics()
    assert optics.blur_sigma_um(0.0) == pytest.approx(optics.settings.diffraction_sigma_um)
    assert optics.blur_sigma_um(2.0) > optics.blur_sigma_um(-2.0) > optics.blur_sigma_um(0.0)
    rng = np.random.default_rng(1)
    above = optics.image(field, 2.0, UM_PER_PX, rng)
    below = optics.image(field, -2.0, UM_PER_PX, rng)
    assert laplacian_variance(above) < laplacian_variance(below)
    # and the two sides differ in brightness, as real stacks do
    assert abs(float(above.mean()) - float(below.mean())) > 0.5


def test_noise_is_fresh_and_of_plausible_size(field: np.ndarray) -> None:
    optics = Optics()
    rng = np.random.default_rng(2)
    a = optics.image(field, 0.0, UM_PER_PX, rng).astype(np.float32)
    b = optics.image(field, 0.0, UM_PER_PX, rng).astype(np.float32)
    assert a.shape == field.shape
    diff = a - b
    bright = field.mean(axis=2) > 220
    # shot noise at ~240 DN with 10 000 e- full well: sqrt(240 / 39.2) = 2.5 DN per frame
    sd = float(diff[bright].std()) / np.sqrt(2.0)
    assert 1.5 < sd < 4.0
    assert abs(float(diff.mean())) < 0.2


def test_same_rng_state_reproduces(field: np.ndarray) -> None:
    optics = Optics()
    a = optics.image(field, 1.3, UM_PER_PX, np.random.default_rng(5))
    b = Optics().image(field, 1.3, UM_PER_PX, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_large_defocus_is_smooth_and_keeps_mean(field: np.ndarray) -> None:
    optics = Optics(OpticsSettings(vignetting=0.0, brightness_asymmetry=0.0, read_noise_e=0.0))
    out = optics.image(field, -10.0, UM_PER_PX, np.random.default_rng(3))
    assert abs(float(out.mean()) - float(field.mean())) < 3.0
    assert laplacian_variance(out) < 0.1 * laplacian_variance(field)


def test_rejects_non_bgr_input() -> None:
    with pytest.raises(ValueError):
        Optics().image(np.zeros((10, 10), np.uint8), 0.0, UM_PER_PX, np.random.default_rng(0))
