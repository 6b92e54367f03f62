"""Recording each clip of a ``StreamRunner`` run: the jsonl event, the summary counters, the result
the overlay shows, and the --print line. Torch-free."""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any, Callable

from atfr.errors import ATFRError


def write_error(name: str, e: OSError) -> ATFRError:
    """The one line for an output that cannot be written (disk full, read-only)."""
    return ATFRError(f"{name}: cannot write ({e.strerror or type(e).__name__})")


class ClipResults:
    """The results the overlay reads: the newest clip's (live drawing) and, in lossless mode, each
    clip's by submission number until its frames are drawn. ``cond`` shares the run's lock."""

    def __init__(self, lock: threading.Lock, keep_all: bool):
        self.cond = threading.Condition(lock)
        self.keep_all = keep_all
        # (topk, bprime, latency_ms, clips_per_s, B_run, overlay lines of the model) of the newest clip
        self.latest: tuple | None = None
        self.by_seq: dict[int, tuple] = {}  # lossless overlay: seq -> the same tuple
        self.done_seq = -1  # lossless: highest seq recorded (jobs are recorded in order)
        self._done_times: collections.deque[float] = collections.deque(maxlen=16)

    def publish(self, seq: int, now: float, topk: list, bprime: tuple, latency: float, b_run: int | None,
                extra: tuple[str, ...] = ()) -> None:
        """Called with the lock held, once per recorded clip."""
        self._done_times.append(now)
        t = self._done_times
        n = len(t)
        cps = (n - 1) / (t[-1] - t[0]) if n > 1 and now > t[0] else None
        self.latest = (topk, bprime, latency, cps, b_run, extra)
        self.advance(seq)

    def advance(self, seq: int) -> None:
        """Job ``seq`` is done (with the lock held): its frames show the newest result."""
        if self.keep_all:
            self.by_seq[seq] = self.latest
        self.done_seq = max(self.done_seq, seq)
        self.cond.notify_all()


class ClipRecorder:
    """Records one inferred clip: the jsonl line first, then the summary and the overlay result,
    then the --print line. A clip whose event could not be written is neither counted nor shown
    (what the video and the summary report is in the jsonl)."""

    def __init__(self, manifest: Any, topk: int, summary: Any, results: ClipResults, lock: threading.Lock,
                 events: Any, status: Any, on_closed: Callable[[str], None]):
        self.m = manifest
        self.topk = topk
        self.summary = summary
        self.results = results
        self.lock = lock
        self.events = events
        self.status = status
        self.on_closed = on_closed  # the status pipe closed: a quiet stop

    def record(self, job: Any, res: Any, infer_ms: float) -> None:
        latency = job.preprocess_ms + infer_ms
        top = res.top(self.topk)
        topk = [(self.m.label(i), float(res.probs[i])) for i in top]
        bprime = tuple(int(b) for b in res.bprime)
        now = time.perf_counter()
        clip_no = self.summary.clips  # only the inference thread changes it
        if self.events is not None:
            self._event(job, top, topk, bprime, latency, infer_ms, now, clip_no, getattr(res, "event", None))
        extra = tuple(getattr(res, "overlay", ()))
        with self.lock:
            self._count(job, latency, infer_ms, bprime)
            self.results.publish(job.seq, now, topk, bprime, latency, job.bins, extra)
        if self.status is not None:
            self._status_line(job, topk, bprime, latency, clip_no, extra)

    def skip(self, job: Any, infer_ms: float) -> None:
        """A job without a result (a per-frame model between two results): its time is counted and
        its frames show the newest result."""
        with self.lock:
            self.summary.infer_ms_total += infer_ms
            self.summary.preprocess_ms_total += job.preprocess_ms
            self.results.advance(job.seq)

    def _event(self, job: Any, top: list[int], topk: list, bprime: tuple, latency: float, infer_ms: float,
               now: float, clip_no: int, extra: dict | None = None) -> None:
        ev = {"clip": clip_no, "frame": job.frame_index, "timestamp": round(job.timestamp, 4),
              "topk": [{"index": i, "label": lab, "prob": p} for i, (lab, p) in zip(top, topk)],
              "bprime": list(bprime), "latency_ms": latency,
              "preprocess_ms": job.preprocess_ms, "infer_ms": infer_ms,
              "e2e_ms": (now - job.t_submit) * 1e3}
        if job.bins is not None:
            ev["bins"] = job.bins
        if job.padded:
            ev["padded"] = True
        ev.update(extra or {})  # the model family's fields (AdaFuse: policy, gflops)
        try:
            self.events.write(json.dumps(ev) + "\n")
            self.events.flush()
        except OSError as e:
            raise write_error(getattr(self.events, "name", "events"), e) from None

    def _count(self, job: Any, latency: float, infer_ms: float, bprime: tuple) -> None:
        s = self.summary
        s.clips += 1
        s.latencies_ms.append(latency)
        s.infer_ms_total += infer_ms
        s.preprocess_ms_total += job.preprocess_ms
        s.padded_clips += int(job.padded)
        for i, b in enumerate(bprime):
            if i < len(s.bprime_hist):
                s.bprime_hist[i][b] = s.bprime_hist[i].get(b, 0) + 1
        if job.bins is not None:
            s.bins_hist[job.bins] = s.bins_hist.get(job.bins, 0) + 1

    def _status_line(self, job: Any, topk: list, bprime: tuple, latency: float, clip_no: int,
                     extra: tuple[str, ...] = ()) -> None:
        """One human line per clip (atfr demo, atfr run --print)."""
        from atfr.display import format_percent

        b_run = job.bins
        try:
            self.status.write(f"  clip {clip_no:3d} @frame {job.frame_index:5d}: {topk[0][0]} "
                              f"({format_percent(topk[0][1])})  "
                              + ("  ".join(extra) if extra else f"B'={list(bprime)}")
                              + (f" bins={b_run}" if b_run is not None else "") + f"  {latency:.1f} ms\n")
            self.status.flush()
        except BrokenPipeError:
            self.on_closed("output-closed")  # `atfr run --print | head`: the reader had enough
        except OSError as e:
            raise write_error(getattr(self.status, "name", "status"), e) from None

