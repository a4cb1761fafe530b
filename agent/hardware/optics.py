"""Brightfield optics and sensor model for the virtual microscope.

``Optics.image(in_focus_bgr, dz_um, um_per_px, rng)`` turns an ideal in-focus field into what a 100x
oil objective and a small CMOS sensor would record at defocus ``dz_um`` (stage z minus in-focus z).

Model, in the order applied
1. Blur. A Gaussian whose sigma adds in quadrature a diffraction floor and a defocus term:
   ``sigma(dz) = sqrt(sigma_diff^2 + (k * |dz|)^2)``.
   - ``sigma_diff = 0.21 * wavelength / NA`` is the usual Gaussian fit to the widefield Airy spot
     (0.21 * 0.55 / 1.25 = 0.092 um, i.e. 0.84 px at 0.11 um/px).
   - ``k`` (sigma growth per um of defocus) is chosen so that the defocus blur equals the diffraction
     blur at the edge of the depth of field: ``k = 2 * sigma_diff / DOF`` = 0.31 um/um for
     DOF = 0.6 um (``lambda * n / NA^2`` = 0.53 um plus a little for the sensor's pixel). Geometric
     optics with the full objective cone would give ~0.7 um/um; a stopped-down condenser makes real
     brightfield stacks blur slower than that, and 0.31 matches the look of real 100x oil stacks.
   - Above focus (dz > 0) the blur grows ``blur_asymmetry`` (1.2x) faster, mimicking the spherical
     aberration that makes real stacks unequal on the two sides of focus.
   Large blurs are applied to a downscaled copy and scaled back (the result is smooth anyway).
2. Phase (lens) effect. Red cells are weak lenses: through focus their centres turn dark on one side
   and bright on the other (transport-of-intensity: dI/dz ~ -I * laplacian(phase)). Absorbance stands in
   for phase (both follow the cell's thickness), so intensity is multiplied by
   ``1 - phase_gain_um * dz_eff * laplacian(absorbance)``, with ``dz_eff = dz / (1 + (dz/phase_fade_um)^2)``
   fading the effect once the image is too blurred to show it. With dz > 0 red-cell centres darken.
3. Brightness: ``1 + brightness_asymmetry * tanh(dz / 3 um)`` (real stacks get slightly brighter on
   one side of focus) times an illumination falloff of ``vignetting`` (6 %) at the frame corners,
   centred a little off-axis as in real Koehler illumination. Both move with the camera, not the slide.
4. Sensor noise. Full scale (255 DN) is the full well (10 000 e-), i.e. ~39 e-/DN; shot noise is
   Poisson, applied as Gaussian with variance = signal electrons (fine above a few tens of e-), plus
   3 e- rms read noise: ~2.3 DN rms at a typical 200 DN background, similar to a small-pixel CMOS.
   Noise values come from a fixed bank of normals read at a window offset and sign drawn from
   ``rng`` (see ``_noise_bank``): reproducible for a given ``rng`` and free of per-frame generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_PHASE_GRID_UM = 0.45  # pixel pitch of the low-resolution grid for the phase and brightness map
_DIRECT_BLUR_MAX_PX = 1.5  # above this sigma, blur a downscaled copy instead
_NOISE_MARGIN_PX = 256


@dataclass(frozen=True)
class OpticsSettings:
    numerical_aperture: float = 1.25
    wavelength_um: float = 0.55
    immersion_index: float = 1.518
    depth_of_field_um: float = 0.6
    condenser_na: float = 0.55
    blur_asymmetry: float = 1.2
    """Defocus blur grows this much faster above focus (dz > 0) than below."""
    phase_gain_um: float = 0.08
    phase_fade_um: float = 4.0
    brightness_asymmetry: float = 0.02
    vignetting: float = 0.06
    full_well_e: float = 10000.0
    read_noise_e: float = 3.0

    @property
    def diffraction_sigma_um(self) -> float:
        return 0.21 * self.wavelength_um / self.numerical_aperture

    @property
    def defocus_sigma_per_um(self) -> float:
        """Blur sigma growth per um of defocus below focus: half the illumination cone's radius."""
        return 0.5 * math.tan(math.asin(self.condenser_na / self.immersion_index))


