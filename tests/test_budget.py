"""The latency budget (atfr run --latency-budget): the B_run controller on a deterministic fake
latency model, then once through StreamRunner with a delay injected in the back stage."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from atfr.errors import ATFRError
from atfr.runtime.budget import BudgetController


def _drive(c: BudgetController, latency, n: int, start: int = 0) -> list[int]:
    """Feed ``n`` clips; latency(clip_no, b_run) -> ms. Returns B_run per clip."""
    used = []
    for i in range(start, start + n):
        used.append(c.bins)
        c.observe(latency(i, c.bins))
    return used


def _reaction_bound(c: BudgetController) -> int:
    # module doc: at most 1 + ceil(log2 B) decreases, each after min_over clips over budget
    return c.min_over * (1 + math.ceil(math.log2(c.max_bins)))


def test_no_pressure_no_change():
    c = BudgetController(budget_ms=50, max_bins=16)
    used = _drive(c, lambda i, b: 10 + 2 * b, 500)  # 42 ms at B = 16: under budget, without headroom
    assert set(used) == {16} and c.changes == 0


def test_single_spike_is_not_a_slowdown():
    c = BudgetController(budget_ms=50, max_bins=16)
    used = _drive(c, lambda i, b: 500.0 if i % 40 == 7 else 20.0, 400)
    assert set(used) == {16} and c.changes == 0


def test_slowdown_lowers_bins_within_bound_and_recovers():
    budget, onset, end = 60.0, 100, 700

    def lat(i, b):  # the back stage costs 2 ms per bin, 12 ms per bin while slowed down
        return 10 + (12 if onset <= i < end else 2) * b

    c = BudgetController(budget_ms=budget, max_bins=16)
    used = _drive(c, lat, 1400)
    assert set(used[:onset]) == {16}
    # reacts within the bound: from then on every clip of the slow phase fits the budget
    bound = _reaction_bound(c)
    first_fit = next(i for i in range(onset, end) if lat(i, used[i]) <= budget)
    assert first_fit - onset <= bound
    slow = [lat(i, used[i]) for i in range(onset + bound, end)]
    assert np.percentile(slow, 95) <= budget
    assert max(used[onset + bound:end]) <= 4  # 10 + 12*5 = 70 ms does not fit
    changes_slow = sum(a != b for a, b in zip(used[onset + bound:end], used[onset + bound + 1:end]))
    assert changes_slow <= 2  # 4 fits without headroom (58 > 0.8*60): no probing, no oscillation
    # recovers after the slowdown: one bin per window of headroom (plus the probe wait at the
    # remembered ceiling), back to B
    recover = (16 - 1) * c.window + c.window * 2 ** c.max_backoff
    assert used[end + recover:] and set(used[end + recover:]) == {16}


def test_probing_a_too_slow_setting_backs_off():
    """b = 5 fits with headroom, 6 does not fit at all: the controller probes 6 again and again, but
    each failed probe doubles the wait (capped), so changes grow with log(N) then one probe per
    window * 2**max_backoff clips; the p95 stays under budget."""
    budget, n = 50.0, 3000

    def lat(i, b):
        return 20.0 if b <= 5 else 100.0

    c = BudgetController(budget_ms=budget, max_bins=16)
    used = _drive(c, lat, n)
    lats = [lat(i, b) for i, b in enumerate(used)]
    assert np.percentile(lats[_reaction_bound(c):], 95) <= budget
    cap = c.window * 2 ** c.max_backoff
    # down 16 -> 8 -> 4, up to 5 (2 windows), then pairs of (probe 6, back to 5)
    probes = (c.max_backoff + 1) + n // cap
    assert c.changes <= 4 + 2 * probes, c.changes
    assert used[-1] == 5 or used[-1] == 6 and used[-2] == 5


def test_unreachable_budget_stops_at_one_bin():
    c = BudgetController(budget_ms=5, max_bins=16)
    used = _drive(c, lambda i, b: 20.0 + b, 200)
    assert used[-1] == 1 and c.unreachable
    assert c.changes <= 1 + math.ceil(math.log2(16))


def test_bad_budget():
    with pytest.raises(ATFRError, match="--latency-budget"):
        BudgetController(budget_ms=0, max_bins=8)


# -- through StreamRunner ---------------------------------------------------------------------------
class _DelayedBack:
    """Wraps the back graph runner: while ``slow(clip)`` holds, sleeps in proportion to B_run."""

    def __init__(self, inner, pipeline, slow, ms_at_b):
        self.inner, self.pipeline, self.slow, self.ms_at_b = inner, pipeline, slow, ms_at_b
        self.calls = 0

    def run(self, feeds):
        if self.slow(self.calls):
            time.sleep(self.ms_at_b * self.pipeline.bins / self.pipeline.trained_bins / 1e3)
        self.calls += 1
        return self.inner.run(feeds)


def test_stream_runner_follows_the_budget(tiny_export, tmp_path):
    """A delay injected in the back stage from clip 10 to 39: B_run goes down within the bound,
    then back to B; each clip's B_run is in the jsonl and the summary."""
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.streaming.runner import RunOptions, StreamRunner
    from atfr.runtime.video.sources import FrameStream, SimulatedSource

    pl = Pipeline.load(tiny_export, "onnxruntime")
    b = pl.trained_bins
    budget = 100.0  # the tiny model takes ~10-30 ms here; the delay is 240 ms at B, 60 ms at B/4
    pl.back = _DelayedBack(pl.back, pl, lambda k: 10 <= k < 40, 240.0)
    n = 40 + (b - 1) * 10 + 10 * 2 + 10  # slow phase, then the climb back (window 10) with margin
    src = SimulatedSource(num_frames=n + 64, fps=30.0, size=(40, 48), pace=False)
    ev = tmp_path / "ev.jsonl"
    with open(ev, "w") as f:
        runner = StreamRunner(pl, FrameStream(src, max_retries=0, lossless=True),
                              RunOptions(stride=1, lossless=True, max_clips=n, latency_budget_ms=budget), events=f)
        s = runner.run()
    events = [json.loads(line) for line in ev.read_text().splitlines()]
    used = [e["bins"] for e in events]
    assert len(used) == n and used[:10] == [b] * 10
    bound = runner.budget.min_over * (1 + math.ceil(math.log2(b)))
    assert max(used[10 + bound:40]) <= b // 2  # the delay at B/2 (120 ms) is over budget
    assert used[-1] == b  # back to the trained B after the delay went away
    for e in events:
        assert all(bp <= e["bins"] for bp in e["bprime"])
    assert s.bins_changes <= 2 + 2 + b  # down (at most log2 B), up one by one, one failed probe
    assert sum(s.bins_hist.values()) == n and "bins used (B_run)" in "\n".join(s.lines())
    assert s.to_json()["latency_budget_ms"] == budget
    text = runner.overlay_text(runner._latest, None)
    assert f"bins {b}/{b}, budget 100 ms" in text and any(line.startswith("B' ") and line.endswith(f"/{b}")
                                                           for line in text)


