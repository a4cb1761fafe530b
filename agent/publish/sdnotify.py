"""The systemd notify protocol (sd_notify) over a plain unix datagram socket: no dependency needed.

systemd passes the socket in $NOTIFY_SOCKET (a path, or '@name' for the abstract namespace) and, when
WatchdogSec= is set, the watchdog period in $WATCHDOG_USEC (and the pid it applies to in $WATCHDOG_PID).
Outside systemd every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract socket
        self._address = address or None
        self._sock: socket.socket | None = None
        self.watchdog_interval_s = self._watchdog_interval(env)

    @staticmethod
    def _watchdog_interval(env) -> float | None:
        """Half the watchdog period (systemd's advice), or None when the watchdog is off or not ours."""
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
            pid = int(env.get("WATCHDOG_PID", "0") or 0)
        except ValueError:
            return None
        if usec <= 0 or (pid and pid != os.getpid()):
            return None
        return usec / 2e6

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self._address)
        except OSError as exc:
            # systemd going away must not take the daemon with it; the watchdog will notice if it matters.
            log.debug("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
