"""The scan loop: acquisition of field n+1 overlaps the processing of field n.

The calling thread moves the stage, focuses and takes stacks; one worker thread analyses each stack and
writes its files. At most ``queue_depth`` stacks wait for the worker: when it falls behind, acquisition
waits (backpressure) rather than filling memory. Errors raised in the worker surface in the caller at
the next hand-over, and stop the scan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from agent import focus
from agent.acquisition.autofocus import AutofocusResult, build_focuser
from agent.acquisition.plan import FieldPlan
from agent.acquisition.stack import capture_stack
from agent.config import Settings
from agent.errors import CameraError, ScanAborted
from agent.field_analysis import FieldAnalyzer, Plane
from agent.hardware.camera import Camera
from agent.inference.base import CODE_NAMES
from agent.results.names import format_name
from agent.results.record import FieldRecord, PlaneRecord
from agent.results.writer import ResultWriter
from firmware_interface.errors import PositionLostError
from firmware_interface.stage import Stage

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_CAMERA_FAILURES = 3


@dataclass
class Acquired:
    plan: FieldPlan
    planes: list[Plane]
    autofocus: AutofocusResult
    stage_um: tuple[float, float, float]
    timings_s: dict[str, float]


@dataclass
class ScanProgress:
    fields_done: int
    fields_planned: int
    wbc_found: int
    elapsed_s: float


@dataclass
class ScanSummary:
    fields: int = 0
    wbc: int = 0
    counts: Counter = field(default_factory=Counter)
    flagged_fields: list[int] = field(default_factory=list)
    failed_fields: list[int] = field(default_factory=list)
    to_review: int = 0
    """Classified cells whose confidence was under inference.review_threshold."""
    elapsed_s: float = 0.0
    stopped_early: bool = False
    stop_reason: str = ""

    def add(self, record: FieldRecord) -> None:
        self.fields += 1
        self.wbc += len(record.cells)
        self.counts.update(CODE_NAMES[c.prediction] for c in record.cells)
        self.to_review += sum(c.review for c in record.cells)
        if record.failed:
            self.failed_fields.append(record.image_number)
        elif record.flags:
            self.flagged_fields.append(record.image_number)


def keep_range(keep: str, best: int, count: int) -> range:
    """Stack positions whose JPEGs are written under the 'all' / 'best+-K' policy."""
    if keep == "all":
        return range(count)
    k = int(keep.replace("best", "").lstrip("+-±"))
    return range(max(0, best - k), min(count, best + k + 1))


class ScanRunner:
    def __init__(
        self, settings: Settings, stage: Stage, camera: Camera, analyzer: FieldAnalyzer,
        writer: ResultWriter, *, stop_event: threading.Event | None = None,
        on_progress: Callable[[ScanProgress], None] | None = None,
        on_record: Callable[[FieldRecord], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.camera = camera
        self.analyzer = analyzer
        self.writer = writer
        self.stop_event = stop_event or threading.Event()
        self.on_progress = on_progress
        self.on_record = on_record
        self.focuser = build_focuser(settings, stage, camera, analyzer.measure)

    def run(self, plan: list[FieldPlan], done: list[FieldRecord]) -> ScanSummary:
        summary = ScanSummary()
        for record in done:
            summary.add(record)
        done_numbers = {r.image_number for r in done}
        todo = [f for f in plan if f.image_number not in done_numbers]
        for record in done:
            if record.autofocus.get("success") and record.stage_um:
                self.focuser.remember(record.stage_um[0], record.stage_um[1], float(record.autofocus["z_um"]))
        start = time.perf_counter()
        if self.on_progress is not None:
            self.on_progress(ScanProgress(summary.fields, len(plan), summary.wbc, 0.0))
        pending: deque[Future] = deque()
        camera_failures = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="process") as worker:
            for field_plan in todo:
                if self.stop_event.is_set() or self._target_reached(summary):
                    summary.stopped_early = True
                    summary.stop_reason = "stop requested" if self.stop_event.is_set() else "WBC target reached"
                    break
                try:
                    acquired = self._acquire(field_plan)
                except CameraError as exc:
                    # The camera was already reopened once (ResilientCamera): mark the field, go on,
                    # and give up only when the camera stays dead.
                    camera_failures += 1
                    if camera_failures >= MAX_CONSECUTIVE_CAMERA_FAILURES:
                        raise ScanAborted(
                            f"camera failed on {camera_failures} fields in a row (last: {exc}); scan stopped"
                        ) from None
                    log.error("field %d marked failed: %s", field_plan.image_number, exc)
                    pending.append(worker.submit(self._record_failure, field_plan, str(exc)))
                    continue
                camera_failures = 0
                pending.append(worker.submit(self._process, acquired))
                while pending and (len(pending) > self.settings.scan.queue_depth or pending[0].done()):
                    self._collect(pending.popleft(), summary, len(plan), start)
            while pending:
                self._collect(pending.popleft(), summary, len(plan), start)
        summary.elapsed_s = time.perf_counter() - start
        return summary

    # -- acquisition (calling thread) --------------------------------------------------------------
    def _acquire(self, field_plan: FieldPlan) -> Acquired:
        """Acquire one field; a controller that lost its position is handled per stage.on_position_loss."""
        try:
            return self._acquire_once(field_plan)
        except PositionLostError as exc:
            if self.settings.stage.on_position_loss != "rehome":
                raise ScanAborted(
                    f"stage position lost before field {field_plan.image_number} ({exc}); scan stopped "
                    "(stage.on_position_loss = 'stop'); home the stage and resume with --resume"
                ) from None
            log.warning("stage position lost (%s): homing, then field %d again", exc, field_plan.image_number)
            self.stage.home(timeout_s=self.settings.stage.move_timeout_s)
            return self._acquire_once(field_plan)

    def _acquire_once(self, field_plan: FieldPlan) -> Acquired:
        s = self.settings
        t0 = time.perf_counter()
        self.stage.move_to(x_um=field_plan.x_um, y_um=field_plan.y_um, timeout_s=s.stage.move_timeout_s)
        t1 = time.perf_counter()
        af = self.focuser.focus_field(field_plan.x_um, field_plan.y_um)
        t2 = time.perf_counter()
        planes = capture_stack(
            self.stage, self.camera, af.z_um, s.stack.planes, s.stack.step_um,
            move_timeout_s=s.stage.move_timeout_s, capture_timeout_s=s.camera.capture_timeout_s,
        )
        t3 = time.perf_counter()
        pos = (field_plan.x_um, field_plan.y_um, af.z_um)
        timings = {"move": t1 - t0, "autofocus": t2 - t1, "stack": t3 - t2}
        return Acquired(field_plan, planes, af, pos, timings)

    def _collect(self, future: Future, summary: ScanSummary, planned: int, start: float) -> None:
        record = future.result()  # re-raises the worker's error here, stopping the scan
        summary.add(record)
        if self.on_record is not None and not record.failed:
            self.on_record(record)
        if self.on_progress is not None:
            self.on_progress(ScanProgress(summary.fields, planned, summary.wbc, time.perf_counter() - start))

    def _target_reached(self, summary: ScanSummary) -> bool:
        target = self.settings.scan.wbc_target
        return target > 0 and summary.wbc >= target

    def _process(self, acquired: Acquired) -> FieldRecord:
        return process_field(acquired, self.analyzer, self.writer, self.settings)

    def _record_failure(self, field_plan: FieldPlan, reason: str) -> FieldRecord:
        record = FieldRecord(
            image_number=field_plan.image_number, x_um=int(round(field_plan.x_um)),
            y_um=int(round(field_plan.y_um)), planes=[], best_plane=-1, cells=[],
            focus_measure=self.analyzer.measure, flags=[f"camera: {reason}"], failed=f"camera: {reason}",
        )
        self.writer.add_field(record)
        return record


def process_field(acquired: Acquired, analyzer: FieldAnalyzer, writer: ResultWriter, settings: Settings) -> FieldRecord:
    """Analyse one acquired stack, write its planes and its record (runs on the worker thread)."""
    analysis = analyzer.analyze(acquired.planes)
    plan = acquired.plan
    kept = keep_range(settings.stack.keep, analysis.best_plane, len(acquired.planes))
    planes = []
    for pos, (plane, value) in enumerate(zip(acquired.planes, analysis.focus_values)):
        fm = focus.focus_index(value)
        name = format_name(plan.image_number, plan.x_um, plan.y_um, plane.stack_index, fm)
        planes.append(PlaneRecord(plane.stack_index, round(value, 6), fm, name, pos in kept, plane.z_um))
    t0 = time.perf_counter()
    for plane, rec in zip(acquired.planes, planes):
        if rec.kept:
            writer.write_plane(rec.filename, plane.image, settings.output.jpeg_quality)
    timings = {**acquired.timings_s, **analysis.timings_s, "write_jpeg": time.perf_counter() - t0}
    af = acquired.autofocus
    record = FieldRecord(
        image_number=plan.image_number,
        x_um=int(round(plan.x_um)),
        y_um=int(round(plan.y_um)),
        planes=planes,
        best_plane=analysis.best_plane,
        cells=analysis.cells,
        focus_measure=analyzer.measure,
        stage_um=tuple(round(v, 3) for v in acquired.stage_um),
        autofocus=af.as_dict(),
        timings_s={k: round(v, 4) for k, v in timings.items()},
        flags=[] if af.success else [f"autofocus: {af.reason}"],
    )
    writer.add_field(record)
    return record
