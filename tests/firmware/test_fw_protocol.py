"""Unit tests of the GRBL 1.1 line parser and formatters (examples from the GRBL 1.1 interface docs)."""

from __future__ import annotations

import pytest

from firmware_interface import grbl_protocol as gp
from firmware_interface.errors import StageProtocolError


@pytest.mark.parametrize(
    "line, expected",
    [
        ("ok", gp.Ok()),
        ("ok\r\n", gp.Ok()),
        ("error:20", gp.ErrorReply(20)),
        ("ALARM:3", gp.AlarmReply(3)),
        ("Grbl 1.1h ['$' for help]", gp.Banner("1.1h")),
        ("[MSG:'$H'|'$X' to unlock]", gp.Feedback("MSG", "'$H'|'$X' to unlock")),
        ("[MSG:Reset to continue]", gp.Feedback("MSG", "Reset to continue")),
        ("[GC:G0 G54 G17 G21 G90 G94 M0 M5 M9 T0 F0. S0.]",
         gp.Feedback("GC", "G0 G54 G17 G21 G90 G94 M0 M5 M9 T0 F0. S0.")),
        ("[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $C $X $H ~ ! ? ctrl-x]",
         gp.Feedback("HLP", "$$ $# $G $I $N $x=val $Nx=line $J=line $C $X $H ~ ! ? ctrl-x")),
        ("[G54:0.000,0.000,0.000]", gp.Feedback("G54", "0.000,0.000,0.000")),
        ("[VER:1.1h.20190830:]", gp.VersionInfo("1.1h", "20190830", "")),
        ("[VER:v1.1d.20161014:Some string]", gp.VersionInfo("1.1d", "20161014", "Some string")),
        ("[OPT:V,15,128]", gp.BuildOptions("V", 15, 128)),
        ("[OPT:VL]", gp.BuildOptions("VL", None, None)),
        ("$10=255", gp.SettingLine(10, "255")),
        ("$130=200.000", gp.SettingLine(130, "200.000")),
        ("$30=1000.", gp.SettingLine(30, "1000.")),
        ("$N0=G54", gp.StartupLine("G54")),
        (">G54G20:ok", gp.StartupLine("G54G20")),
    ],
)
def test_classifies_documented_lines(line: str, expected: gp.Reply) -> None:
    assert gp.parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    ["o", "okk", "OK", " ok", "o\ufffdk", "error:", "error:x", "error:1234", "ALARM:", "[MSG:x",
     "Grbl 1.1h", "$x=1", "$10=abc", "<Idle|MPos:1,2>", "<Idle|MPos:0.000,0.000,0.000",
     "<Bogus|MPos:0,0,0>", "<Idle|MPos:0,0,0|Zap:1>", "<Idle>", "<Hold:x|MPos:0,0,0>",
     "<Idle|MPos:nan,0,0>", "", "\x00ok", "[VER:garbage]", "[OPT:V,x,128]"],
)
def test_garbled_lines_are_unparseable_never_ok(line: str) -> None:
    reply = gp.parse_line(line)
    assert isinstance(reply, gp.Unparseable)
    assert reply.reason


def test_garbled_bytes_are_unparseable() -> None:
    assert isinstance(gp.parse_line(b"o\xffk"), gp.Unparseable)


def test_error_and_alarm_tables_carry_documented_meanings() -> None:
    assert set(gp.ERROR_MESSAGES) == set(range(1, 18)) | set(range(20, 39))
    assert set(gp.ALARM_MESSAGES) == set(range(1, 10))
    assert "Feed rate" in gp.ErrorReply(22).message
    assert "Homing" in gp.ErrorReply(5).message
    assert "Reset while in motion" in gp.AlarmReply(3).message
    assert gp.error_message(99) == "Unknown error code."


@pytest.mark.parametrize(
    "text, state, substate",
    [("<Idle|MPos:0.000,0.000,0.000|FS:0,0>", "Idle", None),
     ("<Run|MPos:1.000,2.000,3.000|FS:500,8000>", "Run", None),
     ("<Hold:0|MPos:0,0,0>", "Hold", 0), ("<Hold:1|MPos:0,0,0>", "Hold", 1),
     ("<Door:2|MPos:0,0,0>", "Door", 2), ("<Jog|MPos:0,0,0>", "Jog", None),
     ("<Alarm|MPos:0,0,0>", "Alarm", None), ("<Check|MPos:0,0,0>", "Check", None),
     ("<Home|MPos:0,0,0>", "Home", None), ("<Sleep|MPos:0,0,0>", "Sleep", None)],
)
def test_status_states(text: str, state: str, substate: int | None) -> None:
    report = gp.parse_status(text)
    assert (report.state, report.substate) == (state, substate)


def test_status_with_every_optional_field() -> None:
    report = gp.parse_status(
        "<Run|MPos:1.000,-10.000,5.000|Bf:15,128|Ln:99999|FS:500,8000|Pn:XYZPDHRS"
        "|WCO:0.000,1.551,5.664|Ov:100,90,110|A:SFM>")
    assert report.mpos == (1.0, -10.0, 5.0)
    assert (report.planner_free, report.rx_free) == (15, 128)
    assert report.line_number == 99999
    assert (report.feed, report.spindle) == (500.0, 8000.0)
    assert report.pins == "XYZPDHRS"
    assert report.wco == (0.0, 1.551, 5.664)
    assert report.overrides == (100, 90, 110)
    assert report.accessories == "SFM"


def test_status_with_feed_only_field() -> None:
    assert gp.parse_status("<Idle|WPos:-2.500,0.000,11.000|F:500>").feed == 500.0


def test_parse_status_raises_protocol_error() -> None:
    with pytest.raises(StageProtocolError):
        gp.parse_status("<Idle|MPos:1,2>")


def test_wco_tracker_remembers_offset_between_reports() -> None:
    tracker = gp.WcoTracker()
    first = tracker.complete(gp.parse_status("<Idle|MPos:5.000,5.000,5.000|WCO:1.000,2.000,3.000>"))
    assert first.wpos == (4.0, 3.0, 2.0)
    later = tracker.complete(gp.parse_status("<Run|MPos:6.000,5.000,5.000|FS:10,0>"))
    assert later.wpos == (5.0, 3.0, 2.0) and later.wco == (1.0, 2.0, 3.0)
    wpos_only = tracker.complete(gp.parse_status("<Idle|WPos:0.000,0.000,0.000>"))
    assert wpos_only.mpos == (1.0, 2.0, 3.0)
    tracker.reset()
    assert tracker.complete(gp.parse_status("<Idle|WPos:0,0,0>")).mpos is None


def test_format_move_and_jog() -> None:
    assert gp.format_move(1.23456, None, -0.00001, feed_mm_min=300) == "G90 G1 X1.2346 Z0.0000 F300.0"
    assert gp.format_move(None, 2.0, None, feed_mm_min=None) == "G90 G0 Y2.0000"
    assert gp.format_jog(0.5, None, None, feed_mm_min=100) == "$J=G91 G21 X0.5000 F100.0"
    with pytest.raises(ValueError):
        gp.format_move(None, None, None, feed_mm_min=1)


def test_format_status_round_trips() -> None:
    report = gp.StatusReport("Hold", 0, mpos=(1.0, 2.0, 3.0), planner_free=14, rx_free=100,
                             feed=120.0, spindle=0.0, wco=(0.0, 0.0, 0.0), overrides=(100, 100, 100))
    assert gp.parse_status(gp.format_status(report)) == report
