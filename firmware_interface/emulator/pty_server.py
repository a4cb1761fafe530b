"""Serve an emulator on a real pseudo-terminal, so pyserial opens it exactly like a USB controller.

Stable name and replugging: a pty gets a new /dev/pts/N every time it is created, just as a
re-enumerated USB adapter may come back as ttyACM1 instead of ttyACM0. Real benches solve that with a
udev symlink (docs/hardware.md); the server does the same when given ``link_path``: it points a
symlink there at the current pty. With ``reappear_after_s`` an injected disconnect closes the pty
(the host's handle dies, as on a USB unplug), removes the symlink, and after that delay creates a
fresh pty, re-points the symlink and power-cycles the board (``faults.power_cycle()``), as a
replugged board would boot again.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import tty

from firmware_interface.emulator.board import EmulatedBoard

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 2.0


class PtyEmulatorServer:
    """Pumps bytes between a pty master and the emulator on one thread.

    The server keeps its own handle on the slave side open: without it the master reads EIO
    whenever no client has the device open, and the device would vanish between test cases.
    """

    def __init__(self, emulator: EmulatedBoard, *, tick_s: float = 0.005,
                 link_path: str | None = None, reappear_after_s: float | None = None) -> None:
        if reappear_after_s is not None and link_path is None:
            raise ValueError("reappear_after_s needs link_path: a new pty gets a new name")
        self.emulator = emulator
        self._tick_s = tick_s
        self.link_path = link_path
        self.reappear_after_s = reappear_after_s
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = bytearray()

    @property
    def path(self) -> str | None:
        """Where a client opens the board: the stable symlink if there is one, else the pty."""
        if self.link_path is not None and self._path is not None:
            return self.link_path
        return self._path

    @property
    def pty_path(self) -> str | None:
        return self._path

    def start(self) -> str:
        """Open the pty, start pumping, return where to connect (``link_path`` or /dev/pts/N)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="grbl-pty-emulator", daemon=True)
        self._thread.start()
        assert self.path is not None
        return self.path

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw on the line discipline: no echo, no CR/LF translation, bytes pass untouched.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._path = os.ttyname(slave)
        self._pending.clear()
        if self.link_path is not None:
            # Atomic re-point (rename over the old link), as udev updates its symlinks.
            tmp = f"{self.link_path}.{os.getpid()}.tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self._path, tmp)
            os.replace(tmp, self.link_path)

    def _remove_link(self) -> None:
        if self.link_path is not None and os.path.islink(self.link_path):
            try:
                os.unlink(self.link_path)
            except FileNotFoundError:
                pass  # someone else tidied up; the goal (no dangling name) is met

    def stop(self) -> None:
        """Stop the thread and close the pty. Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=_JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("pty emulator thread did not stop within %.1f s", _JOIN_TIMEOUT_S)
        self._close_fds()
        self._remove_link()

    def __enter__(self) -> "PtyEmulatorServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_fds(self) -> None:
        for name in ("_master", "_slave"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass  # already gone with the pty; nothing left to release

    def _run(self) -> None:
        master = self._master
        assert master is not None
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([master], [], [], self._tick_s)
                if readable:
                    self._read(master)
                self._pending += self.emulator.poll()
                self._flush(master)
            except OSError as exc:
                log.warning("pty emulator stopped: %s", exc)
                return
            if self.emulator.faults.take_disconnect():
                log.info("pty emulator: injected disconnect")
                self._close_fds()
                self._remove_link()
                if self.reappear_after_s is None or self._stop.wait(self.reappear_after_s):
                    return
                self.emulator.faults.power_cycle()  # the replugged board boots again
                self._open_pty()
                master = self._master
                assert master is not None
                log.info("pty emulator: board back on %s -> %s", self.link_path, self._path)

    def _read(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no reader on the slave side right now
                return
            raise
        if data:
            self.emulator.feed(data)

    def _flush(self, master: int) -> None:
        if not self._pending:
            return
        try:
            written = os.write(master, self._pending)
        except BlockingIOError:
            return  # the client is not reading; keep the bytes like a UART FIFO would
        del self._pending[:written]
