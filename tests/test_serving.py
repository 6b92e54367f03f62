"""runtime/serving/service.py without a server: request checks, the frames transform, response tensors,
GFLOPs saved. (The servers themselves: tests/test_serve.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from atfr.errors import ATFRError


@pytest.fixture(scope="module")
def service(tiny_export):
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.serving.service import ClipService, ServeLimits

    return ClipService(Pipeline.load(tiny_export), topk=3, limits=ServeLimits(max_side=256, max_clips=4, max_request_mib=5))


def test_frames_are_preprocessed_like_atfr_run(service):
    from atfr.runtime.video.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    pre = Preprocessor(service.m.input)  # what atfr run's worker does per clip
    for size in ((40, 70), (20, 24)):  # downscaled, and upscaled to the 32 px short side
        frames = rng.integers(0, 256, (2, 8) + size + (3,), dtype=np.uint8)
        got = service.frames_to_clips(frames)
        want = np.stack([pre.pack(pre(frames[i], 1))[0] for i in range(2)])
        assert got[0].dtype == np.float32 and got[0].shape == (2, 3, 8, 32, 32)
        np.testing.assert_array_equal(got[0], want)


@pytest.mark.parametrize("frames,msg", [
    (np.zeros((1, 8, 40, 40, 3), np.float32), "frames: expected uint8 RGB, got float32"),
    (np.zeros((1, 8, 40, 40), np.uint8), "frames: expected shape [N,T,H,W,3], got [1, 8, 40, 40]"),
    (np.zeros((1, 6, 40, 40, 3), np.uint8), "frames: 6 frames per clip, the model takes 8"),
    (np.zeros((1, 8, 300, 40, 3), np.uint8), "frames: 300x40 exceeds the limit of 256 pixels per side"),
    (np.zeros((1, 8, 7, 40, 3), np.uint8), "frames: frames of 7x40 are too small"),
    (np.zeros((5, 8, 40, 40, 3), np.uint8), "frames: 5 clips in one request, the limit is 4"),
    (np.zeros((0, 8, 40, 40, 3), np.uint8), "frames: empty batch"),
    # 4 x 8 x 256 x 256 x 3 bytes = 6 MiB, over the fixture's 5 MiB
    (np.broadcast_to(np.uint8(0), (4, 8, 256, 256, 3)),
     "frames: 4 clip(s) of 8 frames of 256x256 are 6.0 MiB, the limit is 5 MiB per request"),
])
def test_bad_frames_get_one_line(service, frames, msg):
    with pytest.raises(ATFRError) as e:
        service.frames_to_clips(frames)
    assert str(e.value) == msg


def test_bad_clips_get_one_line(service):
    ok = np.zeros((1, 3, 8, 32, 32), np.float32)
    with pytest.raises(ATFRError, match=r"^clip0: expected float32, got float64$"):
        service.check_clips([ok.astype(np.float64)])
    with pytest.raises(ATFRError, match=r"^expected 1 clip input\(s\) \(clip0\), got 2$"):
        service.check_clips([ok, ok])
    nan = ok.copy()
    nan[0, 1, 2, 3, 4] = np.nan
    with pytest.raises(ATFRError, match=r"^pathway 0: the clip contains NaN or Inf values$"):
        service.check_clips([nan])
    with pytest.raises(ATFRError, match=r"does not match the export \[N,3,8,32,32\]$"):
        service.check_clips([ok[:, :, :4]])


def test_outputs_and_gflops_saved_follow_the_results(service, tiny_export):
    import json

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 8, 32, 32)).astype(np.float32)
    res = service.infer(service.check_clips([x]))
    out = service.outputs(res)
    assert out["probs"].shape == (3, 5) and out["bprime"].shape == (3, 1) and out["topk_label"].shape == (3, 3)
    for i, r in enumerate(res):
        assert out["bprime"][i].tolist() == list(r.bprime)
        assert out["topk_index"][i].tolist() == r.top(3)
        assert [v.decode() for v in out["topk_label"][i]] == [f"class{k}" for k in r.top(3)]
        np.testing.assert_array_equal(out["logits"][i], r.logits)
    # the manifest's table, read independently: static - total at this B'
    table = {tuple(row["bprime"]): row for row in json.loads((tiny_export / "atfr.json").read_text())["gflops"]["vs_bprime"]}
    for r in res:
        row = table[r.bprime]
        assert service.gflops_saved(r.bprime) == pytest.approx(row["static"] - row["total"], rel=1e-12)
    assert service.gflops_saved((99,)) == 0.0  # a B' outside the table counts nothing


def test_request_limit_is_checked_before_allocating(service, monkeypatch):
    """An over-limit request is refused from its shape alone: the transform never runs."""
    calls = []

    class Spy:  # stands in for the Preprocessor: records whether the transform started
        pack = staticmethod(lambda clip: clip)

        def __call__(self, *a, **k):
            calls.append(a)
            raise AssertionError("the transform ran")

    big = np.broadcast_to(np.uint8(7), (4, 8, 256, 256, 3))  # a view: 6 MiB never allocated here
    with monkeypatch.context() as mp:
        mp.setattr(service, "pre", Spy())
        with pytest.raises(ATFRError, match="the limit is 5 MiB per request$"):
            service.frames_to_clips(big)
        with pytest.raises(AssertionError, match="the transform ran"):  # the spy does see a request within
            service.frames_to_clips(np.zeros((1, 8, 40, 40, 3), np.uint8))
    assert len(calls) == 1
    # at the limit (5 MiB = 4 clips of 8 x 256 x 213 x 3 bytes is 4.99 MiB) it is served
    assert service.frames_to_clips(np.zeros((4, 8, 256, 213, 3), np.uint8))[0].shape == (4, 3, 8, 32, 32)


def test_refusals_format_as_one_line_without_traceback():
    """PyTriton 0.7 answers a failed callable with traceback.format_exception of its exception."""
    import traceback

    from atfr.runtime.serving.answers import refusal

    def answer(exc: BaseException, i: int, n: int) -> str:
        try:
            try:
                raise exc
            except Exception as e:  # noqa: BLE001
                raise refusal(e, i, n) from None
        except Exception as e:  # noqa: BLE001
            return "".join(traceback.format_exception(None, e, e.__traceback__))

    assert answer(ATFRError("pathway 0: the clip contains NaN or Inf values"), 0, 1) == \
        "atfr: pathway 0: the clip contains NaN or Inf values\n"
    assert answer(ATFRError("frames: frames of 7x40 are too small"), 2, 3) == \
        "atfr: request 2 of 3 in this batch: frames: frames of 7x40 are too small\n"
    # anything else: its type and first line only (the traceback goes to the server's log)
    assert answer(ValueError("bad value\n  at /srv/secret/path.py"), 0, 1) == \
        "atfr: internal error: ValueError: bad value\n"
