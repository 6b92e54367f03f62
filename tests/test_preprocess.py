"""The runtime's test transform and clip sampling vs an independent torch reference / hand-checked indices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atfr.errors import SourceError
from atfr.spec import InputSpec
from atfr.runtime.video.preprocess import Preprocessor, crop_offsets, pack_pathways, short_side_size
from atfr.runtime.video.sampling import (clip_indices, clip_span, stream_indices, stream_window, torch_linspace,
                                   view_start)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_reference(frames: np.ndarray, spec: InputSpec, spatial_idx: int) -> np.ndarray:
    """PySlowFast test transform, written from the official code: normalise, [C,T,H,W],
    random_short_side_scale_jitter(min=max=short side), uniform_crop."""
    x = torch.from_numpy(frames).float()
    x = x / 255.0
    x = x - torch.tensor(spec.mean)
    x = x / torch.tensor(spec.std)
    x = x.permute(3, 0, 1, 2)  # C,T,H,W
    size = spec.short_side
    height, width = x.shape[2], x.shape[3]
    if not ((width <= height and width == size) or (height <= width and height == size)):
        new_w, new_h = size, size
        if width < height:
            new_h = int(math.floor((float(height) / width) * size))
        else:
            new_w = int(math.floor((float(width) / height) * size))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    c = spec.crop_size
    height, width = x.shape[2], x.shape[3]
    y0 = int(math.ceil((height - c) / 2))
    x0 = int(math.ceil((width - c) / 2))
    if height > width:
        if spatial_idx == 0:
            y0 = 0
        elif spatial_idx == 2:
            y0 = height - c
    else:
        if spatial_idx == 0:
            x0 = 0
        elif spatial_idx == 2:
            x0 = width - c
    return x[:, :, y0:y0 + c, x0:x0 + c].numpy()


CASES = [
    # (H, W, short side, crop): up- and downscaling, landscape and portrait, odd ratios, no resize.
    (48, 64, 80, 72),       # upscale, landscape
    (64, 40, 72, 64),       # upscale, portrait
    (240, 320, 128, 112),   # downscale, landscape
    (320, 240, 128, 112),   # downscale, portrait
    (101, 77, 50, 40),      # downscale, odd ratio, portrait
    (77, 203, 61, 61),      # downscale, crop = short side
    (64, 64, 64, 56),       # short side already right: no resize
    (37, 200, 37, 30),      # no resize, very wide
    (360, 640, 256, 224),   # a real-video case
]


@pytest.mark.parametrize("h,w,short,crop", CASES)
def test_transform_matches_torch_reference(h, w, short, crop):
    spec = InputSpec(num_frames=5, short_side=short, crop_size=crop, mean=(0.4, 0.45, 0.5), std=(0.2, 0.225, 0.25))
    rng = np.random.default_rng(h * 1000 + w)
    frames = rng.integers(0, 256, (5, h, w, 3), dtype=np.uint8)
    pre = Preprocessor(spec)
    for s in (0, 1, 2):
        ours = pre(frames, s)
        ref = torch_reference(frames, spec, s)
        assert ours.shape == (3, 5, crop, crop) and ours.dtype == np.float32
        # frame for frame
        for t in range(5):
            np.testing.assert_allclose(ours[:, t], ref[:, t], rtol=0, atol=1e-5)


def test_crops_differ_and_follow_orientation():
    assert crop_offsets(100, 200, 100, 0) == (0, 0)
    assert crop_offsets(100, 200, 100, 1) == (0, 50)
    assert crop_offsets(100, 200, 100, 2) == (0, 100)
    assert crop_offsets(201, 100, 100, 1) == (51, 0)  # ceil((201-100)/2)
    assert crop_offsets(201, 100, 100, 2) == (101, 0)
    assert short_side_size(240, 320, 128) == (128, 170)
    assert short_side_size(320, 240, 128) == (170, 128)
    assert short_side_size(128, 500, 128) == (128, 500)


def test_bgr_channel_order_flips_input():
    spec = InputSpec(num_frames=2, short_side=16, crop_size=16)
    bgr = InputSpec(num_frames=2, short_side=16, crop_size=16, channel_order="BGR")
    frames = np.random.default_rng(0).integers(0, 256, (2, 16, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Preprocessor(bgr)(frames), Preprocessor(spec)(frames[..., ::-1]))


@pytest.mark.parametrize("t,alpha", [(32, 8), (32, 4), (8, 4), (30, 4), (16, 3), (95, 4), (111, 2)])
def test_slowfast_packing_matches_torch(t, alpha):
    """Both packers (per clip, and runtime.video.clips' batched one used by infer/verify/calibration)
    take torch's fp32 linspace frames; T=95/111 are where a numpy fp32 linspace picks another frame."""
    from atfr.runtime.video import clips as clips_mod

    clip = np.random.default_rng(t).standard_normal((3, t, 4, 4)).astype(np.float32)
    slow, fast = pack_pathways(clip, alpha)
    idx = torch.linspace(0, t - 1, t // alpha).long()
    ref = torch.index_select(torch.from_numpy(clip), 1, idx).numpy()
    np.testing.assert_array_equal(slow, ref)
    assert fast is clip
    b_slow, b_fast = clips_mod.pack_pathways(clip, InputSpec(num_frames=t, slowfast_alpha=alpha))
    np.testing.assert_array_equal(b_slow, ref[None])
    np.testing.assert_array_equal(b_fast, clip[None])


def test_torch_linspace_is_bit_exact():
    rng = np.random.default_rng(0)
    for _ in range(500):
        a = float(rng.uniform(0, 200))
        b = a + float(rng.uniform(0, 400))
        n = int(rng.integers(1, 70))
        np.testing.assert_array_equal(torch_linspace(a, b, n), torch.linspace(a, b, n).numpy())


# -- clip sampling, hand-checked ---------------------------------------------------------------
SPEC = InputSpec(num_frames=8, sampling_rate=2, target_fps=30.0, crop_size=32, short_side=32)


def test_clip_span_resamples_fps():
    assert clip_span(SPEC, 30) == 16
    assert clip_span(SPEC, 60) == 32
    assert clip_span(SPEC, 25) == pytest.approx(13.3333333)
    assert stream_window(SPEC, 30) == 16
    assert stream_window(SPEC, 25) == 14


def test_view_indices_hand_checked():
    # clip 16 at 30 fps: linspace(0, 15, 8) = 0, 2.14, 4.29, 6.43, 8.57, 10.71, 12.86, 15
    assert clip_indices(100, SPEC, 30, 0, 10).tolist() == [0, 2, 4, 6, 8, 10, 12, 15]
    # k=5 of 10: start = (100-16)*5/10 = 42
    assert clip_indices(100, SPEC, 30, 5, 10).tolist() == [42, 44, 46, 48, 50, 52, 54, 57]
    # k=3: start = 84*3/10 = 25.2 -> PyAV keeps frames at/after it: first = 26
    assert view_start(100, 16, 3, 10) == pytest.approx(25.2)
    assert clip_indices(100, SPEC, 30, 3, 10).tolist() == [26, 28, 30, 32, 34, 36, 38, 41]
    # last view (old spacing: divisor 10): start = 84*9/10 = 75.6 -> 76; never reaches the end (99)
    assert clip_indices(100, SPEC, 30, 9, 10).tolist() == [76, 78, 80, 82, 84, 86, 88, 91]
    # 60 fps: clip 32 -> linspace(0, 31, 8) = 0, 4.43, 8.86, 13.29, 17.71, 22.14, 26.57, 31
    assert clip_indices(200, SPEC, 60, 0, 1).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    # 25 fps: clip 13.33 -> linspace(0, 12.33, 8) step 1.762
    assert clip_indices(200, SPEC, 25, 0, 1).tolist() == [0, 1, 3, 5, 7, 8, 10, 12]


def test_short_video_repeats_last_frame():
    # 5 frames < clip of 16: every view starts at 0 and clamps to the last frame (official clamp)
    for k in range(10):
        assert clip_indices(5, SPEC, 30, k, 10).tolist() == [0, 2, 4, 4, 4, 4, 4, 4]
    assert clip_indices(1, SPEC, 30, 0, 1).tolist() == [0] * 8
    # a stream that ended before a full window: same rule on what arrived
    assert stream_indices(SPEC, 30, 5).tolist() == [0, 2, 4, 4, 4, 4, 4, 4]
    assert stream_indices(SPEC, 30, 16).tolist() == [0, 2, 4, 6, 8, 10, 12, 15]


def test_zero_frames_refused():
    with pytest.raises(SourceError, match="no frames"):
        clip_indices(0, SPEC, 30, 0, 1)


def test_frame_list_equals_array():
    spec = InputSpec(num_frames=3, short_side=40, crop_size=32)
    frames = np.random.default_rng(5).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    pre = Preprocessor(spec)
    for s in (0, 1, 2):
        np.testing.assert_array_equal(pre(list(frames), s), pre(frames, s))


# -- the fast path's own corners (the reference above stays the judge) ----------------------------
X3D_SPEC = InputSpec(num_frames=3, short_side=160, crop_size=160, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))


@pytest.mark.parametrize("h,w", [(240, 320), (480, 640), (720, 1280)])
def test_x3d_s_input_from_typical_frames_matches_torch(h, w):
    """X3D-S's 160x160 input from 240p..720p frames (the sizes the speed target is quoted for):
    320 -> 213 and 1280 -> 284 are ratios whose float32 scale is inexact, where cv2.resize would miss."""
    frames = np.random.default_rng(h).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    pre = Preprocessor(X3D_SPEC)
    for s in (0, 1, 2):
        np.testing.assert_allclose(pre(frames, s), torch_reference(frames, X3D_SPEC, s), rtol=0, atol=1e-5)


def test_strided_and_float_frames_equal_contiguous_uint8():
    """Views (a decoder's cropped or flipped frame) and float frames of the same values go through
    the same arithmetic: identical output."""
    spec = InputSpec(num_frames=3, short_side=40, crop_size=32)
    big = np.random.default_rng(7).integers(0, 256, (3, 60, 90, 3), dtype=np.uint8)
    view = big[:, 5:55, ::-1][:, :, 10:80]  # non-contiguous [3,50,70,3]
    pre = Preprocessor(spec)
    np.testing.assert_array_equal(pre(view, 1), pre(np.ascontiguousarray(view), 1))
    np.testing.assert_array_equal(pre(list(view.astype(np.float32)), 2), pre(view, 2))


def test_bad_frames_are_one_line_errors():
    from atfr.errors import ATFRError
    pre = Preprocessor(InputSpec(num_frames=2, short_side=16, crop_size=16))
    with pytest.raises(ATFRError, match="no frames"):
        pre([])
    with pytest.raises(ATFRError, match=r"\[T,H,W,3\]"):
        pre(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ATFRError, match="same size"):
        pre([np.zeros((16, 20, 3), np.uint8), np.zeros((16, 21, 3), np.uint8)])
