"""Serve an emulator on a real pseudo-terminal, so pyserial opens it exactly like a USB controller."""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import tty

from firmware_interface.emulator.grbl import GrblEmulator

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 2.0


class PtyEmulatorServer:
    """Pumps bytes between a pty master and the emulator on one thread.

    The server keeps its own handle on the slave side open: without it the master reads EIO
    whenever no client has the device open, and the device would vanish between test cases.
    """

    def __init__(self, emulator: GrblEmulator, *, tick_s: float = 0.005) -> None:
        self.emulator = emulator
        self._tick_s = tick_s
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = bytearray()

    @property
    def path(self) -> str | None:
        return self._path

    def start(self) -> str:
        """Open the pty, start pumping, return the slave device path (e.g. /dev/pts/5)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        master, slave = os.openpty()
        # Raw on the line discipline: no echo, no CR/LF translation, bytes pass untouched.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._path = os.ttyname(slave)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="grbl-pty-emulator", daemon=True)
        self._thread.start()
        return self._path

    def stop(self) -> None:
        """Stop the thread and close the pty. Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=_JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("pty emulator thread did not stop within %.1f s", _JOIN_TIMEOUT_S)
        self._close_fds()

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
                return

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
