"""`wbcscope fleet` live view in a real pseudo-terminal: both devices and their states on screen, a
broker restart survived (the view subscribes again), Ctrl-C ends it without a traceback."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from tests.publish.conftest import REPO, WAIT_S, Subscriber, cli_env, wait_until, write_config

pexpect = pytest.importorskip("pexpect")
CLEAR = "\x1b[2J\x1b[H"


class Screens:
    """Reads the live view's output one full redraw at a time."""

    def __init__(self, child) -> None:
        self.child = child
        self.seen: list[str] = []

    def until(self, predicate, what: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                self.child.expect_exact(CLEAR, timeout=max(0.1, deadline - time.monotonic()))
            except pexpect.TIMEOUT:
                break
            screen = self.child.before
            self.seen.append(screen)
            if predicate(screen):
                return screen
        raise AssertionError(f"no screen within {WAIT_S} s showed {what}; last: {self.seen[-1:]!r}")


def _row(screen: str, device: str, online: str, state: str) -> bool:
    return re.search(rf"^{re.escape(device)}\s+{online}\s+{state}\s", screen, re.MULTILINE) is not None


def test_live_view_under_a_terminal(tmp_path, broker, subscribers, daemons):
    sub = subscribers(broker.port, ["wbcscope/v1/+/telemetry"])
    a = write_config(tmp_path / "a.toml", broker.port, device="live-a")
    b = write_config(tmp_path / "b.toml", broker.port, device="live-b")
    daemons(a)
    daemons(b)
    wait_until(lambda: {m.topic.split("/")[2] for m in sub.on("/telemetry")} >= {"live-a", "live-b"}, WAIT_S,
               "telemetry from both devices")

    child = pexpect.spawn(sys.executable, ["-m", "agent", "fleet", "--config", str(a), "--refresh-s", "0.3"],
                          cwd=str(REPO), env=cli_env(), dimensions=(40, 200), encoding="utf-8",
                          codec_errors="replace", timeout=WAIT_S)
    try:
        screens = Screens(child)
        def both(screen: str) -> bool:
            return _row(screen, "live-a", "yes", "idle") and _row(screen, "live-b", "yes", "idle")
        screens.until(both, "both devices online and idle")
        first = screens.until(both, "both devices on a second refresh")
        assert "connected" in first.splitlines()[0] and "2 device(s)" in first

        broker.stop()
        screens.until(lambda s: "broker trouble" in s, "the lost broker in the header")
        broker.start()
        # A device that appears only after the restart proves the view subscribed again.
        late = Subscriber(broker.port, ["wbcscope/v1/late/#"])
        try:
            late.publish("wbcscope/v1/live-c/status", json.dumps({"online": True, "state": "scanning"}).encode(),
                         retain=True)
            screens.until(lambda s: _row(s, "live-c", "yes", "scanning") and both(s), "the new device")
        finally:
            late.close()

        child.sendintr()  # Ctrl-C
        child.expect(pexpect.EOF, timeout=WAIT_S)
        rest = child.before
    finally:
        child.close(force=True)  # only this child, by its pid
    assert child.exitstatus in (0, 130), (child.exitstatus, child.signalstatus, rest)
    assert "Traceback" not in "".join(screens.seen) + rest
