"""``wbcscope preview``: a live MJPEG stream on localhost with the focus measure written on it.

Open http://127.0.0.1:8080/ in a browser on the Pi (or through an SSH tunnel). One thread grabs
frames, scores focus and encodes JPEG; every viewer is served the latest one from its own HTTP
thread, so a slow browser never slows the camera down.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from agent.config import load_settings, simulation_overrides
from agent.errors import CameraError
from agent.hardware.camera import Camera

log = logging.getLogger(__name__)
BOUNDARY = "wbcscopeframe"
_PAGE = (b"<!doctype html><title>wbcscope preview</title>"
         b"<body style='margin:0;background:#111'><img src='/stream' style='width:100%'></body>")


class PreviewSource:
    """Captures, scores and encodes frames in one thread until ``stop``."""

    def __init__(self, camera: Camera, *, measure: str, width_px: int = 640, fps: float = 5.0,
                 flat_field=None, capture_timeout_s: float = 2.0) -> None:
        self._camera = camera
        self._measure = measure
        self._width_px = width_px
        self._period_s = 1.0 / fps
        self._flat_field = flat_field
        self._timeout_s = capture_timeout_s
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="preview-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout_s + 1.0)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def render(self, image: np.ndarray) -> bytes:
        """The JPEG of one frame: downscaled, with its focus measure written in the corner."""
        from agent.focus import focus_measure

        if self._flat_field is not None:
            image = self._flat_field.apply(image)
        score = focus_measure(image, self._measure, downsample=2)
        h, w = image.shape[:2]
        scale = self._width_px / w if w > self._width_px else 1.0
        small = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        text = f"{self._measure}: {score:.1f}"
        cv2.putText(small, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(small, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 255), 2, cv2.LINE_AA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return buf.tobytes() if ok else b""

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                jpeg = self.render(self._camera.capture(self._timeout_s).image)
            except CameraError as exc:
                log.warning("preview: %s", exc)
                self._stop.wait(0.5)
                continue
            with self._cond:
                self._jpeg, self._seq = jpeg, self._seq + 1
                self._cond.notify_all()
            self._stop.wait(max(self._period_s - (time.monotonic() - started), 0.0))

    def next_jpeg(self, after_seq: int, timeout_s: float) -> tuple[bytes | None, int]:
        """The newest JPEG once there is one newer than ``after_seq`` (None on timeout or stop)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after_seq or self._stop.is_set(), timeout_s)
            if self._seq > after_seq and self._jpeg is not None:
                return self._jpeg, self._seq
            return None, after_seq


def make_server(source: PreviewSource, host: str, port: int) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/":
                self._send(200, "text/html", _PAGE)
            elif self.path == "/stream":
                self._stream()
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seq = 0
            try:
                while not source.stopped:
                    jpeg, seq = source.next_jpeg(seq, timeout_s=1.0)
                    if jpeg is None:
                        continue
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode("ascii"))
                    self.wfile.write(jpeg + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the viewer went away

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("preview http: " + fmt, *args)

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("preview", help="live MJPEG view with the focus measure, on localhost")
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--simulate", action="store_true", help="use the virtual microscope")
    p.add_argument("--zero-delay", action="store_true", help="simulated hardware without waits")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--width-px", type=int, default=640, help="width of the streamed image")
    return p


def run(args: argparse.Namespace) -> int:
    from agent.assembly import measure_name, open_microscope

    overrides = simulation_overrides(simulate=args.simulate, zero_delay=args.zero_delay)
    settings = load_settings(args.config, overrides)
    with open_microscope(settings) as scope:
        source = PreviewSource(scope.camera, measure=measure_name(settings), width_px=args.width_px, fps=args.fps,
                               capture_timeout_s=settings.camera.capture_timeout_s)
        server = make_server(source, args.host, args.port)
        source.start()
        print(f"preview on http://{args.host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            source.stop()
            server.server_close()
    return 0
