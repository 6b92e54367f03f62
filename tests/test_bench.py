"""atfr bench: statistics, harness, environment parsers, report schema, plots, and a tiny end-to-end run.

No test asserts speed: timings are only checked for shape and consistency.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from atfr.bench import env as benv
from atfr.bench import stats as S
from atfr.bench.report import (OUTPUT_FILES, SCHEMA, SCHEMA_VERSION, ReportValidationError, plot_bprime_hist,
                               plot_latency_vs_bprime, plot_stages, to_markdown, validate_report, write_report)
from atfr.bench.timing import Candidate, measure_overhead, run_interleaved, time_one
from atfr.errors import ATFRError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- statistics ------------------------------------------------------------------------------------
# pytest.approx (relative 1e-6) on hand-derived values: the statistics are float64 arithmetic on a
# handful of numbers (error ~ n * 2^-53 ~ 1e-15 relative), so any wrong formula (a percentile rule,
# a sample vs population variance) misses by far more than 1e-6, and no CPU difference comes near.
def test_latency_stats_hand_derived():
    # 1..10 ms given in ns. Linear percentiles: rank h = (n-1) q/100 = 9q/100 over 1..10.
    ns = np.arange(1, 11) * 1_000_000
    s = S.latency_stats(ns, "ns")
    assert s["n"] == 10
    assert s["mean"] == pytest.approx(5.5)
    assert s["median"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)  # h = 8.1 -> 9 + 0.1 * (10 - 9)
    assert s["p95"] == pytest.approx(9.55)  # h = 8.55
    assert s["p99"] == pytest.approx(9.91)  # h = 8.91
    assert s["min"] == 1.0 and s["max"] == 10.0
    assert s["std"] == pytest.approx(math.sqrt(8.25))  # population variance of 1..10 = (100-1)/12


def test_latency_stats_units_and_order_independence():
    a = [4.0, 1.0, 3.0, 2.0]
    s_ms = S.latency_stats(a, "ms")
    s_s = S.latency_stats([v / 1000 for v in a[::-1]], "s")
    for k in S.STAT_KEYS:
        assert s_ms[k] == pytest.approx(s_s[k])
    assert s_ms["median"] == 2.5
    assert s_ms["p90"] == pytest.approx(3.7)  # h = 2.7 -> 3 + 0.7
    assert S.percentile([10, 20], 25) == pytest.approx(12.5)


def test_latency_stats_rejects_bad_input():
    with pytest.raises(ValueError):
        S.latency_stats([], "ns")
    with pytest.raises(ValueError):
        S.latency_stats([1.0, float("nan")], "ms")
    with pytest.raises(ValueError):
        S.latency_stats([1.0], "fortnights")


def test_single_sample_and_scale():
    s = S.latency_stats([2_500_000], "ns")
    assert all(s[k] == 2.5 for k in ("mean", "median", "p90", "p99", "min", "max"))
    assert s["std"] == 0.0
    half = S.scale_stats(s, 0.5)
    assert half["median"] == 1.25 and half["n"] == 1


def test_throughput():
    t = S.throughput(20.0, batch=4, frames_per_clip=16)
    assert t["clips_per_s"] == pytest.approx(200.0)
    assert t["frames_per_s"] == pytest.approx(3200.0)
    with pytest.raises(ValueError):
        S.throughput(0.0)


def test_linear_fit_perfect_line():
    x = np.arange(1, 14)
    f = S.linear_fit(x, 0.75 * x + 2.0)
    assert f["slope"] == pytest.approx(0.75)
    assert f["intercept"] == pytest.approx(2.0)
    assert f["r2"] == pytest.approx(1.0)
    assert f["n"] == 13


def test_linear_fit_hand_derived_r2():
    # x = 1,2,3; y = 1,3,2: slope = 0.5, intercept = 1, fitted 1.5,2,2.5; residuals -0.5,1,-0.5
    # -> SS_res = 1.5, SS_tot = 2, R^2 = 1 - 1.5/2 = 0.25.
    f = S.linear_fit([1, 2, 3], [1, 3, 2])
    assert f["slope"] == pytest.approx(0.5)
    assert f["intercept"] == pytest.approx(1.0)
    assert f["r2"] == pytest.approx(0.25)
    assert S.linear_fit([1, 2, 3], [5, 5, 5])["r2"] == 1.0  # constant y, zero residual
    with pytest.raises(ValueError):
        S.linear_fit([2, 2], [1, 3])


def test_expected_under_distribution():
    lat = {1: 10.0, 2: 20.0, 4: 40.0}
    e = S.expected_latency_throughput({1: 2, 2: 1, 4: 1}, lat, batch=1, frames_per_clip=8)
    # E[L] = (2*10 + 20 + 40) / 4 = 20 ms -> 50 clips/s (not E[1/L] = 62.5)
    assert e["latency_ms"] == pytest.approx(20.0)
    assert e["clips_per_s"] == pytest.approx(50.0)
    assert e["frames_per_s"] == pytest.approx(400.0)
    assert S.normalise_distribution({"3": 1, 5: 3, 7: 0}) == {3: 0.25, 5: 0.75}
    with pytest.raises(KeyError):
        S.expected_under({3: 1}, lat)
    assert S.histogram([3, 1, 3, 2]) == {1: 1, 2: 1, 3: 2}


# -- harness ---------------------------------------------------------------------------------------
def test_run_interleaved_round_robin_and_probe():
    calls: list[str] = []
    cands = [Candidate(n, (lambda n=n: calls.append(n))) for n in "abc"]
    cands[1].probe = lambda: {"gpu_compute": 1.5, "h2d": None}
    res = run_interleaved(cands, iters=4, warmup=2)
    assert len(calls) == 3 * 6
    # every round runs each candidate once, in a seeded random order
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    calls.clear()
    run_interleaved(cands, iters=4, warmup=2)
    assert [calls[i:i + 3] for i in range(0, len(calls), 3)] == rounds  # reproducible
    calls.clear()
    run_interleaved(cands, iters=4, warmup=0, seed=None)  # deterministic rotation
    assert [calls[i] for i in range(0, 12, 3)] == ["a", "b", "c", "a"]
    assert set(res) == {"a", "b", "c"}
    assert all(len(t.samples_ns) == 4 and (t.samples_ns >= 0).all() for t in res.values())
    assert res["b"].extra_ms == {"gpu_compute": [1.5] * 4}
    assert res["a"].stats()["n"] == 4


def test_harness_rejects_bad_arguments():
    with pytest.raises(ValueError):
        run_interleaved([Candidate("a", lambda: None)], iters=0)
    with pytest.raises(ValueError):
        run_interleaved([Candidate("a", lambda: None), Candidate("a", lambda: None)], iters=1)
    assert time_one(lambda: None, iters=3).samples_ns.shape == (3,)


def test_measure_overhead_fields():
    x = np.random.default_rng(0).standard_normal((64, 64))
    ov = measure_overhead(lambda: x @ x, iters=5, blocks=2, warmup=1)
    assert "ABBA" in ov["method"]
    for k in ("direct_median_ms", "harness_median_ms", "overhead_pct", "noop_ns_per_call", "noop_pct"):
        assert isinstance(ov[k], float) and math.isfinite(ov[k])
    assert ov["noop_ns_per_call"] >= 0
    assert ov["direct"]["n"] == 10 and ov["harness"]["n"] == 10
    assert isinstance(ov["negligible"], bool)


# -- environment -----------------------------------------------------------------------------------
ORIN = ("RAM 2448/62841MB (lfb 13542x4MB) SWAP 0/31421MB (cached 0MB) CPU [0%@729,off,12%@1497,3%@729] "
        "EMC_FREQ 1%@2133 GR3D_FREQ 37%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@47.281C SOC2@43.468C "
        "SOC0@44.312C GPU@-256C tj@47.281C VDD_GPU_SOC 2793mW/2700mW VDD_CPU_CV 399mW/412mW "
        "VIN_SYS_5V0 3729mW/3729mW")
XAVIER = ("RAM 1970/31927MB (lfb 6453x4MB) SWAP 0/15963MB (cached 0MB) CPU [1%@1190,2%@1190] EMC_FREQ 0% "
          "GR3D_FREQ 0% AO@36.5C GPU@36C Tdiode@38.75C PMIC@100C CPU@36.5C thermal@36.1C "
          "GPU 0/0 CPU 465/465 SOC 1396/1400 CV 0/0 VDDRQ 310/310 SYS5V 1777/1777")
NANO_TS = ("11-21-2024 10:00:00 RAM 2000/3956MB (lfb 100x4MB) SWAP 0/1978MB (cached 0MB) CPU [5%@1479,3%@1479] "
           "EMC_FREQ 2%@1600 GR3D_FREQ 99%@921 APE 25 PLL@30C CPU@33.5C GPU@31C "
           "POM_5V_IN 4321/4000 POM_5V_GPU 1500/1400 POM_5V_CPU 800/790")


def test_tegrastats_orin_line():
    r = benv.parse_tegrastats_line(ORIN)
    assert r["ram_used_mb"] == 2448 and r["ram_total_mb"] == 62841
    assert r["cpu_util"] == [0, None, 12, 3]
    assert r["cpu_freq_mhz"] == [729, None, 1497, 729]
    assert r["gpu_util"] == 37 and r["emc_util"] == 1
    assert r["temps_c"] == {"CPU": 47.281, "SOC2": 43.468, "SOC0": 44.312, "tj": 47.281}  # -256C dropped
    assert r["power_mw"] == {"VDD_GPU_SOC": 2793, "VDD_CPU_CV": 399, "VIN_SYS_5V0": 3729}
    assert r["power_avg_mw"]["VDD_GPU_SOC"] == 2700


def test_tegrastats_older_formats():
    x = benv.parse_tegrastats_line(XAVIER)
    assert x["power_mw"] == {"GPU": 0, "CPU": 465, "SOC": 1396, "CV": 0, "VDDRQ": 310, "SYS5V": 1777}
    assert x["power_avg_mw"]["SOC"] == 1400
    assert x["temps_c"]["PMIC"] == 100.0 and x["temps_c"]["GPU"] == 36.0
    assert x["cpu_util"] == [1, 2]
    n = benv.parse_tegrastats_line(NANO_TS)
    assert n["timestamp"] == "11-21-2024 10:00:00"
    assert n["power_mw"] == {"POM_5V_IN": 4321, "POM_5V_GPU": 1500, "POM_5V_CPU": 800}
    assert n["gpu_util"] == 99
    assert benv.parse_tegrastats_line("") is None
    assert benv.parse_tegrastats_line("tegrastats: command not found") is None


def test_tegrastats_summary_and_sampler_without_tool(tmp_path):
    s = benv.summarise_tegrastats([benv.parse_tegrastats_line(ORIN), benv.parse_tegrastats_line(ORIN.replace(
        "VDD_GPU_SOC 2793mW", "VDD_GPU_SOC 3207mW"))])
    assert s["samples"] == 2
    assert s["power_mw"]["VDD_GPU_SOC"] == {"mean": 3000.0, "max": 3207.0}
    assert s["gpu_util_mean"] == 37
    assert benv.summarise_tegrastats([]) is None
    with benv.TegrastatsSampler(command=[str(tmp_path / "no-such-tegrastats")]) as t:
        pass
    assert t.summary() is None


def test_tegrastats_sampler_reads_a_fake_tool(tmp_path):
    fake = tmp_path / "fake_tegrastats"
    fake.write_text("#!/bin/sh\nwhile true; do echo '" + ORIN + "'; sleep 0.05; done\n")
    fake.chmod(0o755)
    import time
    with benv.TegrastatsSampler(command=[str(fake)]) as t:
        deadline = time.time() + 5
        while not t.samples and time.time() < deadline:
            time.sleep(0.05)
    s = t.summary()
    assert s is not None and s["power_mw"]["VIN_SYS_5V0"]["max"] == 3729


def test_nvpmodel_and_jetson_clocks_parsers():
    assert benv.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert benv.parse_nvpmodel(None) is None
    locked = ("SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin\n"
              "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: C1=0\n"
              "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n"
              "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n")
    j = benv.parse_jetson_clocks(locked)
    assert j["locked"] is True and set(j["clocks"]) == {"cpu0", "GPU", "EMC"}
    unlocked = locked.replace("MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600",
                              "MinFreq=729600 MaxFreq=2201600 CurrentFreq=1497600")
    u = benv.parse_jetson_clocks(unlocked)
    assert u["locked"] is False and u["unlocked"] == ["cpu0"]
    assert benv.parse_jetson_clocks(None) is None


def test_capture_never_crashes(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi, nvpmodel, tegrastats, ...
    e = benv.capture(threads=2)
    assert e["threads"] == 2
    assert e["gpu"] is None
    assert "numpy" in e["versions"] and isinstance(e["warnings"], list)
    json.dumps(e)


def test_jetson_detection_with_fake_release(monkeypatch, tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text("# R36 (release), REVISION: 3.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(benv, "TEGRA_RELEASE", rel)
    monkeypatch.setenv("PATH", "/nonexistent")
    e = benv.capture()
    assert e["jetson"]["l4t_release"].startswith("# R36")
    assert e["jetson"]["nvpmodel"] is None and e["jetson"]["jetson_clocks"] is None
    assert any("clock state" in w for w in e["warnings"])


# -- report: schema, markdown, plots ---------------------------------------------------------------
def _stats(med: float) -> dict:
    return S.latency_stats([med * 0.9, med, med * 1.2], "ms")


def sample_report() -> dict:
    curve = []
    for b in range(1, 5):
        back = _stats(1.0 + 0.5 * b)
        curve.append({"bprime": b, "bprime_per_layer": [b], "back": back, "clip_ms": 3.0 + back["median"],
                      "gflops": 1.0 + 0.2 * b, "gflops_per_s": 100.0, "speedup_vs_static": 6.0 / (3.0 + back["median"])})
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "atfr bench", "version": "0.1.0", "argv": ["atfr", "bench", "x"]},
        "created": "2026-01-01T00:00:00+0000",
        "environment": {"cpu": {"model": "test", "usable_cores": 2}, "versions": {"numpy": "x"}, "gpu": None,
                        "jetson": None, "tegrastats": None},
        "config": {"export": "x", "backend": "onnxruntime", "warmup": 1, "iters": 3, "batch": 1, "threads": None,
                   "bprime": [1, 2, 3, 4]},
        "model": {"name": "m", "arch": "3dresnet", "num_frames": 8, "crop_size": 32, "clip_shapes": [[1, 3, 8, 32, 32]],
                  "sgs": [{"pathway": 0, "frames": 8, "bins": 4}]},
        "harness": {"clock": "perf_counter_ns", "interleaving": "round-robin", "percentile_method": "linear",
                    "overhead": {"direct_median_ms": 1.0, "harness_median_ms": 1.01, "overhead_pct": 1.0,
                                 "noop_ns_per_call": 0.0, "noop_pct": 0.0, "negligible": True}},
        "stages": {"front": _stats(2.0), "sgs": _stats(1.0), "end_to_end": _stats(5.0), "end_to_end_bprime": [[3]]},
        "bprime_curve": curve,
        "fit": S.linear_fit([1, 2, 3, 4], [1.5, 2.0, 2.5, 3.0]),
        "distribution": {"source": "test", "counts": {"2": 3, "3": 1}, "n": 4,
                         "expected": {"latency_ms": 5.1, "clips_per_s": 196.0, "frames_per_s": 1568.0}},
        "static": {"export": "s", "front": _stats(2.0), "back": _stats(4.0), "end_to_end": _stats(6.0), "clip_ms": 6.0},
        "torch": {"checkpoint": "c", "end_to_end": _stats(9.0), "error": None},
        "ratios": {"static_e2e / atfr_e2e": 1.2},
        "gflops": {"source": "test", "static": 2.0, "at_B": 1.8},
        "throughput": {"end_to_end": S.throughput(5.0, 1, 8)},
        "memory": {"peak_rss_mb": 100.0, "gpu_memory_mb": None},
        "tensorrt": None,
        "warnings": [],
    }


def test_report_validates_and_invalid_ones_fail():
    pytest.importorskip("jsonschema")
    import jsonschema
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    r = sample_report()
    validate_report(r)
    trt = copy.deepcopy(r)
    trt["config"]["backend"] = "tensorrt"
    trt["tensorrt"] = {"host_latency": _stats(3.0), "gpu_compute": _stats(2.0), "enqueue": None, "h2d": None,
                       "d2h": None}
    validate_report(trt)
    bad = []
    b = copy.deepcopy(r); del b["stages"]; bad.append(b)  # noqa: E702
    b = copy.deepcopy(r); b["schema_version"] = "0.9"; bad.append(b)  # noqa: E702
    b = copy.deepcopy(r); b["bprime_curve"][0]["back"]["median"] = "fast"; bad.append(b)  # noqa: E702
    b = copy.deepcopy(r); b["config"]["backend"] = "cuda"; bad.append(b)  # noqa: E702
    b = copy.deepcopy(r); b["distribution"]["counts"] = {"two": 3}; bad.append(b)  # noqa: E702
    b = copy.deepcopy(r); del b["stages"]["front"]["p99"]; bad.append(b)  # noqa: E702
    for b in bad:
        with pytest.raises(ReportValidationError):
            validate_report(b)


def test_markdown_has_tables():
    md = to_markdown(sample_report())
    assert "| front |" in md and "| B' |" in md and "R^2 = 1.0000" in md
    assert "static / ATFR" in md


@pytest.mark.parametrize("plot", [plot_latency_vs_bprime, plot_bprime_hist, plot_stages])
def test_plots_are_png(plot):
    pytest.importorskip("matplotlib")
    r = sample_report()
    data = plot(r)
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    r2 = sample_report()
    r2["bprime_curve"], r2["distribution"], r2["static"], r2["torch"], r2["fit"] = [], None, None, None, None
    assert plot(r2)[:8] == PNG_MAGIC


def test_write_report_refuses_overwrite(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rep"
    files = write_report(sample_report(), out)
    assert sorted(p.name for p in files.values()) == sorted(OUTPUT_FILES)
    for name in OUTPUT_FILES:
        p = out / name
        assert p.stat().st_size > 0
        if name.endswith(".png"):
            assert p.read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "report.json").read_text())["schema_version"] == SCHEMA_VERSION
    with pytest.raises(ATFRError, match="--force"):
        write_report(sample_report(), out)
    write_report(sample_report(), out, force=True)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


# -- runner helpers --------------------------------------------------------------------------------
def test_parse_bprime():
    from atfr.bench.runner import parse_bprime
    assert parse_bprime("all", 4) == [1, 2, 3, 4]
    assert parse_bprime("3,1, 3", 4) == [1, 3]
    with pytest.raises(ATFRError):
        parse_bprime("0,2", 4)
    with pytest.raises(ATFRError):
        parse_bprime("5", 4)
    with pytest.raises(ATFRError):
        parse_bprime("a,b", 4)


# -- end to end on a tiny export -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    pytest.importorskip("torch")
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint, save_checkpoint
    from atfr.models.config import from_compact
    from atfr.models.zoo import build_model
    import torch

    d = tmp_path_factory.mktemp("bench_tiny")
    out = {}
    for stage in ("res2", "none"):
        torch.manual_seed(0)
        cfg = from_compact({"arch": "3dresnet", "depth": 18, "width_per_group_slow": 8, "width_per_group_fast": 4,
                            "num_frames": 8, "crop_size": 32, "num_classes": 5, "sgs_stage": stage})
        ck = d / f"{stage}.pyth"
        save_checkpoint(ck, build_model(cfg), cfg)
        ex = export_model(load_checkpoint(ck), d / f"{stage}_export", ExportOptions())
        out[stage] = (ck, ex)
    return out


def _write_video(path: Path, frames: int = 20, moving: bool = True) -> None:
    cv2 = pytest.importorskip("cv2")
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 40))
    if not w.isOpened():
        pytest.skip("OpenCV cannot write MJPG .avi here")
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    for t in range(frames):
        w.write(np.roll(base, 3 * t if moving else 0, axis=1))
    w.release()


def test_bench_end_to_end(tiny_export, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from atfr.cli import main
    ck, ex = tiny_export["res2"]
    _, sx = tiny_export["none"]
    out = tmp_path / "report"
    rc = main(["bench", str(ex), "--iters", "3", "--warmup", "1", "--static", str(sx), "--torch", str(ck),
               "--out", str(out), "--threads", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    for name in OUTPUT_FILES:
        assert (out / name).stat().st_size > 0
    for name in ("latency_vs_bprime.png", "bprime_hist.png", "stages.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    r = json.loads((out / "report.json").read_text())
    validate_report(r)
    assert [c["bprime"] for c in r["bprime_curve"]] == list(range(1, 9))
    assert all(c["back"]["n"] == 3 for c in r["bprime_curve"])
    assert r["stages"]["front"]["n"] == 3 and r["stages"]["sgs"]["n"] == 3
    assert r["static"]["end_to_end"]["n"] == 3
    assert r["torch"]["error"] is None and r["torch"]["end_to_end"]["n"] == 3
    assert r["tensorrt"] is None  # ONNX Runtime exposes no trtexec-style breakdown
    assert 0 <= r["fit"]["r2"] <= 1
    assert r["distribution"]["source"].startswith("manifest")
    assert r["gflops"]["per_bprime"] and r["gflops"]["static"] > 0
    assert {"static_e2e / atfr_e2e", "torch_e2e / atfr_e2e", "sgs_share_of_e2e"} <= set(r["ratios"])
    assert r["memory"]["peak_rss_mb"] > 0
    assert r["harness"]["overhead"] is not None
    # what users run beside the lab setting (--threads 1): ORT default threads, model.onnx, both torch layouts
    assert r["default_threads"]["atfr_e2e"]["n"] == 3 and r["default_threads"]["static_e2e"]["n"] == 3
    assert r["ratios"]["static_e2e / atfr_e2e (default threads)"] == pytest.approx(
        r["default_threads"]["static_e2e"]["median"] / r["default_threads"]["atfr_e2e"]["median"])
    assert r["model_onnx"]["n"] == 3
    assert r["ratios"]["atfr_e2e / atfr_model (split vs monolithic)"] == pytest.approx(
        r["stages"]["end_to_end"]["median"] / r["model_onnx"]["median"])
    assert r["static"]["graph"] == "model"  # a static export runs its model.onnx, and the report says so
    assert r["static"]["clip_ms"] == pytest.approx(r["static"]["end_to_end"]["median"])
    lay = r["torch"]["layouts"]
    assert set(lay) == {"contiguous", "channels_last_3d"}
    best = min(lay, key=lambda k: lay[k]["median"])
    assert r["torch"]["end_to_end"] == lay[best] and r["torch"]["channels_last_3d"] == (best == "channels_last_3d")
    assert len(r["load"]["before"]) == 3 and len(r["load"]["after"]) == 3 and isinstance(r["load"]["loaded"], bool)
    assert r["config"]["ort_spin"] in ("off", "stop", "on") and r["precision_speed"] is None
    # refuses to overwrite without --force, with one line
    rc = main(["bench", str(ex), "--iters", "1", "--warmup", "0", "--out", str(out)])
    assert rc == 2 and "--force" in capsys.readouterr().err


def test_bench_bprime_list_and_videos(tiny_export, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from atfr.cli import main
    _, ex = tiny_export["res2"]
    vids = tmp_path / "videos"
    vids.mkdir()
    _write_video(vids / "moving.avi", moving=True)
    _write_video(vids / "still.avi", moving=False)
    out = tmp_path / "r2"
    rc = main(["bench", str(ex), "--iters", "2", "--warmup", "0", "--bprime", "2,8", "--batch", "2",
               "--videos", str(vids), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((out / "report.json").read_text())
    assert [c["bprime"] for c in r["bprime_curve"]] == [2, 8]
    assert r["config"]["batch"] == 2 and len(r["stages"]["end_to_end_bprime"]) == 2
    d = r["distribution"]
    assert d["source"].startswith("videos") and d["n"] >= 2
    assert all(1 <= int(k) <= 8 for k in d["counts"])
    assert d["expected"]["latency_ms"] > 0
    assert r["static"] is None and r["torch"] is None
    assert set(r["gflops"]["per_bprime"]) == {"2", "8"}  # manifest table (or its B'/B scaling), no torch


def test_back_steps_per_slow_pathway_bprime():
    """SlowFast-like: slow layer B=4, fast B=8; x = fast B', slow = round(x * 4 / 8) (per_layer_bprime).
    Back latency = 10 ms per slow bin + 1 ms per fast bin: a step function, linear within a step."""
    from types import SimpleNamespace

    from atfr.bench.runner import back_steps, per_layer_bprime
    m = SimpleNamespace(sgs=[SimpleNamespace(pathway=0, bins=4), SimpleNamespace(pathway=1, bins=8)])
    curve = []
    for x in range(1, 9):
        bp = per_layer_bprime(m, x)
        curve.append({"bprime": x, "bprime_per_layer": bp, "back": {"median": 10.0 * bp[0] + 1.0 * bp[1]}})
    steps = back_steps(m, curve)
    # round(x/2) with Python's banker's rounding, at least 1: x=1 -> 1 (max(1, 0)), 2 -> 1, 3 -> 2, 4 -> 2,
    # 5 -> 2, 6 -> 3, 7 -> 4, 8 -> 4
    assert [(s["slow_bprime"], s["bprime"]) for s in steps] == [(1, [1, 2]), (2, [3, 4, 5]), (3, [6]), (4, [7, 8])]
    for s in steps:
        if len(s["bprime"]) >= 2:
            assert s["fit"]["slope"] == pytest.approx(1.0) and s["fit"]["r2"] == pytest.approx(1.0)
            assert s["fit"]["intercept"] == pytest.approx(10.0 * s["slow_bprime"])
        else:
            assert s["fit"] is None
    assert steps[2]["mean_back_ms"] == pytest.approx(36.0)


def test_bench_errors_are_one_line(tiny_export, tmp_path, capsys):
    from atfr.cli import main
    _, ex = tiny_export["res2"]
    assert main(["bench", str(ex), "--bprime", "99", "--out", str(tmp_path / "a")]) == 2
    assert "outside 1..8" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]) == 2
    assert main(["bench", str(ex), "--static", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_bench_library_is_torch_free():
    import subprocess
    import sys
    code = ("import sys, atfr.bench.runner, atfr.bench.report, atfr.bench.env, atfr.bench.timing, "
            "atfr.bench.stats, atfr.commands.bench; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]
