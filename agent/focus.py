"""Focus measures for choosing the sharpest plane of a z-stack.

Every operator maps one image (or a region of it) to a float that grows as the image gets sharper.
All are whole-array OpenCV calls: a full 1920x1200 frame takes a few milliseconds on one core, so
focus can be scored for every plane while the stage is still moving.

The default operator was chosen on real data (``benchmarks/focus_measures.py``): on the miLab 0152
stack it is unimodal, peaks at the device's own sharpest plane and ranks the planes like the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

FocusFn = Callable[[np.ndarray], float]

# JPEG quality for the ``jpeg_size`` proxy: high enough that fine detail survives the quantiser (so
# sharper planes cost more bytes), low enough to stay fast.
_JPEG_QUALITY = 90


def _as_float(gray: np.ndarray) -> np.ndarray:
    return gray.astype(np.float32, copy=False)


def variance(gray: np.ndarray) -> float:
    """Grey-level variance. Contrast, not sharpness: on bright-field stacks it can peak off focus."""
    _, std = cv2.meanStdDev(gray)
    return float(std[0, 0] ** 2)


def normalized_variance(gray: np.ndarray) -> float:
    """Variance divided by the mean, so exposure changes between planes cancel to first order."""
    mean, std = cv2.meanStdDev(gray)
    mean_val = float(mean[0, 0])
    return float(std[0, 0] ** 2) / mean_val if mean_val > 0 else 0.0


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (second derivative: strongly weights fine detail)."""
    lap = cv2.Laplacian(gray, cv2.CV_16S, ksize=1)
    _, std = cv2.meanStdDev(lap)
    return float(std[0, 0] ** 2)


def tenengrad(gray: np.ndarray) -> float:
    """Mean squared 3x3 Sobel gradient magnitude."""
    gx = cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3)
    n_px = gray.shape[0] * gray.shape[1]
    return (cv2.norm(gx, cv2.NORM_L2SQR) + cv2.norm(gy, cv2.NORM_L2SQR)) / n_px


def brenner(gray: np.ndarray) -> float:
    """Mean squared difference between pixels two apart, horizontally and vertically.

    The two-pixel step makes it less sensitive to pixel noise than a one-pixel difference.
    """
    h, w = gray.shape[:2]
    dx = cv2.norm(gray[:, 2:], gray[:, :-2], cv2.NORM_L2SQR)
    dy = cv2.norm(gray[2:, :], gray[:-2, :], cv2.NORM_L2SQR)
    return (dx + dy) / (h * w)


def vollath_f4(gray: np.ndarray) -> float:
    """Vollath's F4 autocorrelation, mean I(x)I(x+1) - mean I(x)I(x+2), horizontal plus vertical.

    Means rather than sums so that a flat image scores exactly 0 (the two sums run over different
    pixel counts). Products are summed via sum a*b = (|a|^2 + |b|^2 - |a-b|^2) / 2 so that only
    cv2.norm calls on views are needed, with no full-frame temporaries.
    """
    img = _as_float(gray)
    h, w = img.shape[:2]

    def mean_product(a: np.ndarray, b: np.ndarray) -> float:
        total = cv2.norm(a, cv2.NORM_L2SQR) + cv2.norm(b, cv2.NORM_L2SQR) - cv2.norm(a, b, cv2.NORM_L2SQR)
        return 0.5 * total / (a.shape[0] * a.shape[1])

    horizontal = mean_product(img[:, :-1], img[:, 1:]) - mean_product(img[:, :-2], img[:, 2:])
    vertical = mean_product(img[:-1, :], img[1:, :]) - mean_product(img[:-2, :], img[2:, :])
    return horizontal + vertical


def jpeg_size(gray: np.ndarray) -> float:
    """Encoded JPEG size in bytes per pixel: sharp detail is expensive to compress."""
    ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image")
    return float(buf.size) / (gray.shape[0] * gray.shape[1])


