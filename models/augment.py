"""Training augmentation (numpy + OpenCV, one sample at a time, deterministic per (seed, epoch, index)).

Models what changes between devices, stains and the runtime's own cell finder:
scale (-15/+18 %), rotation (any angle) and flips, centring error (+-7 % of the square), tight crops
(plain background beyond the cell), stain density and dye balance (optical density, optional), stain / colour shifts (HSV hue,
saturation and value; Lab a/b shifts; per-channel gain, contrast, gamma), defocus blur, sensor noise and
JPEG re-compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.inference.cell_crop import background_colour


def _affine(src_px: int, out: int, zoom: float, rng, scale_range, shift_frac):
    scale = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1])))
    angle = rng.uniform(0, 360)
    shift = rng.uniform(-shift_frac, shift_frac, 2) * out
    s = scale * zoom  # src px -> out px
    c = (src_px - 1) / 2.0
    m = cv2.getRotationMatrix2D((c, c), angle, s)
    # move the source centre (plus the centring error) to the output centre
    m[:, 2] += (out - 1) / 2.0 - c + shift
    if rng.random() < 0.5:
        m[0, :] *= -1
        m[0, 2] += out - 1
    return m


def augment(img: np.ndarray, out: int, zoom: float, rng: np.random.Generator,
            scale_range: tuple[float, float] = (0.85, 1.18), shift_frac: float = 0.07,
            strength: JitterStrength | None = None) -> np.ndarray:
    """img: uint8 RGB square, the cell in the middle. Returns uint8 RGB out x out, where ``zoom`` output px per
    source px is the canonical scale; ``scale_range`` and ``shift_frac`` (of ``out``) are the errors of the
    runtime's cell measurement and centring on other devices."""
    m = _affine(img.shape[0], out, zoom, rng, scale_range, shift_frac)
    x = cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < TIGHT_CROP_P:
        x = tight_crop(x, rng)
    return colour_jitter(x, rng, strength if strength is not None else JitterStrength())


TIGHT_CROP_P = 0.3


def tight_crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the runtime makes of a crop cut tightly around the cell: outside a square of 0.45-0.8 of the
    side (the nucleus spans 0.4) only plain background, no neighbouring red cells to judge size by."""
    out = x.shape[0]
    half = rng.uniform(0.225, 0.4) * out
    cx, cy = (out - 1) / 2.0 + rng.uniform(-0.05, 0.05, 2) * out
    x0, x1 = int(round(cx - half)), int(round(cx + half))
    y0, y1 = int(round(cy - half)), int(round(cy + half))
    kept = np.empty_like(x)
    kept[:] = background_colour(x).astype(np.uint8)
    kept[max(0, y0):y1, max(0, x0):x1] = x[max(0, y0):y1, max(0, x0):x1]
    return kept


def restain(x: np.ndarray, factors) -> np.ndarray:
    """Each channel's optical density against the image's background multiplied by its factor (Beer-Lambert):
    a thinner or thicker stain, or another dye balance; the background itself is unchanged."""
    background = background_colour(x).astype(np.float32) + 1.0
    density = -np.log(np.clip((x.astype(np.float32) + 1.0) / background, 1e-3, 1.0))
    return np.clip(np.exp(-density * np.asarray(factors, np.float32)) * background - 1.0, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class JitterStrength:
    """How hard ``colour_jitter`` pushes; the detector uses a milder setting than the classifier."""

    blur_sigma: tuple[float, float] = (0.4, 1.4)
    sharpen: float = 0.5
    noise_max: float = 7.0
    jpeg_min_quality: int = 30
    stain_density_p: float = 0.0
    """Share of samples re-stained in optical-density space (``restain``); 0 leaves the random stream as it was."""


def colour_jitter(x: np.ndarray, rng: np.random.Generator, strength: JitterStrength = JitterStrength()) -> np.ndarray:
    """Stain, camera and optics changes on an RGB uint8 image: what another device makes of a cell."""
    if strength.stain_density_p and rng.random() < strength.stain_density_p:
        x = restain(x, np.exp(rng.uniform(np.log(0.55), np.log(1.5))) * rng.uniform(0.8, 1.25, 3))
    # stain / colour: HSV
    if rng.random() < 0.8:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180
        hsv[..., 1] *= rng.uniform(0.6, 1.4)
        hsv[..., 2] *= rng.uniform(0.85, 1.15)
        x = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    # Lab shifts (stain balance: more red / more blue)
    if rng.random() < 0.5:
        lab = cv2.cvtColor(x, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab[..., 0] = (lab[..., 0] - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-12, 12)
        lab[..., 1] += rng.uniform(-10, 10)
        lab[..., 2] += rng.uniform(-12, 12)
        x = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    # per-channel gain (white balance), contrast, gamma (camera response)
    if rng.random() < 0.7:
        f = x.astype(np.float32) / 255.0
        f = f * rng.uniform(0.88, 1.12, 3).astype(np.float32)
        mean = f.mean()
        f = (f - mean) * rng.uniform(0.75, 1.25) + mean
        f = np.clip(f, 0, 1) ** rng.uniform(0.75, 1.33)
        x = (f * 255.0 + 0.5).astype(np.uint8)
    # defocus
    r = rng.random()
    if r < 0.25:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*strength.blur_sigma))
    elif r < 0.35:  # mild sharpening (some cameras over-sharpen)
        b = cv2.GaussianBlur(x, (0, 0), 1.0)
        x = cv2.addWeighted(x, 1.0 + strength.sharpen, b, -strength.sharpen, 0)
    # sensor noise
    if rng.random() < 0.3:
        n = rng.normal(0, rng.uniform(1, strength.noise_max), x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + n, 0, 255).astype(np.uint8)
    # JPEG re-compression
    if rng.random() < 0.3:
        _, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(strength.jpeg_min_quality, 92))])
        x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(x)
