"""Every documented GRBL 1.1 ``error:N`` and ``ALARM:N`` code becomes a typed exception that says
what the code means, checked end to end: a scripted board answers on a real pty, the link raises.

The keywords are what the GRBL 1.1 docs (error/alarm code tables) say each code means; the
driver's message must carry that meaning, not just the number.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from firmware_interface import grbl_protocol as gp
from firmware_interface.emulator import PtyEmulatorServer
from firmware_interface.emulator.faults import Faults
from firmware_interface.errors import FirmwareError, StageAlarm, StageError
from firmware_interface.grbl_codes import firmware_error, stage_alarm
from firmware_interface.link import GrblLink

ERROR_MEANINGS = {
    1: "letter", 2: "numeric value", 3: "not recognized", 4: "negative", 5: "homing",
    6: "step pulse", 7: "eeprom read", 8: "idle", 9: "alarm or jog", 10: "soft limits",
    11: "per line", 12: "step rate", 13: "safety door", 14: "line length", 15: "travel",
    16: "'='", 17: "laser mode", 20: "unsupported", 21: "modal group", 22: "feed rate",
    23: "integer", 24: "axis words", 25: "repeated", 26: "axis words", 27: "line number",
    28: "missing", 29: "g59", 30: "g53", 31: "axis words", 32: "plane", 33: "target",
    34: "radius", 35: "offset", 36: "unused", 37: "tool length", 38: "tool number",
}
ALARM_MEANINGS = {
    1: "hard limit", 2: "soft limit", 3: "reset while in motion", 4: "probe", 5: "probe",
    6: "reset", 7: "door", 8: "clear limit switch", 9: "find limit switch",
}
# The docs: hard limit and reset in motion lose the position, homing failures leave it unknown;
# a soft limit keeps it. Limit alarms are critical: only a soft reset is heard afterwards.
POSITION_LOSING = {1, 3, 6, 7, 8, 9}
CRITICAL = {1, 2}


class ScriptedGrbl:
    """Answers ``E<n>`` with ``error:<n>``, ``A<n>`` with ``ALARM:<n>``, ``$G`` (the link's resync
    marker) with a parser state, anything else with ``ok``; Ctrl-X prints the banner. No banner at
    start-up: one arriving during the first command would (rightly) read as a reset."""

    def __init__(self) -> None:
        self.faults = Faults()
        self._lock = threading.Lock()
        self._rx = bytearray()
        self._out = bytearray()

    def feed(self, data: bytes) -> None:
        with self._lock:
            for byte in data:
                if byte == gp.RT_SOFT_RESET[0]:
                    self._out += b"Grbl 1.1h ['$' for help]\r\n"
                elif byte != gp.RT_STATUS[0]:
                    self._rx.append(byte)
            while b"\n" in self._rx:
                line, _, rest = bytes(self._rx).partition(b"\n")
                self._rx = bytearray(rest)
                if line == b"$G":
                    self._out += b"[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]\r\nok\r\n"
                elif line[:1] == b"E":
                    self._out += b"error:" + line[1:] + b"\r\n"
                elif line[:1] == b"A":
                    self._out += b"ALARM:" + line[1:] + b"\r\n"
                else:
                    self._out += b"ok\r\n"

    def poll(self) -> bytes:
        with self._lock:
            out, self._out = bytes(self._out), bytearray()
            return out

    def physical_position_um(self) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def link() -> Iterator[GrblLink]:
    with PtyEmulatorServer(ScriptedGrbl()) as server:  # type: ignore[arg-type]
        grbl = GrblLink(server.path or "", reply_timeout_s=5.0)
        grbl.open()
        try:
            yield grbl
        finally:
            grbl.close()


def test_tables_list_exactly_the_documented_codes() -> None:
    assert set(gp.ERROR_MESSAGES) == set(ERROR_MEANINGS)
    assert set(gp.ALARM_MESSAGES) == set(ALARM_MEANINGS)
    assert gp.POSITION_LOSING_ALARMS == POSITION_LOSING
    assert gp.CRITICAL_ALARMS == CRITICAL


@pytest.mark.parametrize("code", sorted(ERROR_MEANINGS))
def test_error_code_is_typed_with_its_meaning(link: GrblLink, code: int) -> None:
    with pytest.raises(FirmwareError) as caught:
        link.command(f"E{code}")
    error = caught.value
    assert isinstance(error, StageError) and isinstance(error, RuntimeError)
    assert error.code == code
    assert str(error).startswith(f"error:{code} ")
    assert ERROR_MEANINGS[code] in str(error).lower()
    assert str(firmware_error(code)) == str(error)
    assert link.command("ok") == []  # the link stays in step after every error


@pytest.mark.parametrize("code", sorted(ALARM_MEANINGS))
def test_alarm_code_is_typed_with_its_meaning(link: GrblLink, code: int) -> None:
    with pytest.raises(StageAlarm) as caught:
        link.command(f"A{code}")
    alarm = caught.value
    assert isinstance(alarm, StageError)
    assert alarm.code == code
    assert str(alarm).startswith(f"ALARM:{code} ")
    assert ALARM_MEANINGS[code] in str(alarm).lower()
    assert alarm.position_lost == (code in POSITION_LOSING)
    assert alarm.reset_required == (code in CRITICAL)
    assert link.reset_required == (code in CRITICAL)
    link.soft_reset()  # what the driver's reset() sends; clears the critical lock-out
    assert not link.reset_required


def test_unknown_codes_stay_typed() -> None:
    assert firmware_error(99).code == 99 and "Unknown" in str(firmware_error(99))
    assert stage_alarm(42).code == 42 and not stage_alarm(42).position_lost
