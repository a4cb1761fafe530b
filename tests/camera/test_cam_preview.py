"""The MJPEG preview: a real HTTP stream on localhost carrying JPEG frames with the focus overlay."""

from __future__ import annotations

import threading
import urllib.request

import cv2
import numpy as np

from agent.hardware.optics import Optics
from agent.hardware.virtual_camera import VirtualCamera
from agent.hardware.virtual_slide import VirtualSlide
from agent.preview import BOUNDARY, PreviewSource, make_server


def test_stream_serves_jpeg_parts() -> None:
    cam = VirtualCamera(VirtualSlide(), Optics(), lambda: (5000.0, 5000.0, 500.0), width_px=320, height_px=240,
                        realtime=False)
    cam.open()
    source = PreviewSource(cam, measure="laplacian_variance", width_px=160, fps=50.0)
    server = make_server(source, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    source.start()
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert b"/stream" in page.read()
        with urllib.request.urlopen(url + "/stream", timeout=10) as stream:
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            head = stream.readline()
            assert head.strip() == f"--{BOUNDARY}".encode()
            headers = {}
            while (line := stream.readline().strip()):
                key, _, value = line.decode().partition(": ")
                headers[key] = value
            body = stream.read(int(headers["Content-Length"]))
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (120, 160, 3)
    finally:
        source.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        cam.close()
