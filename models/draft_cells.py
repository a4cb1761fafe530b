"""Draft a cell list (``models/device_cells.py``'s format) from a finished scan, for a person to check.

Adapting the classifier to a new microscope needs about a hundred of its white cells with a class a person
has confirmed (README, "Another microscope"). A scan on that microscope already found and named them; this
turns its ``fields.jsonl`` into such a list::

    python -m models.draft_cells scans/20261122T115745Z_dev1 --out dev1_cells.csv

Each row is one detected cell in the plane where it is sharpest, with the model's class as the ``label``
and ``certain`` set to ``no``: nothing counts until a person has looked at the cell, corrected the label if
needed and written ``yes``. Fields alternate between the parts (even image numbers train, odd evaluate), so
one field's cells never sit on both sides. All fields of one scan come from one smear, so the evaluation
part measures that smear; a second slide scanned the same way makes a fairer evaluation part.
The images folder for the next steps is the scan directory itself, and its scale is ``um_per_px`` in its
``manifest.json`` (printed on stderr).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TextIO

from agent.errors import InputError
from agent.publish.messages import read_manifest, read_records
from agent.results.record import FieldRecord
from agent.results.writer import FIELDS_FILE
from models.device_cells import COLUMNS, LabelledCell


def _cell_image(record: FieldRecord, focus: int) -> str | None:
    """The kept plane in which the cell is sharpest, else the field's best plane if it was kept."""
    for plane in record.planes:
        if plane.stack_index == focus and plane.kept:
            return plane.filename
    best = record.planes[record.best_plane]
    return best.filename if best.kept else None


def draft(scan_dir: Path) -> tuple[list[LabelledCell], int]:
    """The scan's detected cells as unconfirmed rows, and how many were left out for want of a kept plane."""
    path = Path(scan_dir) / FIELDS_FILE
    if not path.is_file():
        found = sorted(p.parent.name for p in Path(scan_dir).glob(f"*/{FIELDS_FILE}"))
        hint = f"; scans inside it: {', '.join(found)}" if found else ""
        raise FileNotFoundError(f"{path} does not exist: not a finished scan's directory{hint}")
    cells, missing = [], 0
    for record in read_records(scan_dir):
        if record.failed:
            continue
        part = "train" if record.image_number % 2 == 0 else "eval"
        for cell in record.cells:
            image = _cell_image(record, cell.focus)
            if image is None or not (Path(scan_dir) / image).is_file():
                missing += 1
                continue
            cells.append(LabelledCell(image, tuple(cell.location), cell.label, False, part))
    return cells, missing


def write(cells: list[LabelledCell], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in cells:
        writer.writerow([c.image, *c.box, c.label, "yes" if c.certain else "no", c.part])


def scan_scale(scan_dir: Path) -> float | None:
    try:
        return float(read_manifest(scan_dir)["um_per_px"])
    except (InputError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scan", type=Path, help="a finished scan's directory (the one holding fields.jsonl)")
    ap.add_argument("--out", type=Path, default=None, help="the cell list to write (default: stdout)")
    args = ap.parse_args(argv)
    try:
        cells, missing = draft(args.scan)
    except (OSError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        write(cells, sys.stdout)
    else:
        with open(args.out, "w", newline="") as fh:
            write(cells, fh)
    scale = scan_scale(args.scan)
    print(f"{len(cells)} cells drafted, all certain=no until checked"
          + (f"; {missing} left out (their plane's JPEG was not kept)" if missing else ""), file=sys.stderr)
    print(f"images: {args.scan}   um_per_px: {scale if scale is not None else 'unknown (no readable manifest.json)'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
