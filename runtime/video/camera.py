"""Camera presets for ``--source``: Jetson CSI cameras and V4L2 (USB) cameras. Torch-free, cv2-free.

* ``csi://N?width=1920&height=1080&fps=30&flip=0`` -> the ``nvarguscamerasrc ... ! appsink``
  GStreamer pipeline (Jetson; needs OpenCV built with GStreamer, e.g. JetPack's python3-opencv).
  Optional ``out_width``/``out_height`` let ``nvvidconv`` scale on the VIC before the frames reach
  the CPU (cheaper than decoding 1080p to BGR when the model wants 224 px).
* ``v4l2:///dev/video0?format=MJPG&width=1280&height=720&fps=30`` (or ``v4l2://0``) -> OpenCV's
  V4L2 backend with FOURCC/size/fps set in that order (drivers apply size and fps per format),
  or with ``&backend=gstreamer`` the ``v4l2src ... ! appsink`` pipeline (MJPG via ``jpegdec``).

``parse_camera`` returns the fields of a ``SourceSpec`` (or None when the string is not a preset); the
pipeline strings are built by pure functions so they can be tested exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from atfr.errors import ATFRError

SCHEMES = ("csi", "v4l2")
# V4L2 pixel formats: our name -> (OpenCV FOURCC, GStreamer caps)
V4L2_FORMATS = {"MJPG": ("MJPG", "image/jpeg"), "YUYV": ("YUYV", "video/x-raw, format=YUY2")}
_FORMAT_ALIASES = {"MJPEG": "MJPG", "JPEG": "MJPG", "YUY2": "YUYV"}
# Bounded appsink queue: a slow reader gets the newest frames, not a growing backlog (latency).
APPSINK = "appsink drop=true max-buffers=2"

CSI_DEFAULTS = {"width": 1920, "height": 1080, "fps": 30, "flip": 0}
V4L2_DEFAULTS = {"format": "MJPG", "width": 1280, "height": 720, "fps": 30, "backend": "opencv"}


@dataclass(frozen=True)
class CameraPreset:
    scheme: str  # csi | v4l2
    device: str  # sensor id (csi) or device path (v4l2)
    width: int
    height: int
    fps: Fraction
    flip: int = 0  # csi: nvvidconv flip-method 0..7
    out_width: int | None = None  # csi: scale in nvvidconv
    out_height: int | None = None
    format: str = "MJPG"  # v4l2
    backend: str = "gstreamer"  # gstreamer | opencv (v4l2 only)

    @property
    def fps_caps(self) -> str:
        return f"{self.fps.numerator}/{self.fps.denominator}"

    def label(self) -> str:
        fps = f"{float(self.fps):g}"
        if self.scheme == "csi":
            return f"CSI camera {self.device} ({self.width}x{self.height}@{fps})"
        return f"{self.device} ({self.format} {self.width}x{self.height}@{fps}, {self.backend})"


def _fail(src: str, why: str) -> ATFRError:
    return ATFRError(f"--source {src}: {why}")


def _int(src: str, key: str, v: str, lo: int, hi: int) -> int:
    try:
        n = int(v)
    except ValueError:
        raise _fail(src, f"{key}={v!r} is not an integer") from None
    if not lo <= n <= hi:
        raise _fail(src, f"{key}={n} is out of range {lo}..{hi}")
    return n


def _fps(src: str, v: str) -> Fraction:
    try:
        f = Fraction(v).limit_denominator(1001)
    except (ValueError, ZeroDivisionError):
        raise _fail(src, f"fps={v!r} is not a number (e.g. 30, 29.97 or 30000/1001)") from None
    ntsc = Fraction(round(f * Fraction(1001, 1000)) * 1000, 1001)
    if f.denominator != 1 and abs(f - ntsc) < Fraction(1, 100):  # 29.97 / 59.94 are NTSC N*1000/1001
        f = ntsc
    if not 0 < f <= 1000:
        raise _fail(src, f"fps={v} is out of range (0, 1000]")
    return f


def parse_preset(src: str) -> CameraPreset | None:
    """``csi://`` / ``v4l2://`` strings -> CameraPreset; None for anything else. ATFRError (exit 2)
    for an unknown option or a bad value, naming it."""
    m = re.match(r"^([a-z0-9]+)://", src.strip(), re.IGNORECASE)
    if not m or m.group(1).lower() not in SCHEMES:
        return None
    scheme = m.group(1).lower()
    u = urlsplit(src.strip())
    try:
        pairs = parse_qsl(u.query, keep_blank_values=True, strict_parsing=bool(u.query))
    except ValueError:
        raise _fail(src, "options must be key=value pairs joined by '&'") from None
    opts = {k.lower(): v for k, v in pairs}
    defaults = CSI_DEFAULTS if scheme == "csi" else V4L2_DEFAULTS
    allowed = set(defaults) | ({"out_width", "out_height"} if scheme == "csi" else set())
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise _fail(src, f"unknown option {unknown[0]!r} for {scheme}:// (known: {', '.join(sorted(allowed))})")
    o = {**{k: str(v) for k, v in defaults.items()}, **opts}
    width = _int(src, "width", o["width"], 16, 16384)
    height = _int(src, "height", o["height"], 16, 16384)
    fps = _fps(src, o["fps"])
    if scheme == "csi":
        dev = (u.netloc + u.path).strip("/") or "0"
        if not dev.isdigit():
            raise _fail(src, f"CSI sensor id {dev!r} must be a number (csi://0, csi://1)")
        ow = _int(src, "out_width", o["out_width"], 16, 16384) if "out_width" in o else None
        oh = _int(src, "out_height", o["out_height"], 16, 16384) if "out_height" in o else None
        if (ow is None) != (oh is None):
            raise _fail(src, "give both out_width and out_height, or neither")
        return CameraPreset("csi", str(int(dev)), width, height, fps, flip=_int(src, "flip", o["flip"], 0, 7),
                            out_width=ow, out_height=oh, backend="gstreamer")
    path = u.path if u.path.startswith("/dev/") else ""
    if not path:
        n = (u.netloc + u.path).strip("/")
        if not n.isdigit():
            raise _fail(src, "give a device: v4l2:///dev/video0 or v4l2://0")
        path = f"/dev/video{int(n)}"
    fmt = o["format"].upper()
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in V4L2_FORMATS:
        raise _fail(src, f"format={o['format']!r} is not supported (MJPG or YUYV)")
    backend = o["backend"].lower()
    backend = {"gst": "gstreamer", "cv": "opencv", "v4l2": "opencv"}.get(backend, backend)
    if backend not in ("opencv", "gstreamer"):
        raise _fail(src, f"backend={o['backend']!r}: choose opencv (V4L2) or gstreamer")
    return CameraPreset("v4l2", path, width, height, fps, format=fmt, backend=backend)


def gstreamer_pipeline(p: CameraPreset) -> str:
    """The GStreamer pipeline (ending in appsink, BGR frames) for a preset."""
    if p.scheme == "csi":
        ow, oh = (p.out_width, p.out_height) if p.out_width else (p.width, p.height)
        return (f"nvarguscamerasrc sensor-id={p.device} ! "
                f"video/x-raw(memory:NVMM), width={p.width}, height={p.height}, framerate={p.fps_caps}, "
                f"format=NV12 ! nvvidconv flip-method={p.flip} ! "
                f"video/x-raw, width={ow}, height={oh}, format=BGRx ! "
                f"videoconvert ! video/x-raw, format=BGR ! {APPSINK}")
    caps = V4L2_FORMATS[p.format][1]
    decode = "jpegdec ! " if p.format == "MJPG" else ""
    return (f"v4l2src device={p.device} ! {caps}, width={p.width}, height={p.height}, framerate={p.fps_caps} ! "
            f"{decode}videoconvert ! video/x-raw, format=BGR ! {APPSINK}")


def v4l2_properties(p: CameraPreset) -> tuple[tuple[str, Any], ...]:
    """(cv2.CAP_PROP_* name, value) in the order to set them: FOURCC first, then size, then fps."""
    return (("CAP_PROP_FOURCC", V4L2_FORMATS[p.format][0]), ("CAP_PROP_FRAME_WIDTH", p.width),
            ("CAP_PROP_FRAME_HEIGHT", p.height), ("CAP_PROP_FPS", float(p.fps)))


def parse_camera(src: str) -> tuple[str, str | int, str, tuple[tuple[str, Any], ...]] | None:
    """(kind, target, label, props) of the SourceSpec for a camera preset string, or None when
    ``src`` is not one. A plain tuple, so this module does not import runtime.video.sources (which imports
    it): the runtime's import graph stays acyclic (tests/test_import_graph.py)."""
    p = parse_preset(src)
    if p is None:
        return None
    if p.backend == "gstreamer":
        return ("gstreamer", gstreamer_pipeline(p), p.label(), ())
    return ("camera", p.device, p.label(), v4l2_properties(p))


def open_camera(cv2: Any, spec: Any):  # -> cv2.VideoCapture
    """cv2.VideoCapture for a 'camera' SourceSpec; with V4L2 properties, the V4L2 backend and the
    properties set in order (a driver applies size/fps to the current pixel format)."""
    props = getattr(spec, "props", ())
    if not props:
        return cv2.VideoCapture(spec.target)
    cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
    if cap.isOpened():
        for name, value in props:
            if name == "CAP_PROP_FOURCC":
                value = cv2.VideoWriter_fourcc(*value)
            cap.set(getattr(cv2, name), value)
    return cap


def describe(spec: Any) -> list[str]:
    """Lines for -v: what a --source resolves to (the exact pipeline or V4L2 settings)."""
    if spec.kind == "gstreamer":
        return [f"source: {spec.label}", f"GStreamer pipeline: {spec.target}"]
    props = getattr(spec, "props", ())
    if props:
        sets = ", ".join(f"{n}={v}" for n, v in props)
        return [f"source: {spec.label}", f"OpenCV V4L2 capture of {spec.target}: {sets}"]
    return [f"source: {spec.label} ({spec.kind})"]
