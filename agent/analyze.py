"""Re-analyse a directory of miLab-named z-stacks into a fresh analyze_result.json and fields.jsonl."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from agent import __version__, focus
from agent.errors import InputError
from agent.field_analysis import FieldAnalyzer, Plane
from agent.results.names import PlaneName, parse_name
from agent.results.record import FieldRecord, PlaneRecord
from agent.results.writer import FIELDS_FILE, MANIFEST_FILE, RESULT_FILE, ResultWriter


@dataclass
class AnalyzeReport:
    fields: int = 0
    cells: int = 0
    skipped: list[str] = field(default_factory=list)
    """'file: reason' for each miLab-named file that could not be used."""


def group_stacks(directory: Path) -> dict[int, list[tuple[PlaneName, Path]]]:
    """miLab-named files by image number, planes ordered by stack index; other files are ignored."""
    groups: dict[int, list[tuple[PlaneName, Path]]] = defaultdict(list)
    for path in sorted(directory.iterdir()):
        parsed = parse_name(path.name)
        if parsed is not None and path.is_file():
            groups[parsed.image_number].append((parsed, path))
    return {n: sorted(g, key=lambda item: item[0].stack_index) for n, g in sorted(groups.items())}


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def analyze_directory(source: Path, out: Path, analyzer: FieldAnalyzer, *, fsync: bool = True) -> AnalyzeReport:
    source, out = Path(source).resolve(), Path(out).resolve()
    if not source.is_dir():
        raise InputError(f"{source} is not a directory")
    if _inside(out, source):
        raise InputError(f"--out {out} lies inside the input directory; analyze never writes into its input")
    groups = group_stacks(source)
    if not groups:
        raise InputError(f"no miLab-named images (IIII_X_Y_SSS_FM.jpg) in {source}")
    report = AnalyzeReport()
    with ResultWriter(out, fsync=fsync) as writer:
        for name in (FIELDS_FILE, RESULT_FILE):
            (out / name).unlink(missing_ok=True)  # a re-run replaces the previous analysis
        for number, members in groups.items():
            decoded = []
            for parsed, path in members:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    report.skipped.append(f"{path.name}: cannot be decoded as an image")
                else:
                    decoded.append((parsed, path, image))
            if not decoded:
                continue
            shapes = {image.shape for _, _, image in decoded}
            if len(shapes) > 1:
                report.skipped.append(f"image {number}: planes differ in size {sorted(shapes)}; field skipped")
                continue
            analysis = analyzer.analyze([Plane(stack_index=p.stack_index, image=im) for p, _, im in decoded])
            plane_records = [
                PlaneRecord(p.stack_index, round(v, 6), focus.focus_index(v), path.name, True)
                for (p, path, _), v in zip(decoded, analysis.focus_values)
            ]
            first = decoded[0][0]
            writer.add_field(FieldRecord(
                image_number=number, x_um=first.x_um, y_um=first.y_um, planes=plane_records,
                best_plane=analysis.best_plane, cells=analysis.cells, focus_measure=analyzer.measure,
                timings_s=analysis.timings_s,
            ))
            report.fields += 1
            report.cells += len(analysis.cells)
        if report.fields == 0:
            raise InputError(f"no usable stack in {source}: " + "; ".join(report.skipped))
        writer.write_json(MANIFEST_FILE, {
            "source": str(source),
            "software": {"name": "wbcscope", "version": __version__},
            "focus_measure": analyzer.measure,
            "um_per_px": analyzer.um_per_px,
            "detector": analyzer.detector.name,
            "classifier": analyzer.classifier.name,
            "fields": report.fields,
            "skipped": report.skipped,
        })
    return report
