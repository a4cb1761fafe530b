"""Save one virtual field in focus and 3 um above focus, for looking at by eye.

    python -m tests.virtual.preview_field [x_um y_um] [--out /tmp]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from agent.hardware.optics import Optics
from agent.hardware.virtual_slide import VirtualSlide


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("x_um", type=float, nargs="?", default=7000.0)
    parser.add_argument("y_um", type=float, nargs="?", default=9000.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    slide, optics, rng = VirtualSlide(), Optics(), np.random.default_rng(0)
    field = slide.render(args.x_um, args.y_um, 1920, 1200, 0.11)
    for dz_um in (0.0, 3.0):
        path = args.out / f"virtual_field_dz{dz_um:g}.png"
        cv2.imwrite(str(path), optics.image(field, dz_um, 0.11, rng))
        print(path)
    for cell in slide.truth(args.x_um, args.y_um, 1920, 1200, 0.11).cells:
        print(cell)


if __name__ == "__main__":
    main()
