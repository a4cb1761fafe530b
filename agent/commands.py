"""What each ``wbcscope`` subcommand does, given parsed arguments. Returns the process exit code."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from agent.config import load_settings, simulation_overrides
from agent.errors import ConfigError
from agent.scan import ScanProgress, ScanSummary


def scan(args: argparse.Namespace) -> int:
    from agent.publish.hooks import ScanPublisher
    from agent.session import ScanSession, check_test_id, default_test_id, load_resume

    if args.resume is not None:
        settings, manifest = load_resume(args.resume)
        test_dir = Path(args.resume)
    else:
        overrides = simulation_overrides(simulate=args.simulate, zero_delay=args.zero_delay)
        for flag, key in (("fields", "scan.fields"), ("wbc_target", "scan.wbc_target"),
                          ("sample_id", "test.sample_id"), ("operator", "test.operator"),
                          ("stage_port", "stage.port")):
            if getattr(args, flag) is not None:
                overrides[key] = getattr(args, flag)
        settings = load_settings(args.config, overrides)
        test_id = check_test_id(args.test_id) if args.test_id else default_test_id(settings)
        test_dir = args.out / test_id
        if (test_dir / "manifest.json").exists():
            raise ConfigError(f"{test_dir} already holds a test; use --resume {test_dir} or another --test-id")
        manifest = None

    stop = threading.Event()
    progress = None if args.no_progress or not sys.stderr.isatty() else ProgressBar()
    publisher = ScanPublisher(settings, test_dir)
    session = ScanSession(settings, test_dir, manifest=manifest, stop_event=stop,
                          on_progress=progress.update if progress else None, on_record=publisher.on_record)
    with _stop_on_signals(stop), publisher:
        summary = session.run()
    if progress:
        progress.finish()
    print_summary(test_dir, summary)
    return 130 if summary.stopped_early and stop.is_set() else 0


def analyze(args: argparse.Namespace) -> int:
    from agent.analyze import analyze_directory
    from agent.assembly import build_analyzer

    overrides = {"camera.um_per_px": args.um_per_px} if args.um_per_px is not None else {}
    settings = load_settings(args.config, overrides)
    report = analyze_directory(args.directory, args.out, build_analyzer(settings), fsync=settings.output.fsync)
    for line in report.skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"analysed {report.fields} field(s), {report.cells} WBC(s) -> {Path(args.out) / 'analyze_result.json'}")
    return 0


def stage_emulator(args: argparse.Namespace) -> int:
    from firmware_interface.emulator import serve

    stop = threading.Event()
    with _stop_on_signals(stop):
        serve(args.dialect, realtime=not args.zero_delay, stop=stop)
    return 0


class _stop_on_signals:
    """SIGINT/SIGTERM ask the scan to finish its current field and stop; a second SIGINT aborts."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()

    def __enter__(self) -> "_stop_on_signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class ProgressBar:
    WIDTH = 30

    def update(self, p: ScanProgress) -> None:
        filled = int(self.WIDTH * p.fields_done / max(1, p.fields_planned))
        rate = p.elapsed_s / max(1, p.fields_done)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {p.fields_done}/{p.fields_planned} fields"
            f"  {p.wbc_found} WBC  {rate:.1f} s/field"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


def print_summary(test_dir: Path, summary: ScanSummary) -> None:
    print(f"test directory: {test_dir}")
    print(f"fields: {summary.fields}   WBCs: {summary.wbc}   time: {summary.elapsed_s:.1f} s")
    for name, count in summary.counts.most_common():
        share = 100.0 * count / max(1, summary.wbc)
        print(f"  {name:<12} {count:>5}  {share:5.1f} %")
    if summary.to_review:
        print(f"to review (classifier confidence under the threshold, or a WBC-sized cell called platelet): "
              f"{summary.to_review} cell(s)")
    if summary.flagged_fields:
        print(f"flagged fields (autofocus failed): {summary.flagged_fields}")
    if summary.failed_fields:
        print(f"failed fields (no images, camera error): {summary.failed_fields}")
    if summary.stopped_early:
        print(f"stopped before the plan was complete: {summary.stop_reason}")
