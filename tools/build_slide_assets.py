"""Build the white-cell sprite atlas that the virtual slide pastes into its fields.

    python tools/build_slide_assets.py --data ../shared/datasets [--out agent/assets/slide]

Reads only the first ``SPRITES_PER_CLASS`` files (sorted by name) of each ``pbc/<class>/`` folder:
the classifier trainer excludes exactly those, so the virtual slide never shows the classifier a cell
it was trained on. Each crop is cut out along the cell outline (nucleus + cytoplasm) so the red cells
around it in the crop are not pasted, colour-normalised to transmittance (crop background = 255), and
packed into one JPEG colour atlas plus one PNG alpha atlas with a JSON index. The output depends only
on the input files, so it can be committed and regenerated bit-for-bit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil")
SPRITES_PER_CLASS = 12
# The data-set README gives 0.12 um/px as nominal, but measured on these half-scale crops red cells
# are ~38 px across (7.5 um => 0.19 um/px) and the first 12 neutrophils ~71 px (12 um => 0.17 um/px).
# 0.17 makes the pasted cells the size of real ones next to the procedural red cells.
PBC_UM_PER_PX = 0.17
ATLAS_WIDTH_PX = 1024
JPEG_QUALITY = 92
# A crop's cell is at most ~16 um across; a larger mask means GrabCut swallowed a neighbour.
MAX_CELL_SIZE_PX = 135
MIN_CELL_AREA_PX = 900
# Crops whose automatic cut-out was checked by eye and found wrong (two cells merged, ...).
MANUAL_SKIP = frozenset({"BNE_104344.jpg"})


def _disk(radius_px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))


def background_bgr(img: np.ndarray) -> np.ndarray:
    """Plasma colour of a crop: the brightest tenth of its pixels are (almost) never stained."""
    f = img.astype(np.float32)
    grey = f.mean(axis=2)
    bright = grey >= np.percentile(grey, 90)
    return np.array([np.median(f[..., c][bright]) for c in range(3)], np.float32)


def segment_cell(img: np.ndarray) -> np.ndarray | None:
    """Binary mask (uint8 0/1) of the centred white cell, or None when no nucleus is found.

    The nucleus is found by its red-channel optical density (the blue/purple stain absorbs red, while
    haemoglobin transmits it); GrabCut then grows the cytoplasm from it, and an opening cuts off any
    red cell that GrabCut glued on through a narrow contact.
    """
    h, w = img.shape[:2]
    bg = background_bgr(img)
    od_red = -np.log(np.clip(img[..., 2].astype(np.float32) / bg[2], 1e-3, 1.0))
    nucleus = cv2.morphologyEx((od_red > 0.55).astype(np.uint8), cv2.MORPH_OPEN, _disk(2))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(nucleus)
    keep = np.zeros((h, w), np.uint8)
    for i in range(1, n):
        off_centre_px = np.hypot(centroids[i][0] - w / 2, centroids[i][1] - h / 2)
        if stats[i, cv2.CC_STAT_AREA] >= 40 and off_centre_px < 45:
            keep[labels == i] = 1
    if not keep.any():
        return None
    ys, xs = np.nonzero(keep)
    yy, xx = np.mgrid[0:h, 0:w]
    dist_px = np.hypot(xx - xs.mean(), yy - ys.mean())
    nucleus_radius_px = np.sqrt(keep.sum() / np.pi)
    gc = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    gc[dist_px < max(1.35 * nucleus_radius_px + 6, 30)] = cv2.GC_PR_FGD
    gc[dist_px > 62] = cv2.GC_BGD
    gc[cv2.dilate(keep, _disk(1)) > 0] = cv2.GC_FGD
    gc[:3, :] = gc[-3:, :] = cv2.GC_BGD
    gc[:, :3] = gc[:, -3:] = cv2.GC_BGD
    bg_model = np.zeros((1, 65), np.float64)
    fg_model = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means init is random; fix it so the build is reproducible
    cv2.grabCut(img, gc, None, bg_model, fg_model, 6, cv2.GC_INIT_WITH_MASK)
    cell = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    cell = np.maximum(cv2.morphologyEx(cell, cv2.MORPH_OPEN, _disk(6)), keep)
    _, labels = cv2.connectedComponents(cell)
    ids = [i for i in np.unique(labels[keep > 0]) if i != 0]
    cell = np.isin(labels, ids).astype(np.uint8)
    contours, _ = cv2.findContours(cell, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(cell)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return filled


def cut_sprite(img: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(transmittance BGR uint8, alpha uint8) cropped to the cell plus a 3 px margin, or None."""
    mask = segment_cell(img)
    if mask is None or mask.sum() < MIN_CELL_AREA_PX:
        return None
    x, y, w, h = cv2.boundingRect(mask)
    if max(w, h) > MAX_CELL_SIZE_PX or x == 0 or y == 0:
        return None
    if x + w >= img.shape[1] or y + h >= img.shape[0]:
        return None
    bg = background_bgr(img)
    trans = np.clip(img.astype(np.float32) / bg * 255.0, 0, 255).astype(np.uint8)
    # A 1-px feather hides the staircase of the binary outline once the sprite is rescaled.
    alpha = cv2.GaussianBlur(mask.astype(np.float32) * 255.0, (0, 0), 0.8)
    m = 3
    y0, y1 = max(y - m, 0), min(y + h + m, img.shape[0])
    x0, x1 = max(x - m, 0), min(x + w + m, img.shape[1])
    alpha_u8 = np.clip(alpha[y0:y1, x0:x1] + 0.5, 0, 255).astype(np.uint8)
    return trans[y0:y1, x0:x1].copy(), alpha_u8


