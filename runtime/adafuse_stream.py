"""``atfr run`` on an AdaFuse export: each frame through the online graph once. Torch-free.

A stream model for ``StreamRunner`` (runtime/streaming/models.py). The state (per gated block, the
previous frame's pooled block input and conv1 output) is carried from frame to frame for the whole
stream, from zeros at its first frame (and again after a resolution change, which restarts the
window as for ATFR). A result is the mean of the frame logits of the last T frames the model saw
(T = the export's clip length: the clip window), every ``stride`` source frames once T frames were
seen. So the window's first frame starts from the state the stream has, as a streaming model does:
frame t of the stream equals frame t of the clip model run over the whole stream as one long clip
from a zero state at its start (tests/test_adafuse_run.py). The first window is exactly the clip
graph on its T frames; a later one differs from a clip started at its first frame only through that
carried state. A source shorter than T gives one result, its last frame repeated up to T (padded).

AdaFuse-TSM's online graph is ``delay`` frames behind its input (one per shifted block: TSM's shift
reads the next frame; models/adafuse_online_tsm.py), so its window is the T frames that end ``delay``
model frames before the newest one (``delay_frames`` in the jsonl), and the first result comes after
T + delay frames. A source shorter than that is padded to T frames as above and then flushed (the
graph runs ``delay`` more steps with no frame, as the clip graph's zero padding past the end): its
one result is the clip graph's on the padded clip. A longer stream is not flushed at its end.

Per result (jsonl and overlay): skip/reuse/keep fractions over every gated channel, of the result's
frame and of the window (the mean over its T frames), and GFLOPs per frame as the online graph
needs them (``frame_gflops``: Eq. 5 counted causally) beside the dense count.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atfr.errors import ATFRError

from .adafuse_clip import AdaFuseOnlineRunner
from .adafuse_gflops import frame_gflops
from .pipeline import softmax
from atfr.runtime.streaming.models import FrameFeed, StreamResult
from atfr.runtime.streaming.stages import Job

ACTIONS = ("skip", "reuse", "keep")  # policy values 0, 1, 2


@dataclass
class _Frame:
    logits: np.ndarray  # [K]
    counts: np.ndarray  # [3]: gated channels skipped / reused / kept
    gflops: float


def _fractions(counts: np.ndarray) -> dict[str, float]:
    total = int(counts.sum())
    return {a: int(c) / total for a, c in zip(ACTIONS, counts)}


class AdaFuseStream:
    """The online graph (``AdaFuseOnlineRunner``) as a per-frame stream model."""

    unit = "frame"

    def __init__(self, runner: AdaFuseOnlineRunner):
        self.runner = runner
        self.manifest = runner.manifest
        ada = self.manifest.raw["adafuse"]
        self.base = float(ada["base_gflops_per_frame"])
        self.convs = [tuple(c) for c in ada["block_conv_flops"]]
        self.frames_in_window = int(self.manifest.input.num_frames)
        self.delay = runner.delay
        self.fed = 0  # frames of the stream through the graph since the (re)start
        self.stride = 1
        self.frames_run = 0  # frames through the graph, padding included
        self._window: collections.deque[_Frame] = collections.deque(maxlen=self.frames_in_window)
        self._prev: list[np.ndarray] | None = None
        self._epoch = 0
        self._last_emit: int | None = None

    @classmethod
    def load(cls, outdir: str | Path, backend: str = "auto", providers: str | None = None,
             graph: str = "online") -> "AdaFuseStream":
        """backend: onnxruntime (``<graph>.onnx``), tensorrt (``<graph>.engine`` from 'atfr build') or auto."""
        return cls(AdaFuseOnlineRunner.load(outdir, providers, graph=graph, backend=backend))

    # -- the stream model interface (runtime/streaming/models.py) ----------------------------------
    def window_size(self, fps: float) -> int:
        return self.frames_in_window + self.delay

    def new_window(self, size: int, stride: int, reduce: Callable | None, fps: float) -> FrameFeed:
        from atfr.runtime.video.sampling import clip_span

        self.stride = stride  # set before the feed makes its first job
        self.frames_run = 0
        self._restart(0)  # a new run is a new stream (the same model may serve several runs)
        return FrameFeed(size, clip_span(self.manifest.input, fps) / self.frames_in_window, reduce)

    def prepare(self, pre: Any, job: Job, fps: float) -> None:
        job.inputs = [pre(job.images or [], 1).transpose(1, 0, 2, 3)]  # [3,1,S,S] -> one frame [1,3,S,S]

    def infer(self, job: Job) -> StreamResult | None:
        if job.epoch != self._epoch:  # another resolution: a new stream
            self._restart(job.epoch)
        if job.padded:  # the last frame again up to T frames, then the flush of a delayed graph
            for _ in range(max(0, self.frames_in_window - self.fed)):
                self._step(job.inputs[0])
            for _ in range(self.delay):
                self._step(job.inputs[0], exists=False)
        else:
            self._step(job.inputs[0])
        due = len(self._window) == self.frames_in_window and (
            self._last_emit is None or job.frame_index - self._last_emit >= self.stride)
        if not (due or job.padded):
            return None
        self._last_emit = job.frame_index
        return self._result()

    # -- one frame, one result ------------------------------------------------------------------
    def _restart(self, epoch: int) -> None:
        """Zero state, empty window."""
        self._epoch = epoch
        self._window.clear()
        self._prev = None
        self._last_emit = None
        self.fed = 0
        self.runner.reset()

    def _step(self, frame: np.ndarray, exists: bool = True) -> None:
        if not np.isfinite(frame).all():
            raise ATFRError("the frame contains NaN or Inf values")
        logits, policy, ok = self.runner.advance(frame, exists)  # the state carries to the next frame
        self.frames_run += 1
        self.fed += int(exists)
        if not ok:  # a delayed graph still filling: its output frame precedes the stream
            return
        pol = [p[0] for p in policy]
        counts = np.bincount(np.concatenate([p.ravel() for p in pol]).astype(np.int64), minlength=3)[:3]
        self._window.append(_Frame(logits[0].astype(np.float32), counts,
                                   frame_gflops(pol, self._prev, self.base, self.convs)))
        self._prev = pol

    def _result(self) -> StreamResult:
        w = list(self._window)
        lg = np.mean(np.stack([f.logits for f in w]), axis=0, dtype=np.float64).astype(np.float32)
        if not np.isfinite(lg).all():
            raise ATFRError("the model produced NaN/Inf logits for this frame")
        frame, window = _fractions(w[-1].counts), _fractions(np.sum([f.counts for f in w], axis=0))
        g_window = float(np.mean([f.gflops for f in w]))
        event = {"window_frames": len(w),
                 "policy": {"frame": frame, "window": window},
                 "gflops_per_frame": {"frame": w[-1].gflops, "window": g_window, "dense": self.base}}
        if self.delay:
            event["delay_frames"] = self.delay
        pct = ["/".join(f"{round(100 * f[a])}" for a in ACTIONS) for f in (window, frame)]
        overlay = (f"skip/reuse/keep {pct[0]}% (frame {pct[1]}%)",
                   f"GFLOPs/frame {g_window:.3g} of {self.base:.3g} (-{100 * (1 - g_window / self.base):.0f}%)")
        return StreamResult(lg, softmax(lg), (), event=event, overlay=overlay)
