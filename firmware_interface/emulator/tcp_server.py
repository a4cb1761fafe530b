"""Serve an emulator on TCP for pyserial's ``socket://host:port`` URLs (remote benches, CI)."""

from __future__ import annotations

import logging
import select
import socket
import threading

from firmware_interface.emulator.board import EmulatedBoard

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 2.0


class TcpEmulatorServer:
    """One client at a time, like a serial cable; later connections are refused by closing them."""

    def __init__(
        self, emulator: EmulatedBoard, *, host: str = "127.0.0.1", port: int = 0, tick_s: float = 0.005
    ) -> None:
        self.emulator = emulator
        self._address = (host, port)
        self._tick_s = tick_s
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self) -> str:
        """Listen and return the pyserial URL, e.g. ``socket://127.0.0.1:40123``."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        listener = socket.create_server(self._address)
        self._listener = listener
        host, port = listener.getsockname()[:2]
        self.url = f"socket://{host}:{port}"
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="grbl-tcp-emulator", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop the thread and close the sockets. Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=_JOIN_TIMEOUT_S)
        self._drop_client()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> "TcpEmulatorServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _run(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            sockets = [self._listener] + ([self._client] if self._client else [])
            try:
                readable, _, _ = select.select(sockets, [], [], self._tick_s)
            except OSError as exc:
                log.warning("tcp emulator stopped: %s", exc)
                return
            if self._listener in readable:
                self._accept()
            if self._client is not None and self._client in readable:
                self._read()
            out = self.emulator.poll()
            if self._client is not None:
                self._send(out)
                if self.emulator.faults.take_disconnect():
                    self._drop_client()

    def _accept(self) -> None:
        assert self._listener is not None
        conn, peer = self._listener.accept()
        if self._client is not None:
            log.info("tcp emulator: refusing second client %s", peer)
            conn.close()
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = conn

    def _read(self) -> None:
        assert self._client is not None
        try:
            data = self._client.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self.emulator.feed(data)

    def _send(self, data: bytes) -> None:
        if not data or self._client is None:
            return
        try:
            self._client.sendall(data)
        except OSError:
            self._drop_client()
