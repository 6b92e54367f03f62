"""Camera presets (--source csi://N, v4l2:///dev/videoN): exact pipelines, V4L2 settings, errors."""

from __future__ import annotations

from fractions import Fraction

import pytest

from atfr.errors import ATFRError, SourceError
from atfr.runtime.video.camera import describe, gstreamer_pipeline, open_camera, parse_preset, v4l2_properties
from atfr.runtime.video.sources import CvReader, parse_source


def test_csi_defaults_pipeline():
    s = parse_source("csi://0")
    assert s.kind == "gstreamer" and s.label == "CSI camera 0 (1920x1080@30)"
    assert s.target == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), width=1920, height=1080, framerate=30/1, "
        "format=NV12 ! nvvidconv flip-method=0 ! video/x-raw, width=1920, height=1080, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=2")


def test_csi_options_and_scaling():
    s = parse_source("csi://1?width=1280&height=720&fps=60&flip=2&out_width=640&out_height=360")
    assert s.target == (
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=1280, height=720, framerate=60/1, "
        "format=NV12 ! nvvidconv flip-method=2 ! video/x-raw, width=640, height=360, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=2")
    # The pipeline is also what the generic GStreamer classifier would accept (ends in appsink).
    assert parse_source(s.target).kind == "gstreamer"


def test_ntsc_fps_is_an_exact_fraction():
    p = parse_preset("csi://0?fps=29.97")
    assert p.fps == Fraction(30000, 1001) and "framerate=30000/1001" in gstreamer_pipeline(p)


def test_v4l2_opencv_default_sets_fourcc_then_size_then_fps():
    s = parse_source("v4l2:///dev/video0?format=MJPG&width=1280&height=720&fps=30")
    assert (s.kind, s.target) == ("camera", "/dev/video0")
    assert s.props == (("CAP_PROP_FOURCC", "MJPG"), ("CAP_PROP_FRAME_WIDTH", 1280),
                       ("CAP_PROP_FRAME_HEIGHT", 720), ("CAP_PROP_FPS", 30.0))
    assert parse_source("v4l2://2?format=yuyv").target == "/dev/video2"
    assert parse_source("v4l2://2?format=yuy2").props[0] == ("CAP_PROP_FOURCC", "YUYV")


@pytest.mark.parametrize("fmt,caps,decode", [("MJPG", "image/jpeg", "jpegdec ! "),
                                             ("YUYV", "video/x-raw, format=YUY2", "")])
def test_v4l2_gstreamer_pipelines(fmt, caps, decode):
    s = parse_source(f"v4l2:///dev/video1?format={fmt}&width=640&height=480&fps=15&backend=gstreamer")
    assert s.kind == "gstreamer"
    assert s.target == (f"v4l2src device=/dev/video1 ! {caps}, width=640, height=480, framerate=15/1 ! "
                        f"{decode}videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=2")


@pytest.mark.parametrize("src,msg", [
    ("csi://0?widht=640", "unknown option 'widht'"),
    ("csi://0?width=abc", "width='abc' is not an integer"),
    ("csi://0?flip=9", "flip=9 is out of range 0..7"),
    ("csi://0?fps=0", "fps=0 is out of range"),
    ("csi://0?out_width=640", "give both out_width and out_height"),
    ("csi://left", "CSI sensor id 'left' must be a number"),
    ("v4l2:///dev/video0?format=H264", "format='H264' is not supported"),
    ("v4l2://cam", "give a device"),
    ("v4l2:///dev/video0?backend=ffmpeg", "choose opencv (V4L2) or gstreamer"),
    ("v4l2:///dev/video0?width", "options must be key=value"),
])
def test_bad_presets_are_one_line_input_errors(src, msg):
    with pytest.raises(ATFRError) as e:
        parse_source(src)
    assert msg in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2


def test_other_sources_unchanged():
    assert parse_source("0").kind == "camera" and parse_source("/dev/video3").target == "/dev/video3"
    assert parse_source("rtsp://u:p@h/x").label == "rtsp://***@h/x"
    assert parse_source("clip.mp4").kind == "file" and parse_source("clip.mp4").props == ()


class _FakeCap:
    def __init__(self, target, api=None):
        self.target, self.api, self.sets = target, api, []

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.sets.append((prop, value))
        return True


def test_open_camera_applies_properties_in_order():
    cv2 = pytest.importorskip("cv2")

    class FakeCv2:
        CAP_V4L2 = cv2.CAP_V4L2
        CAP_PROP_FOURCC, CAP_PROP_FRAME_WIDTH = cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_FRAME_WIDTH
        CAP_PROP_FRAME_HEIGHT, CAP_PROP_FPS = cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS
        VideoWriter_fourcc = staticmethod(cv2.VideoWriter_fourcc)
        VideoCapture = _FakeCap

    cap = open_camera(FakeCv2, parse_source("v4l2:///dev/video0?format=MJPG&width=800&height=600&fps=24"))
    # 'MJPG' little-endian: M=0x4d J=0x4a P=0x50 G=0x47
    assert (cap.target, cap.api) == ("/dev/video0", cv2.CAP_V4L2)
    assert cap.sets == [(cv2.CAP_PROP_FOURCC, 0x47504A4D), (cv2.CAP_PROP_FRAME_WIDTH, 800),
                        (cv2.CAP_PROP_FRAME_HEIGHT, 600), (cv2.CAP_PROP_FPS, 24.0)]
    plain = open_camera(FakeCv2, parse_source("/dev/video0"))
    assert plain.api is None and plain.sets == []


def test_missing_v4l2_device_is_a_source_error():
    pytest.importorskip("cv2")
    with pytest.raises(SourceError) as e:
        CvReader(parse_source("v4l2:///dev/video97?format=YUYV"))
    assert e.value.exit_code == 5 and "/dev/video97 (YUYV 1280x720@30, opencv)" in str(e.value)


def test_csi_without_gstreamer_opencv_says_so():
    cv2 = pytest.importorskip("cv2")
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer (the test covers the PyPI build without it)")
    with pytest.raises(SourceError, match="no GStreamer support"):
        CvReader(parse_source("csi://0"))


def test_describe_prints_the_exact_pipeline():
    s = parse_source("csi://0?width=1280&height=720")
    assert describe(s) == [f"source: {s.label}", f"GStreamer pipeline: {s.target}"]
    v = parse_source("v4l2://0")
    assert describe(v)[1] == ("OpenCV V4L2 capture of /dev/video0: CAP_PROP_FOURCC=MJPG, CAP_PROP_FRAME_WIDTH=1280, "
                              "CAP_PROP_FRAME_HEIGHT=720, CAP_PROP_FPS=30.0")
    assert v4l2_properties(parse_preset("v4l2://0"))[0] == ("CAP_PROP_FOURCC", "MJPG")


def test_run_verbose_prints_the_preset_pipeline_before_opening(capsys, tiny_export):
    # atfr run -v logs what --source resolves to before anything is opened; without -v it stays quiet.
    from atfr.cli import main

    src = "csi://1?width=640&height=480&fps=15"
    expected = gstreamer_pipeline(parse_preset(src))
    rc = main(["run", "-v", str(tiny_export) + "-missing", "--source", src])
    err = capsys.readouterr().err
    assert rc == 2 and f"GStreamer pipeline: {expected}" in err
    rc = main(["run", str(tiny_export) + "-missing", "--source", src])
    assert rc == 2 and "GStreamer pipeline" not in capsys.readouterr().err