def test_atfr_run_cli_budget_and_bins(tiny_export, tmp_path, capsys):
    """`atfr run --latency-budget` and `--bins` end to end: exit 0, B_run in every event and in the
    summary; a bad budget is one line, exit 2."""
    from atfr.cli import main
    from test_video_run import write_video

    video = write_video(tmp_path / "v.avi", 40)
    for extra, check in ((["--latency-budget", "10000"], lambda bins, b: bins == [b] * len(bins)),
                         (["--bins", "2"], lambda bins, b: bins == [2] * len(bins))):
        ev = tmp_path / "ev.jsonl"
        rc = main(["run", str(tiny_export), "--source", str(video), "--fast", "--stride", "4",
                   "--jsonl", str(ev), "--force", *extra])
        out = capsys.readouterr().out
        assert rc == 0
        events = [json.loads(line) for line in ev.read_text().splitlines()]
        from atfr.runtime.manifest import load_manifest

        b = load_manifest(tiny_export).sgs[0].bins
        assert events and check([e["bins"] for e in events], b)
        assert "bins used (B_run)" in out
    rc = main(["run", str(tiny_export), "--source", str(video), "--latency-budget", "-5"])
    err = capsys.readouterr().err
    assert rc == 2 and "--latency-budget -5" in err and len(err.strip().splitlines()) == 1