def build(data_dir: Path, out_dir: Path) -> dict:
    sprites: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    skipped: list[str] = []
    for cls in CLASSES:
        folder = data_dir / "pbc" / cls
        files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".jpg")
        for name in files[:SPRITES_PER_CLASS]:
            if name in MANUAL_SKIP:
                skipped.append(f"{cls}/{name} (manual)")
                continue
            img = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"cannot read {folder / name}")
            cut = cut_sprite(img)
            if cut is None:
                skipped.append(f"{cls}/{name} (segmentation)")
                continue
            sprites.append((cls, name, cut[0], cut[1]))

    # Shelf packing in input order: deterministic and good enough for ~80 similar-sized sprites.
    placements = []
    x = y = shelf_h = 0
    for _, _, colour, _ in sprites:
        h, w = colour.shape[:2]
        if x + w > ATLAS_WIDTH_PX:
            x, y, shelf_h = 0, y + shelf_h, 0
        placements.append((x, y, w, h))
        x += w
        shelf_h = max(shelf_h, h)
    atlas_h = y + shelf_h
    colour_atlas = np.full((atlas_h, ATLAS_WIDTH_PX, 3), 255, np.uint8)
    alpha_atlas = np.zeros((atlas_h, ATLAS_WIDTH_PX), np.uint8)
    index = []
    for (cls, name, colour, alpha), (x, y, w, h) in zip(sprites, placements):
        colour_atlas[y : y + h, x : x + w] = colour
        alpha_atlas[y : y + h, x : x + w] = alpha
        index.append({"label": cls, "source": f"pbc/{cls}/{name}", "box": [x, y, w, h]})

    out_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_dir / "wbc_colour.jpg"), colour_atlas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    cv2.imwrite(str(out_dir / "wbc_alpha.png"), alpha_atlas, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    meta = {"um_per_px": PBC_UM_PER_PX, "colour": "wbc_colour.jpg", "alpha": "wbc_alpha.png", "sprites": index}
    (out_dir / "wbc_sprites.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    _write_attribution(out_dir, index, skipped)
    return {"sprites": len(index), "skipped": skipped}


def _write_attribution(out_dir: Path, index: list[dict], skipped: list[str]) -> None:
    lines = [
        "# Virtual-slide image assets",
        "",
        "`wbc_colour.jpg`, `wbc_alpha.png` and `wbc_sprites.json` are generated by",
        "`tools/build_slide_assets.py` from white-cell crops of:",
        "",
        "> Acevedo A, Merino A, Alférez S, Molina Á, Boldú L, Rodellar J. *A dataset of microscopic",
        "> peripheral blood cell images for development of automatic recognition systems.*",
        "> Data in Brief 30 (2020) 105474. Mendeley Data, doi:10.17632/snkd93bnjr.1.",
        "> Licence: Creative Commons Attribution 4.0 International (CC BY 4.0).",
        "",
        "Changes made: each crop (half-scale copy) was cut out along the cell outline (an automatic",
        "nucleus threshold + GrabCut mask), divided by its background colour (transmittance), and packed",
        "into an atlas. Only the first "
        f"{SPRITES_PER_CLASS} files by sorted name of each class folder were considered; the classifier",
        "trainer excludes these files. Red cells and platelets on the virtual slide are procedural.",
        "",
        "Files used (label, source file, box in the atlas x, y, w, h):",
        "",
    ]
    lines += [f"- {s['label']}: `{s['source']}` {s['box']}" for s in index]
    if skipped:
        lines += ["", "Considered but not used (cut-out failed):", ""]
        lines += [f"- `{s}`" for s in skipped]
    (out_dir / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared datasets folder")
    default_out = Path(__file__).resolve().parents[1] / "agent" / "assets" / "slide"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    if not (args.data / "pbc").is_dir():
        print(f"no pbc/ folder under {args.data}", file=sys.stderr)
        return 2
    summary = build(args.data, args.out)
    print(f"{summary['sprites']} sprites written to {args.out}; skipped: {summary['skipped'] or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
