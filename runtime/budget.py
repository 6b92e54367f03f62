"""Run-time bins (``--bins``) and the latency budget (``--latency-budget``). Torch-free.

A model trained with B bins runs with any B_run in 1..B (the ATFR paper's Table A.4): fewer bins
give fewer kept frames B' <= B_run, so the layers after SGS cost less, for a little accuracy.
``BudgetController`` picks B_run per clip so the recent p95 latency stays under a budget.

The controller (AIMD with hysteresis, in clips, not wall time, so it is deterministic to test):

* it keeps the latencies measured at the current B_run only (cleared on every change, so a
  decision never mixes settings); at most ``window`` of them;
* **decrease** (multiplicative): as soon as ``min_over`` of them exceed the budget (a single spike
  does not count), B_run is halved (or, right after an increase, set back to the value before it).
  From B to 1 that takes at most ``1 + ceil(log2 B)`` steps of ``min_over`` clips: the reaction
  time is bounded by ``min_over * (1 + ceil(log2 B))`` clips;
* **increase** (additive): after a full ``window`` whose p95 is under ``headroom * budget``,
  B_run goes up by one;
* **hysteresis**: a B_run that was left for being too slow is remembered (``ceiling``); going back
  to it needs ``window * 2**failures`` clips of headroom, the wait doubling after each failed
  probe (up to ``2**max_backoff``). A probe that holds for a full window clears the ceiling. So in
  a steady state where B_run = b fits and b + 1 does not, the controller makes at most two changes
  (probe, back) per ``window * 2**failures`` clips: O(log N) changes over N clips until the wait
  reaches its cap, then one probe per ``window * 2**max_backoff`` clips.
"""

from __future__ import annotations

import argparse
import collections
from dataclasses import dataclass, field

import numpy as np

from atfr.errors import ATFRError, check_range


def add_bins_argument(p: argparse.ArgumentParser) -> None:
    """``--bins B_run`` for every command that runs an export (run, predict, infer, bench, verify)."""
    p.add_argument("--bins", type=int, metavar="B_RUN",
                   help="run SGS with B_RUN bins, 1..the trained B (the paper's Table A.4: fewer GFLOPs after "
                        "SGS, a little accuracy; default: the trained B)")


def check_bins(manifest, bins: int | None) -> None:
    """One-line error (exit 2) unless ``bins`` is None or in 1..the trained B of every SGS layer."""
    if bins is None:
        return
    if not manifest.sgs:
        raise ATFRError(f"--bins {bins}: {manifest.name} has no SGS layer")
    check_range("--bins", bins, 1, min(layer.bins for layer in manifest.sgs), "(the trained number of bins)")


def add_budget_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latency-budget", type=float, metavar="MS",
                   help="pick the bins per clip so the p95 latency (pre-processing + inference) stays under MS "
                        "milliseconds, raising them again when there is headroom; starts at --bins or the trained B")


@dataclass
class BudgetController:
    """Chooses B_run for the next clip from the latencies of the previous ones (see module doc)."""

    budget_ms: float
    max_bins: int
    min_bins: int = 1
    window: int = 10  # latencies per increase decision (and kept at most)
    min_over: int = 2  # over-budget latencies at the current B_run that trigger a decrease
    headroom: float = 0.8  # increase only when p95 < headroom * budget
    max_backoff: int = 5  # the probe wait stops doubling at window * 2**max_backoff clips
    bins: int = 0  # current B_run (0: start at max_bins)
    changes: int = 0
    history: list[int] = field(default_factory=list)  # B_run per observed clip
    _recent: collections.deque = field(default_factory=collections.deque, repr=False)
    _ceiling: int = 0  # smallest B_run found too slow (0: none)
    _failures: int = 0
    _calm: int = 0  # clips of headroom since the last change
    _came_from: int = 0  # B_run before the last increase while that increase is unconfirmed

    def __post_init__(self) -> None:
        if not self.budget_ms > 0:
            raise ATFRError(f"--latency-budget {self.budget_ms:g}: must be > 0 ms")
        if not 1 <= self.min_bins <= self.max_bins:
            raise ATFRError(f"bins range {self.min_bins}..{self.max_bins} is empty")
        if self.window < 1 or self.min_over < 1 or not 0 < self.headroom <= 1:
            raise ValueError("window, min_over >= 1 and 0 < headroom <= 1")
        self.bins = self.bins or self.max_bins
        self.bins = min(max(self.bins, self.min_bins), self.max_bins)
        self._recent = collections.deque(maxlen=self.window)

    @property
    def p95_ms(self) -> float:
        """p95 of the latencies kept at the current B_run (0 when none yet)."""
        return float(np.percentile(list(self._recent), 95)) if self._recent else 0.0

    @property
    def unreachable(self) -> bool:
        """At the fewest bins and still over budget: the part before SGS alone is too slow."""
        return self.bins == self.min_bins and sum(v > self.budget_ms for v in self._recent) >= self.min_over

    def observe(self, latency_ms: float) -> int:
        """Record one clip's latency (run at the current B_run); returns B_run for the next clip."""
        self.history.append(self.bins)
        self._recent.append(float(latency_ms))
        over = sum(v > self.budget_ms for v in self._recent)
        if over >= self.min_over and self.bins > self.min_bins:
            if self._ceiling and self.bins >= self._ceiling:
                self._failures = min(self._failures + 1, self.max_backoff)  # a probe failed: wait longer
            else:
                self._ceiling, self._failures = self.bins, 0  # a new (or worse) slowdown
            # Back from a failed probe: to the setting that held a whole window; else halve.
            self._set(self._came_from if self._came_from else max(self.min_bins, self.bins // 2), up=False)
            return self.bins
        if over:
            self._calm = 0
            return self.bins
        self._calm += 1
        if self._calm >= self.window:
            self._came_from = 0  # the current setting held a window: a later slowdown halves from here
        if self._ceiling and self.bins >= self._ceiling and self._calm >= self.window:
            self._ceiling, self._failures = 0, 0  # the probe held a whole window: the slowdown is gone
        if len(self._recent) >= self.window and self.bins < self.max_bins and self.p95_ms < self.headroom * self.budget_ms:
            nxt = self.bins + 1
            wait = self.window * (2 ** self._failures if self._ceiling and nxt >= self._ceiling else 1)
            if self._calm >= wait:
                self._set(nxt, up=True)
        return self.bins

    def _set(self, b: int, up: bool) -> None:
        self._came_from = self.bins if up else 0
        if b != self.bins:
            self.bins = b
            self.changes += 1
        self._recent.clear()
        self._calm = 0
