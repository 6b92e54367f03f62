"""Seed 003's throughput protocol (atfr.bench.throughput): search, OOM recovery, B' workload, CLI."""

from __future__ import annotations

import json

import pytest

from atfr.bench.throughput import (GIB, Probe, ThroughputOptions, bprime_assignment, find_max_batch, gflops_for,
                                   run_probe, run_throughput)
from atfr.cli import main
from atfr.runtime.manifest import load_manifest

MIB = 1 << 20


def _fake(base: int, per_clip: int, fails_above: int | None = None):
    """peak(b) = base + per_clip * b; batches above ``fails_above`` die (an OOM the memory model
    did not predict). Records the batches that actually ran."""
    ran: list[int] = []

    def probe(b: int) -> Probe:
        ran.append(b)
        if fails_above is not None and b > fails_above:
            return Probe(b, "oom", message="simulated")
        return Probe(b, "ok", base + per_clip * b)
    return probe, ran


def test_search_finds_the_largest_batch_under_the_budget():
    # base 500 MiB, 30 MiB per clip, budget 2 GiB: (2048 - 500) / 30 = 51.6 -> 51.
    probe, ran = _fake(500 * MIB, 30 * MIB)
    best, log = find_max_batch(probe, 2048 * MIB)
    assert best == 51
    assert ran[:6] == [1, 2, 4, 8, 16, 32]
    # 64 is predicted at 2420 MiB: refused without running; the bisection runs only batches that fit.
    assert 64 not in ran and any(p.batch == 64 and p.status == "refused" for p in log)
    assert all(500 * MIB + 30 * MIB * b <= 2048 * MIB for b in ran)


def test_search_recovers_from_unpredicted_oom():
    probe, ran = _fake(100 * MIB, 1 * MIB, fails_above=37)
    best, log = find_max_batch(probe, 100 * GIB, max_probes=20)
    assert best == 37
    assert ran == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert [p.status for p in log if p.batch in (64, 48, 40, 38)] == ["oom"] * 4


def test_search_is_bounded():
    probe, ran = _fake(0, 1)
    best, _ = find_max_batch(probe, 100 * GIB, max_batch=100)
    assert best == 100 and max(ran) == 100
    probe, ran = _fake(0, 1)
    best, _ = find_max_batch(probe, 100 * GIB, max_batch=10_000, max_probes=5)
    assert len(ran) == 5 and best == 16  # 1, 2, 4, 8, 16 and no more runs
    probe, ran = _fake(3 * GIB, 1)
    assert find_max_batch(probe, 2 * GIB)[0] == 0 and ran == [1]


def test_bprime_workload_follows_the_export_statistics(tiny_export):
    m = load_manifest(tiny_export)
    vals = m.bprime_stats["layers"][0]["values"]
    a = bprime_assignment(m, 2 * len(vals) + 1)
    assert [x[0] for x in a] == (vals * 3)[: len(a)]
    table = {tuple(r["bprime"]): r["total"] for r in m.gflops["vs_bprime"]}
    assert gflops_for(m, a) == pytest.approx(sum(table[x] for x in a) / len(a), rel=1e-12)
    assert gflops_for(m, a) < m.gflops["static"] * 1.5


def _spec(export, batch, budget):
    m = load_manifest(export)
    return {"export": str(export), "backend": "onnxruntime", "threads": 1, "plugin": None, "seed": 0,
            "budget": budget, "batch": batch, "warmup": 0, "reps": 1,
            "assignment": [list(x) for x in bprime_assignment(m, batch)]}


def test_a_real_out_of_memory_ends_only_the_probe(tiny_export):
    """The child caps its address space at its size + budget: 4096 clips (~1.6 GB of input
    alone at 8x32x32x3 floats... x 4096 = 400 MB, plus activations) cannot fit in 64 MB."""
    r = run_probe(_spec(tiny_export, 4096, 64 * MIB), timeout_s=300)
    assert r.status == "oom" and r.peak_bytes is None
    ok = run_probe(_spec(tiny_export, 2, 1 * GIB), timeout_s=300)
    assert ok.status == "ok" and ok.peak_bytes and len(ok.seconds) == 1


def test_run_throughput_end_to_end_and_cli(tiny_export, tmp_path, capsys):
    rep = run_throughput(ThroughputOptions(exports=[str(tiny_export)], mem_budget_gb=1.0, max_batch=4,
                                           warmup=0, reps=1, threads=1))
    (c,) = rep["candidates"]
    assert c["max_batch"] == 4 and c["status"] == "ok" and c["throughput"] > 0
    assert c["kind"] == "atfr" and c["gflops"] > 0
    assert all(p["peak_bytes"] <= rep["budget_bytes"] for p in c["search"] if p["status"] == "ok")
    out = tmp_path / "rep"
    argv = ["bench", str(tiny_export), "--throughput", "--mem-budget", "0.02", "--out", str(out), "--threads", "1"]
    assert main(argv) == 0  # 20 MB is below the interpreter itself: reported, not a crash
    r = json.loads((out / "throughput.json").read_text())
    assert r["candidates"][0]["max_batch"] == 0
    assert r["candidates"][0]["search"][0]["status"] in ("over_budget", "oom")
    assert (out / "throughput.md").exists()
    capsys.readouterr()
    assert main(argv) == 2  # never overwrite without --force
    assert "--force" in capsys.readouterr().err


def test_timed_run_falls_back_to_a_smaller_batch_that_fitted(tiny_export, monkeypatch):
    """Repeated runs can outgrow the probe: the timed run then uses the next smaller
    batch the search saw fit (batch 8 fits once but not repeatedly; 4 sustains)."""
    import atfr.bench.throughput as tp

    def fake(spec, timeout_s):
        b, timed = spec["batch"], spec["reps"] > 1  # search probes: 1 warm-up + 1 run
        if timed and b > 4:
            return Probe(b, "oom", message="simulated arena growth")
        return Probe(b, "ok", 100 * MIB + b * MIB, [0.5] * max(spec["reps"], 1))
    monkeypatch.setattr(tp, "run_probe", fake)
    c = tp.measure_candidate(str(tiny_export), ThroughputOptions(exports=[], max_batch=8, warmup=1, reps=3), GIB)
    assert c["max_batch_search"] == 8 and c["max_batch"] == 4
    assert c["throughput"] == pytest.approx(4 / 0.5)
    assert [a["batch"] for a in c["timed_attempts"]] == [8]
