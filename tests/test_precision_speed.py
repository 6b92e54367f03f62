"""The measured 'fp16/int8 is not faster than fp32 here' line (atfr calibrate / verify --precision / bench)."""

from __future__ import annotations

import shutil

import pytest

from atfr.bench.precision_speed import (NOT_FASTER, available_precisions, precision_speed, precision_speed_lines,
                                        slower_than_fp32_lines)


def _result(ratios: dict[str, float]) -> dict:
    med = {"fp32": 100.0, **{p: 100.0 * r for p, r in ratios.items()}}
    return {"provider": "CPUExecutionProvider", "threads": None, "rounds": 3, "median_ms": med,
            "ratio_vs_fp32": dict(ratios)}


def test_lines_only_for_precisions_that_are_not_faster():
    lines = slower_than_fp32_lines(_result({"int8": 1.2, "fp16": 0.5}))
    assert len(lines) == 1
    assert lines[0].startswith("int8 graphs run 1.20x slower than fp32 on ONNX Runtime CPUExecutionProvider")
    assert "120.0 vs 100.0 ms" in lines[0] and "TensorRT" in lines[0] and "\n" not in lines[0]
    # within 5% either way: "no faster", not "slower"
    (line,) = slower_than_fp32_lines(_result({"fp16": 1.02}))
    assert line.startswith("fp16 graphs run no faster than fp32")
    assert slower_than_fp32_lines(_result({"fp16": NOT_FASTER})) == []  # 5% faster: worth it, no line


def test_nothing_to_measure_for_fp32_only(tiny_export):
    assert precision_speed_lines(tiny_export, ["fp32"]) == []
    assert available_precisions(tiny_export) == []


def test_measures_fp16_against_fp32_on_the_export(tiny_export, tmp_path):
    pytest.importorskip("onnx")
    from atfr.export.precision import write_fp16

    d = tmp_path / "export"
    shutil.copytree(tiny_export, d)
    write_fp16(d)
    assert available_precisions(d) == ["fp16"]
    r = precision_speed(d, ["fp16", "fp32"], rounds=2, warmup=1)
    assert set(r["median_ms"]) == {"fp32", "fp16"} and 1 <= r["rounds"] <= 2
    assert r["ratio_vs_fp32"]["fp16"] == pytest.approx(r["median_ms"]["fp16"] / r["median_ms"]["fp32"])
    # the hook returns exactly the lines of its measurement's verdict (one line at most per precision)
    assert len(precision_speed_lines(d, ["fp16"])) <= 1
