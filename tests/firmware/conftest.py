"""Fixtures for the firmware tests: an emulated GRBL served on a real pty, and a driver on it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest

from firmware_interface.emulator import GrblEmulator, MotionTimings, PtyEmulatorServer
from firmware_interface.grbl import GrblStage

LIMITS_UM = ((0.0, 100_000.0), (0.0, 75_000.0), (0.0, 10_000.0))


def wait_gone(path: str, timeout_s: float) -> None:
    """Wait until an emulator's pty (or its stable link) has vanished, as after a USB unplug."""
    deadline = time.monotonic() + timeout_s
    while os.path.lexists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not os.path.lexists(path), "the server did not drop the port"


class Wire:
    """Records every byte the host sends to the emulator."""

    def __init__(self, emulator: GrblEmulator) -> None:
        self.sent = bytearray()
        self._feed = emulator.feed
        emulator.feed = self._record  # type: ignore[method-assign]

    def _record(self, data: bytes) -> None:
        self.sent += data
        self._feed(data)

    def lines(self) -> list[str]:
        text = bytes(b for b in self.sent if b < 0x80 and b not in b"?!~\x18").decode()
        return [line for line in text.split("\n") if line]


@contextlib.contextmanager
def serve(emulator: GrblEmulator) -> Iterator[PtyEmulatorServer]:
    server = PtyEmulatorServer(emulator)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator() -> GrblEmulator:
    return GrblEmulator(MotionTimings(realtime=False))


@pytest.fixture
def wire(emulator: GrblEmulator) -> Wire:
    return Wire(emulator)


@pytest.fixture
def server(emulator: GrblEmulator) -> Iterator[PtyEmulatorServer]:
    with serve(emulator) as srv:
        yield srv


@pytest.fixture
def stage(server: PtyEmulatorServer) -> Iterator[GrblStage]:
    driver = GrblStage(server.path or "", soft_limits_um=LIMITS_UM, reply_timeout_s=0.5,
                       poll_interval_s=0.005)
    driver.connect()
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def rt_emulator() -> GrblEmulator:
    return GrblEmulator(MotionTimings())


@pytest.fixture
def rt_stage(rt_emulator: GrblEmulator) -> Iterator[GrblStage]:
    with serve(rt_emulator) as srv:
        driver = GrblStage(srv.path or "", reply_timeout_s=1.0, poll_interval_s=0.01)
        driver.connect()
        try:
            yield driver
        finally:
            driver.close()
