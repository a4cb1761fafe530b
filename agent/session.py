"""A scan as a user starts it: its test directory, manifest, plan and resume."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import socket
import threading
from pathlib import Path
from typing import Callable

from agent import __version__
from agent.acquisition.plan import FieldPlan, serpentine
from agent.assembly import build_analyzer, measure_name, open_microscope
from agent.config import Settings, settings_from_dict
from agent.errors import ConfigError, InputError
from agent.results.record import FieldRecord
from agent.results.writer import MANIFEST_FILE, ResultWriter
from agent.scan import ScanProgress, ScanRunner, ScanSummary

TEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def device_id(settings: Settings) -> str:
    if settings.device.id:
        return settings.device.id
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "device"
    return f"wbcscope-{host}"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def default_test_id(settings: Settings) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{device_id(settings)}"[:64]


def check_test_id(test_id: str) -> str:
    if not TEST_ID.match(test_id):
        raise ConfigError(f"test id {test_id!r} must match [A-Za-z0-9_-]{{1,64}}")
    return test_id


def plan_for(settings: Settings) -> list[FieldPlan]:
    cam = settings.camera
    field_um = (cam.width_px * cam.um_per_px, cam.height_px * cam.um_per_px)
    sc = settings.scan
    plan = serpentine(tuple(sc.origin_um), tuple(sc.region_um), field_um, overlap=sc.overlap, max_fields=sc.fields)
    travel = settings.stage.travel_um
    for f in plan:
        if not (0 <= f.x_um <= travel[0] and 0 <= f.y_um <= travel[1]):
            raise ConfigError(
                f"scan: field {f.image_number} at ({f.x_um:.0f}, {f.y_um:.0f}) µm lies outside the stage "
                f"travel (stage.travel_um = {travel[:2]})"
            )
    return plan


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_resume(test_dir: Path) -> tuple[Settings, dict]:
    path = Path(test_dir) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"cannot resume {test_dir}: no {MANIFEST_FILE} (is it a wbcscope test directory?)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot resume {test_dir}: unreadable {MANIFEST_FILE}: {exc}") from None
    return settings_from_dict(manifest["config"], str(path)), manifest


class ScanSession:
    def __init__(self, settings: Settings, test_dir: Path, *, manifest: dict | None = None,
                 stop_event: threading.Event | None = None,
                 on_progress: Callable[[ScanProgress], None] | None = None,
                 on_record: Callable[[FieldRecord], None] | None = None) -> None:
        self.settings = settings
        self.test_dir = Path(test_dir)
        self.manifest = manifest
        self.stop_event = stop_event or threading.Event()
        self.on_progress = on_progress
        self.on_record = on_record
        self.stage = None
        """The stage while (and after) the scan runs: telemetry reads its serial error count."""

    def run(self) -> ScanSummary:
        settings = self.settings
        plan = plan_for(settings)
        analyzer = build_analyzer(settings)
        with ResultWriter(self.test_dir, fsync=settings.output.fsync) as writer:
            done = writer.load_records() if self.manifest else []
            self._check_resume(plan, done)
            if self.manifest:
                writer.remove_partial_images({r.image_number for r in done})
                writer.write_result_document()
            manifest = self.manifest or self._new_manifest(analyzer, len(plan))
            manifest.update(status="running", ended_utc=None)
            writer.write_json(MANIFEST_FILE, manifest)
            try:
                with open_microscope(settings) as scope:
                    self.stage = scope.stage
                    manifest["firmware"] = {"dialect": scope.firmware.dialect, "version": scope.firmware.version}
                    runner = ScanRunner(settings, scope.stage, scope.camera, analyzer, writer,
                                        stop_event=self.stop_event, on_progress=self.on_progress,
                                        on_record=self.on_record)
                    summary = runner.run(plan, done)
            except BaseException:
                # Record why the scan ended, then let the error reach the user unchanged.
                manifest.update(status="failed", ended_utc=utc_now())
                _try_write_manifest(writer, manifest)
                raise
            manifest.update(
                status="interrupted" if summary.stopped_early and self.stop_event.is_set() else "complete",
                ended_utc=utc_now(), fields_done=summary.fields,
            )
            writer.write_json(MANIFEST_FILE, manifest)
        return summary

    def _check_resume(self, plan: list[FieldPlan], done: list) -> None:
        by_number = {f.image_number: f for f in plan}
        for record in done:
            f = by_number.get(record.image_number)
            if f is None or (int(round(f.x_um)), int(round(f.y_um))) != (record.x_um, record.y_um):
                raise InputError(
                    f"cannot resume {self.test_dir}: field {record.image_number} on disk does not match "
                    "the scan plan in its manifest"
                )

    def _new_manifest(self, analyzer, planned: int) -> dict:
        s = self.settings
        return {
            "test_id": self.test_dir.name,
            "sample_id": s.test.sample_id,
            "operator": s.test.operator,
            "device_id": device_id(s),
            "software": {"name": "wbcscope", "version": __version__},
            "models": {
                "detector": {"name": analyzer.detector.name, "files": _model_files(analyzer.detector)},
                "classifier": {"name": analyzer.classifier.name, "files": _model_files(analyzer.classifier)},
            },
            "focus_measure": measure_name(s),
            "um_per_px": s.camera.um_per_px,
            "fields_planned": planned,
            "config": s.to_dict(),
            "started_utc": utc_now(),
            "ended_utc": None,
        }


def _model_files(component) -> dict[str, str]:
    paths = getattr(component, "model_files", [])
    return {Path(p).name: file_sha256(Path(p)) for p in paths}


def _try_write_manifest(writer: ResultWriter, manifest: dict) -> None:
    from agent.errors import OutputError

    try:
        writer.write_json(MANIFEST_FILE, manifest)
    except OutputError:
        pass  # the disk is what failed; the original error says so