class Optics:
    """Stateless apart from small caches keyed by frame size; safe to share between cameras."""

    def __init__(self, settings: OpticsSettings | None = None) -> None:
        self.settings = settings or OpticsSettings()
        self._vignette_cache: dict[tuple[int, int], np.ndarray] = {}
        self._bank_cache: dict[tuple[int, int], np.ndarray] = {}

    def blur_sigma_um(self, dz_um: float) -> float:
        s = self.settings
        k = s.defocus_sigma_per_um * (s.blur_asymmetry if dz_um > 0 else 1.0)
        return math.hypot(s.diffraction_sigma_um, k * dz_um)

    def image(self, in_focus_bgr: np.ndarray, dz_um: float, um_per_px: float, rng: np.random.Generator) -> np.ndarray:
        """What the sensor records: BGR uint8 of the same size as ``in_focus_bgr``."""
        if in_focus_bgr.dtype != np.uint8 or in_focus_bgr.ndim != 3 or in_focus_bgr.shape[2] != 3:
            raise ValueError("in_focus_bgr must be an H x W x 3 uint8 image")
        blurred = self._blur(in_focus_bgr, self.blur_sigma_um(dz_um) / um_per_px)
        gain = self._gain_map(blurred, dz_um, um_per_px)
        return self._expose(blurred, gain, rng)

    # ---- steps ----------------------------------------------------------------------------------
    @staticmethod
    def _blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
        if sigma_px <= _DIRECT_BLUR_MAX_PX:
            return cv2.GaussianBlur(img, (0, 0), sigma_px)
        h, w = img.shape[:2]
        f = max(int(sigma_px / 1.5), 2)
        small = cv2.resize(img, (max(w // f, 1), max(h // f, 1)), interpolation=cv2.INTER_AREA)
        # INTER_AREA already averaged over f pixels (sigma ~ f / sqrt(12)); blur only the remainder.
        rest = math.sqrt(max(sigma_px**2 - f * f / 12.0, 0.25)) / f
        small = cv2.GaussianBlur(small, (0, 0), rest)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    def _gain_map(self, blurred: np.ndarray, dz_um: float, um_per_px: float) -> np.ndarray:
        """Per-pixel intensity factor (phase effect x brightness x vignetting), H x W float32."""
        s = self.settings
        h, w = blurred.shape[:2]
        f = max(int(round(_PHASE_GRID_UM / um_per_px)), 1)
        sw, sh = max(w // f, 4), max(h // f, 4)
        grid_um = um_per_px * w / sw
        gain = self._vignette(sw, sh).copy()
        gain *= 1.0 + s.brightness_asymmetry * math.tanh(dz_um / 3.0)
        dz_eff = dz_um / (1.0 + (dz_um / s.phase_fade_um) ** 2)
        if abs(dz_eff) > 1e-3:
            grey = cv2.resize(cv2.cvtColor(blurred, cv2.COLOR_BGR2GRAY), (sw, sh), interpolation=cv2.INTER_AREA)
            absorbance = -np.log(np.maximum(grey.astype(np.float32), 1.0) * (1.0 / 250.0))
            sigma_grid = max(self.blur_sigma_um(dz_um), 0.5) / grid_um
            absorbance = cv2.GaussianBlur(absorbance, (0, 0), sigma_grid)
            lap = cv2.Laplacian(absorbance, cv2.CV_32F) * (1.0 / (grid_um * grid_um))
            gain *= np.clip(1.0 - s.phase_gain_um * dz_eff * lap, 0.5, 1.5)
        return cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)

    def _vignette(self, w: int, h: int) -> np.ndarray:
        key = (w, h)
        if key not in self._vignette_cache:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            cx, cy = 0.55 * w, 0.48 * h  # Koehler alignment is never perfect
            r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
            self._vignette_cache[key] = (1.0 - self.settings.vignetting * r2).astype(np.float32)
        return self._vignette_cache[key]

    def _expose(self, blurred: np.ndarray, gain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.settings
        h, w = blurred.shape[:2]
        e_per_dn = s.full_well_e / 255.0
        signal = cv2.multiply(blurred, cv2.cvtColor(gain, cv2.COLOR_GRAY2BGR), dtype=cv2.CV_32F)
        # variance in DN^2 = electrons / gain^2 + read^2 / gain^2 = DN / gain + (read / gain)^2
        sigma = cv2.sqrt(cv2.addWeighted(signal, 1.0 / e_per_dn, signal, 0.0, (s.read_noise_e / e_per_dn) ** 2))
        bank = self._noise_bank(h, w)
        oy = int(rng.integers(0, bank.shape[0] - h + 1))
        ox = int(rng.integers(0, bank.shape[1] // 3 - w + 1))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        noise = bank[oy : oy + h, 3 * ox : 3 * ox + 3 * w]
        signal = signal.reshape(h, 3 * w)
        signal = cv2.add(signal, cv2.multiply(sigma.reshape(h, 3 * w), noise, scale=sign))
        _, signal = cv2.threshold(signal, 0.0, 0.0, cv2.THRESH_TOZERO)  # convertScaleAbs folds negatives up
        return cv2.convertScaleAbs(signal).reshape(h, w, 3)

    def _noise_bank(self, h: int, w: int) -> np.ndarray:
        """Standard-normal values for a frame plus a margin, made once per frame size.

        Each frame reads it at a random offset (and sign): drawing ~7 M fresh normals per frame costs
        20-65 ms here, a random window of a fixed bank costs nothing, and with 256 x 256 x 2 windows
        two frames practically never share a noise pattern.
        """
        key = (h, w)
        bank = self._bank_cache.get(key)
        if bank is None:
            bank = np.empty((h + _NOISE_MARGIN_PX, 3 * (w + _NOISE_MARGIN_PX)), np.float32)
            cv2.setRNGSeed(12345)
            cv2.randn(bank, 0.0, 1.0)
            self._bank_cache.clear()  # one camera size at a time; the bank is ~40 MB
            self._bank_cache[key] = bank
        return bank
