"""Drawing a ``StreamRunner``'s overlay on each frame and handing it to ``on_frame`` (save, show);
in lossless mode, holding frames until the clip they show is done. Torch-free."""

from __future__ import annotations

import collections
from typing import Any, Callable

import numpy as np


class FrameDrawer:
    """The overlay of one run: the newest clip's result on each frame, or the buffering state."""

    def __init__(self, manifest: Any, pipeline: Any, latency_budget_ms: float | None, window: int,
                 on_frame: Callable[[np.ndarray], bool] | None, unit: str = "clip"):
        self.m = manifest
        self.pipeline = pipeline
        self.latency_budget_ms = latency_budget_ms
        self.window = window
        self.on_frame = on_frame
        self.unit = unit  # what one result's latency is per (clip; frame for per-frame models)

    def overlay_text(self, result: tuple, fps: float | None) -> list[str]:
        """The overlay lines for one clip's result (``ClipResults.latest``)."""
        from atfr.runtime.video.overlay import overlay_lines

        topk, bprime, latency, cps, b_run, *extra = result
        lines = overlay_lines(topk, bprime, latency, fps, [b_run or layer.bins for layer in self.m.sgs], cps,
                              unit=self.unit)
        if extra and extra[0]:  # the model family's lines (AdaFuse: the policy) under the top-k
            lines[len(topk):len(topk)] = list(extra[0])
        if b_run is not None:  # "B' 3/8" above reads against B_run; say it is not the trained B
            budget = f", budget {self.latency_budget_ms:g} ms" if self.latency_budget_ms else ""
            lines.append(f"bins {b_run}/{self.pipeline.trained_bins}{budget}")
        return lines

    def draw(self, frame: Any, result: tuple | None, buffered: int, fps: float | None) -> bool:
        """Annotate ``frame`` (RGB) as BGR and pass it on; False when on_frame says stop."""
        import cv2

        from atfr.runtime.video.overlay import draw_lines

        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        if result is not None:
            draw_lines(bgr, self.overlay_text(result, fps))
        else:
            draw_lines(bgr, [f"buffering {buffered}/{self.window}" if buffered < self.window else "first clip running"])
        return self.on_frame(bgr) is not False


class PendingFrames:
    """Lossless overlay: frames wait until the newest clip ending at or before them is done, so the
    three stages overlap and the saved video does not depend on machine speed. At most ``cap``
    frames wait, and no more than ``max_bytes`` of them (they are full size: 7 at 4K for 192 MB);
    beyond that the main loop blocks on the oldest one's clip (which only costs overlap)."""

    def __init__(self, results: Any, halted: Callable[[], bool], draw: Callable[..., bool], cap: int,
                 max_bytes: int | None = None):
        self.results = results  # ClipResults
        self.halted = halted
        self.draw = draw
        self.cap = cap
        self.max_bytes = max_bytes
        self._q: collections.deque = collections.deque()  # (frame, seq it shows, buffered, fps)

    def __bool__(self) -> bool:
        return bool(self._q)

    def add(self, frame: Any, seq: int, buffered: int, fps: float | None) -> bool:
        """Queue a frame, then draw what is ready; False when on_frame says stop."""
        self._q.append((frame, seq, buffered, fps))
        if self.max_bytes is not None and len(self._q) == 1:
            self.cap = min(self.cap, max(1, self.max_bytes // max(1, frame.image.nbytes)))
        return self.flush(final=False)

    def flush(self, final: bool) -> bool:
        """Draw the pending frames whose clip is done, oldest first; while more than ``cap`` wait,
        block on the oldest one's clip. ``final`` (stages joined): draw them all, a frame whose clip
        never ran (stop, clip limit) with the newest result. False when on_frame says stop."""
        r = self.results
        cap = 0 if final else self.cap
        while self._q:
            frame, seq, buffered, fps = self._q[0]
            with r.cond:
                if not final:
                    while seq > r.done_seq and len(self._q) > cap and not self.halted():
                        r.cond.wait(0.05)
                    if seq > r.done_seq:
                        return True  # not done yet (or stopping): drawn later / by the final pass
                result = r.by_seq.get(seq, r.latest) if seq >= 0 else None
                for k in [k for k in r.by_seq if k < seq]:
                    del r.by_seq[k]
            self._q.popleft()
            if not self.draw(frame, result, buffered, fps):
                return False
        return True
