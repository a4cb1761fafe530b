"""The ``run``, ``publish`` and ``fleet`` subcommands: their arguments and what they do.

``add_parser(subparsers)`` registers them on the main parser (agent/cli.py); ``run(args)`` executes the
one chosen. ``python -m agent.publish_cli`` runs them on their own (tests, before the wiring lands).
Broker credentials come from the config file or the environment, never from the command line, where
any user on the machine could read them in the process list.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path

from agent.config import load_settings, simulation_overrides
from agent.errors import ConfigError, InputError


def add_parser(subparsers) -> None:
    run = subparsers.add_parser("run", help="the daemon: publish results over MQTT, take remote commands")
    run.add_argument("--config", type=Path, help="TOML settings file ([mqtt], [daemon], hardware)")
    run.add_argument("--simulate", action="store_true", help="use the virtual microscope whatever the config says")
    run.add_argument("--zero-delay", action="store_true", help="simulated hardware without waits (tests, demos)")

    pub = subparsers.add_parser("publish", help="send a finished scan's results to the MQTT broker")
    pub.add_argument("test_dir", type=Path, metavar="OUT/TEST_ID")
    pub.add_argument("--config", type=Path, help="TOML settings file with the [mqtt] section")
    pub.add_argument("--timeout-s", type=float, default=60.0, help="give up waiting for the broker after this")
    pub.add_argument("--again", action="store_true", help="send every result again, even ones already sent")

    fleet_parser = subparsers.add_parser("fleet", help="live view of every wbcscope device under a broker")
    fleet_parser.add_argument("--config", type=Path, help="TOML settings file with the [mqtt] section")
    fleet_parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    fleet_parser.add_argument("--json", action="store_true", help="print JSON (with --once)")
    fleet_parser.add_argument("--wait-s", type=float, default=1.5, help="how long --once listens after subscribing")
    fleet_parser.add_argument("--refresh-s", type=float, default=1.0, help="redraw period of the live view")
    run.set_defaults(handler=run_daemon)
    pub.set_defaults(handler=publish)
    fleet_parser.set_defaults(handler=fleet)


def run_daemon(args: argparse.Namespace) -> int:
    from agent.daemon import Daemon

    overrides = simulation_overrides(simulate=args.simulate, zero_delay=args.zero_delay)
    settings = load_settings(args.config, overrides)
    stop = threading.Event()
    daemon = Daemon(settings, config_path=args.config, overrides=overrides, stop=stop)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Only flag the stop: the main loop finishes the current field, flushes and says offline.
            previous[sig] = signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        return daemon.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def publish(args: argparse.Namespace) -> int:
    from agent.publish.messages import SUMMARY_INDEX, ResultQueue, read_manifest
    from agent.publish.mqtt import MqttLink
    from agent.publish.outbox import Forwarder, Outbox, default_state_dir

    settings = load_settings(args.config)
    if not settings.mqtt.host:
        raise ConfigError("publish needs a broker: set mqtt.host in the config file")
    test_dir = Path(args.test_dir)
    if not test_dir.is_dir():
        raise InputError(f"{test_dir} is not a directory")
    manifest = read_manifest(test_dir)
    state_dir = Path(settings.daemon.state_dir) if settings.daemon.state_dir else default_state_dir()
    # One outbox per published test: an interrupted publish continues where it stopped, and it never
    # races the daemon's own outbox.
    path = state_dir / "publish" / f"{test_dir.name}.sqlite3"
    if args.again and path.exists():
        path.unlink()
    events: queue.Queue = queue.Queue()
    with Outbox(path) as outbox:
        results = ResultQueue(outbox, test_dir)
        fields = results.add_missing()
        if SUMMARY_INDEX not in outbox.enqueued_indexes(test_dir.name):
            results.add_summary()
        waiting = outbox.depth()
        device = str(manifest.get("device_id", "unknown"))
        link = MqttLink(settings.mqtt, f"{device}-publish", events)
        forwarder = Forwarder(link, outbox, window=settings.mqtt.max_inflight)
        link.start()
        problem, fatal = "", False
        try:
            deadline = time.monotonic() + args.timeout_s
            while outbox.depth() > 0 and time.monotonic() < deadline and not fatal:
                try:
                    event = events.get(timeout=0.2)
                except queue.Empty:
                    forwarder.pump()
                    continue
                if event.connection_trouble:
                    problem, fatal = event.reason, event.fatal  # a refused login or certificate: give up now
                elif event.kind == "connected":
                    problem = ""
                forwarder.on_event(event)
            left = outbox.depth()
        finally:
            link.close()
    if left:
        m = settings.mqtt
        why = problem or f"broker {m.host}:{m.port} did not take them within {args.timeout_s:.0f} s"
        print(f"wbcscope: error: {left} of {waiting} message(s) not published: {why}; they stay in {path} and "
              "are sent by the next `wbcscope publish` of this test", file=sys.stderr)
        return 1
    print(f"published {test_dir.name}: {waiting} message(s) ({fields} new field(s)) to "
          f"{settings.mqtt.host}:{settings.mqtt.port}")
    return 0


def fleet(args: argparse.Namespace) -> int:
    from agent.fleet import collect, render, watch

    settings = load_settings(args.config)
    if args.once:
        rows = collect(settings.mqtt, wait_s=args.wait_s)
        print(json.dumps(rows, indent=1) if args.json else render(rows))
        return 0
    return watch(settings.mqtt, refresh_s=args.refresh_s)
