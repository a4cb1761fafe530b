"""Property tests: the parsers give a typed result (or their one typed error) for any input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_interface import grbl_protocol as gp
from firmware_interface.errors import StageProtocolError

REPLY_TYPES = (gp.Ok, gp.ErrorReply, gp.AlarmReply, gp.Banner, gp.Feedback, gp.VersionInfo,
               gp.BuildOptions, gp.SettingLine, gp.StartupLine, gp.StatusReport, gp.Unparseable)

# Bytes biased towards protocol syntax so the interesting branches are reached often.
protocol_bytes = st.lists(
    st.one_of(st.binary(max_size=4), st.sampled_from(
        [b"ok", b"error:", b"ALARM:", b"<", b">", b"|", b"MPos:", b"WPos:", b"WCO:", b"Bf:",
         b"FS:", b"Ov:", b"Pn:", b"Idle", b"Hold:", b"[", b"]", b"MSG:", b"VER:", b"OPT:", b"$",
         b"=", b",", b"1", b"-2.5", b".", b"\r", b"\n", b"Grbl 1.1h ['$' for help]"])),
    max_size=12,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(protocol_bytes)
def test_parse_line_never_raises(raw: bytes) -> None:
    assert isinstance(gp.parse_line(raw), REPLY_TYPES)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parse_line_text_never_raises(text: str) -> None:
    assert isinstance(gp.parse_line(text), REPLY_TYPES)


@settings(max_examples=200, deadline=None)
@given(protocol_bytes)
def test_parse_status_gives_report_or_protocol_error(raw: bytes) -> None:
    text = "<" + raw.decode("ascii", errors="replace") + ">"
    try:
        report = gp.parse_status(text)
    except StageProtocolError:
        return
    assert isinstance(report, gp.StatusReport)
    assert report.mpos is not None or report.wpos is not None


@settings(max_examples=200, deadline=None)
@given(protocol_bytes)
def test_only_exact_ok_is_ok(raw: bytes) -> None:
    if raw.rstrip(b"\r\n") != b"ok":
        assert not isinstance(gp.parse_line(raw), gp.Ok)


coord = st.floats(min_value=-1000, max_value=1000, allow_nan=False).map(lambda v: round(v, 3))
xyz = st.tuples(coord, coord, coord)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["Idle", "Run", "Jog", "Alarm", "Home", "Check", "Sleep"]), xyz,
    st.booleans(), st.one_of(st.none(), xyz),
    st.one_of(st.none(), st.tuples(st.integers(0, 15), st.integers(0, 128))),
)
def test_status_round_trip(state: str, pos: tuple, machine: bool, wco: tuple | None,
                           buffers: tuple | None) -> None:
    report = gp.StatusReport(
        state, mpos=pos if machine else None, wpos=None if machine else pos, wco=wco,
        planner_free=buffers[0] if buffers else None, rx_free=buffers[1] if buffers else None,
        feed=0.0, spindle=0.0)
    parsed = gp.parse_line(gp.format_status(report))
    assert parsed == report
