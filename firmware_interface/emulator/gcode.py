"""The subset of GRBL's G-code parser the emulator needs, with GRBL's error codes.

Supported: G0 G1 G4 G17 G20 G21 G53 G54 G90 G91 G92 G92.1 G94, M2 M3 M4 M5 M7 M8 M9 M30,
words F N P S T X Y Z. Everything else is rejected with the code real GRBL would give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_WORD = re.compile(r"([A-Z])([-+]?(?:\d+\.?\d*|\.\d+))?")

# Modal group of every supported G code (non-modal codes share one group, like GRBL).
_G_GROUPS = {
    0: "motion", 1: "motion",
    17: "plane", 94: "feed_mode", 54: "wcs",
    20: "units", 21: "units",
    90: "distance", 91: "distance",
    4: "non_modal", 53: "non_modal", 92: "non_modal", 92.1: "non_modal",
}
_M_GROUPS = {2: "stopping", 30: "stopping", 3: "spindle", 4: "spindle", 5: "spindle",
             7: "coolant", 8: "coolant", 9: "coolant"}
_JOG_ALLOWED_G = {20, 21, 53, 90, 91}


class GcodeError(Exception):
    """A block GRBL would refuse; ``code`` is the ``error:N`` it would print."""

    def __init__(self, code: int) -> None:
        super().__init__(f"error:{code}")
        self.code = code


@dataclass
class Block:
    g: dict[str, float] = field(default_factory=dict)
    """Modal group -> G number given in this block."""
    axes: dict[str, float] = field(default_factory=dict)
    feed: float | None = None
    dwell_s: float | None = None

    @property
    def motion(self) -> int | None:
        value = self.g.get("motion")
        return None if value is None else int(value)


def clean(line: str) -> str:
    """GRBL's pre-parser: drop whitespace, ( ) comments and ; comments; upper-case the rest."""
    out = []
    in_comment = False
    for ch in line:
        if in_comment:
            in_comment = ch != ")"
        elif ch == "(":
            in_comment = True
        elif ch == ";":
            break
        elif not ch.isspace():
            out.append(ch.upper())
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, float]]:
    words = []
    pos = 0
    while pos < len(text):
        if not text[pos].isalpha():
            raise GcodeError(1)
        match = _WORD.match(text, pos)
        if match is None or match.group(2) is None:
            raise GcodeError(2)
        words.append((match.group(1), float(match.group(2))))
        pos = match.end()
    return words


def parse_block(text: str, *, jog: bool = False) -> Block:
    """Parse a cleaned block. Raises GcodeError with GRBL's code."""
    block = Block()
    seen: set[str] = set()
    p_word = None
    for letter, value in _tokens(text):
        if letter == "G":
            _add_g(block, value, jog)
        elif letter == "M":
            if jog:
                raise GcodeError(16)
            if value not in _M_GROUPS:
                raise GcodeError(20)
            group = "M" + _M_GROUPS[value]
            if group in seen:
                raise GcodeError(21)
            seen.add(group)
        elif letter in "FNPSTXYZ":
            if letter in seen:
                raise GcodeError(25)
            seen.add(letter)
            if jog and letter not in "FNXYZ":
                raise GcodeError(16)
            if letter in "XYZ":
                block.axes[letter] = value
            elif letter in "FS" and value < 0:
                raise GcodeError(4)
            elif letter == "F":
                block.feed = value
            elif letter == "N" and not (0 <= value <= 9_999_999 and value == int(value)):
                raise GcodeError(27)
            elif letter == "P":
                p_word = value
        else:
            raise GcodeError(16 if jog else 20)
    _check_words(block, p_word)
    return block


def _add_g(block: Block, value: float, jog: bool) -> None:
    number = round(value, 1)
    if number == int(number):
        number = int(number)
    if number not in _G_GROUPS or (jog and number not in _JOG_ALLOWED_G):
        raise GcodeError(16 if jog else 20)
    group = _G_GROUPS[number]
    if group in block.g:
        raise GcodeError(21)
    block.g[group] = number


def _check_words(block: Block, p_word: float | None) -> None:
    non_modal = block.g.get("non_modal")
    if non_modal == 4:
        if p_word is None:
            raise GcodeError(28)
        if p_word < 0:
            raise GcodeError(4)
        block.dwell_s = p_word
    elif p_word is not None:
        raise GcodeError(36)
    if non_modal == 92 and not block.axes:
        raise GcodeError(26)
    if block.motion is not None and not block.axes and non_modal != 92:
        raise GcodeError(26)
    if non_modal == 92 and block.motion is not None:
        raise GcodeError(24)