MEASURES: dict[str, FocusFn] = {
    "variance": variance,
    "normalized_variance": normalized_variance,
    "laplacian_variance": laplacian_variance,
    "tenengrad": tenengrad,
    "brenner": brenner,
    "vollath_f4": vollath_f4,
    "jpeg_size": jpeg_size,
}

DEFAULT_MEASURE = "laplacian_variance"
"""Chosen on the miLab 0152 stack (benchmarks/focus_measures.py): the only operator whose curve is
strictly unimodal there, peaking at the device's plane 5 on full and truncated stacks, with the same
plane ranking as the device's own measure. The first-derivative operators (Brenner, Tenengrad,
Vollath, JPEG size) peak one plane late and dip at plane 2; variance peaks at the far end."""

# focus_index multiplies the measure by this before rounding. Laplacian variances of 0.11 um/px
# smear frames are O(10..1000) grey levels squared; x100 keeps two decimals, so planes whose scores
# differ by well under 1 % still get distinct integers, and stays far below 2**31.
FOCUS_INDEX_SCALE = 100.0


def _prepare(
    image: np.ndarray, roi: tuple[int, int, int, int] | None, downsample: int, channel: str
) -> np.ndarray:
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x 3 image, got shape {image.shape}")
    if roi is not None:
        x, y, w, h = (int(v) for v in roi)
        if w <= 0 or h <= 0:
            raise ValueError(f"roi must have positive width and height, got {roi}")
        img_h, img_w = image.shape[:2]
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(img_w, x + w), min(img_h, y + h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            raise ValueError(f"roi {roi} leaves fewer than 3x3 pixels inside a {img_w}x{img_h} image")
        image = image[y0:y1, x0:x1]
    if image.ndim == 3:
        if channel == "green":
            # Green carries most of the stain contrast in MGG smears and is the cleanest Bayer channel.
            gray = cv2.extractChannel(image, 1)
        elif channel == "gray":
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        else:
            raise ValueError(f"channel must be 'green' or 'gray', got {channel!r}")
    else:
        gray = image
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    if downsample > 1:
        h, w = gray.shape[:2]
        size = (max(3, w // downsample), max(3, h // downsample))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


def focus_measure(
    image_bgr: np.ndarray,
    measure: str = DEFAULT_MEASURE,
    *,
    roi: tuple[int, int, int, int] | None = None,
    downsample: int = 1,
    channel: str = "green",
) -> float:
    """Sharpness of ``image_bgr`` (BGR uint8, or a single channel) by the named operator.

    ``roi`` is ``[x, y, w, h]`` in pixels, clipped to the image. ``downsample`` averages
    ``downsample x downsample`` blocks first (values are then not comparable with full resolution).
    """
    try:
        fn = MEASURES[measure]
    except KeyError:
        raise ValueError(f"unknown focus measure {measure!r}; known: {sorted(MEASURES)}") from None
    return float(fn(_prepare(image_bgr, roi, downsample, channel)))


def focus_index(value: float) -> int:
    """The non-negative integer written into plane file names: ``round(value * FOCUS_INDEX_SCALE)``.

    With the default measure the 0.11 um/px miLab 0152 stack scores 44..169, i.e. indices
    4,365..16,860: the same order of magnitude as the device's own numbers (14,361..22,250), though
    not the same scale. Indices are comparable only between frames scored with the same measure,
    channel, roi and downsample.
    """
    if not np.isfinite(value):
        raise ValueError(f"focus value must be finite, got {value}")
    return max(0, int(round(float(value) * FOCUS_INDEX_SCALE)))


def best_plane(
    images: Sequence[np.ndarray],
    measure: str = DEFAULT_MEASURE,
    roi: tuple[int, int, int, int] | None = None,
) -> int:
    """Index of the sharpest image in ``images`` (first one on ties)."""
    if len(images) == 0:
        raise ValueError("best_plane needs at least one image")
    scores = [focus_measure(img, measure, roi=roi) for img in images]
    return int(np.argmax(scores))
