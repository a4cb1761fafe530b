"""The ``wbcscope`` command line: parses arguments and hands them to the commands in agent.commands."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.errors import ConfigError, WbcscopeError
from firmware_interface.errors import StageError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wbcscope", description="Automated WBC differential microscope agent.")
    parser.add_argument("--version", action="version", version=f"wbcscope {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="scan a slide (the built-in virtual slide when no hardware is configured)")
    scan.add_argument("--config", type=Path, help="TOML settings file")
    scan.add_argument("--out", type=Path, default=Path("scans"), help="directory that receives OUT/<test_id>/")
    scan.add_argument("--simulate", action="store_true", help="use the virtual microscope whatever the config says")
    scan.add_argument("--zero-delay", action="store_true", help="simulated hardware without waits (tests, demos)")
    scan.add_argument("--fields", type=int, help="number of fields to scan")
    scan.add_argument("--wbc-target", type=int, help="stop once this many WBCs are found")
    scan.add_argument("--test-id", help="name of the test directory ([A-Za-z0-9_-]{1,64})")
    scan.add_argument("--sample-id", help="sample id recorded in the manifest")
    scan.add_argument("--operator", help="operator recorded in the manifest")
    scan.add_argument("--stage-port", help="serial port or pyserial URL of the stage controller")
    scan.add_argument("--resume", type=Path, metavar="TEST_DIR", help="continue an interrupted scan")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar")

    analyze = sub.add_parser("analyze", help="re-analyse a directory of miLab-named z-stacks")
    analyze.add_argument("directory", type=Path)
    analyze.add_argument("--out", type=Path, required=True, help="directory for analyze_result.json")
    analyze.add_argument("--config", type=Path, help="TOML settings file")
    analyze.add_argument("--um-per-px", type=float, help="image scale (default: camera.um_per_px)")

    emu = sub.add_parser("stage-emulator", help="run an emulated stage controller on a pseudo-terminal")
    emu.add_argument("--dialect", choices=("grbl", "sangaboard"), default="grbl")
    emu.add_argument("--zero-delay", action="store_true", help="moves complete instantly")

    from agent import calibrate_cli, commands, inference_cli, preview, publish_cli, stage_cli

    publish_cli.add_parser(sub)
    inference_cli.add_parser(sub)

    stage_cli.add_parser(sub)
    calibrate_cli.add_parser(sub).set_defaults(handler=calibrate_cli.run)
    preview.add_parser(sub).set_defaults(handler=preview.run)

    scan.set_defaults(handler=commands.scan)
    analyze.set_defaults(handler=commands.analyze)
    emu.set_defaults(handler=commands.stage_emulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"wbcscope: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (WbcscopeError, StageError) as exc:
        print(f"wbcscope: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("wbcscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
