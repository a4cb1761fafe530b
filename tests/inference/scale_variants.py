"""The bundled PBC validation crops the classifier tests use (the variants are in ``models/crop_variants.py``)."""

from __future__ import annotations

from pathlib import Path

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "models" / "samples").glob("*__*.jpg"))
PBC_UM_PER_PX = 0.12  # what the data set says; really ~0.17, so even the original is "wrong" for the hint


def label_of(path: Path) -> str:
    return path.name.split("__")[0]
