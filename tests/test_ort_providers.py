"""--backend onnxruntime --providers cpu|cuda|tensorrt: provider selection, IO binding, errors.

No GPU here, so the GPU providers are tested for what can be decided without one: the session
lists they produce, the one-line errors when onnxruntime-gpu or a provider is missing (exit 4),
the check that catches ONNX Runtime's silent CPU fallback, and the IO-binding runner (run on the
CPU device, where it must give exactly the plain session's outputs).
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from atfr.errors import ATFRError, DependencyError
from atfr.runtime import ort_providers as op

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_cpu_is_the_default():
    for name in (None, "cpu", "CPU"):
        c = op.resolve_providers(name, [CPU])
        assert c.name == "cpu" and c.providers == [CPU] and not c.io_binding


def test_cuda_selection_binds_on_device_without_tf32():
    c = op.resolve_providers("cuda", [TRT, CUDA, CPU], installed="onnxruntime-gpu 1.20.1")
    assert c.providers == [(CUDA, {"use_tf32": "0"}), CPU]  # TF32 would move the SGS distances (see module doc)
    assert c.io_binding and c.device == "cuda" and c.primary == CUDA


def test_tensorrt_selection_chain_and_cache(tmp_path):
    c = op.resolve_providers("tensorrt", [TRT, CUDA, CPU], cache_dir=tmp_path / "c")
    assert [p[0] if isinstance(p, tuple) else p for p in c.providers] == [TRT, CUDA, CPU]
    opts = c.providers[0][1]
    assert opts["trt_engine_cache_path"] == str(tmp_path / "c") and opts["trt_fp16_enable"] == "False"
    assert not c.io_binding and c.primary == TRT
    # no CUDA EP in this build: TensorRT, then the CPU
    assert [p[0] if isinstance(p, tuple) else p for p in op.resolve_providers("tensorrt", [TRT, CPU]).providers] == [
        TRT, CPU]


@pytest.mark.parametrize("name", ["cuda", "tensorrt"])
def test_cpu_onnxruntime_names_the_gpu_package(name):
    with pytest.raises(DependencyError) as ei:
        op.resolve_providers(name, [CPU], installed="onnxruntime 1.20.1")
    msg = str(ei.value)
    assert ei.value.exit_code == 4 and "\n" not in msg
    assert f"--providers {name} needs onnxruntime-gpu (onnxruntime 1.20.1 is installed" in msg
    assert "pip install onnxruntime-gpu" in msg


def test_gpu_package_without_the_provider():
    with pytest.raises(DependencyError, match=r"this onnxruntime-gpu 1\.20\.1 has no TensorrtExecutionProvider"):
        op.resolve_providers("tensorrt", [CUDA, CPU], installed="onnxruntime-gpu 1.20.1")


def test_unknown_provider_is_bad_input():
    with pytest.raises(ATFRError) as ei:
        op.resolve_providers("rocm", [CPU])
    assert ei.value.exit_code == 2 and "cpu, cuda, tensorrt" in str(ei.value)


def test_silent_cpu_fallback_is_caught():
    """ONNX Runtime keeps going on the CPU when the CUDA EP cannot load its libraries."""
    c = op.resolve_providers("cuda", [CUDA, CPU], installed="onnxruntime-gpu 1.20.1")
    fell_back = types.SimpleNamespace(session=types.SimpleNamespace(get_providers=lambda: [CPU]), path="front.onnx")
    with pytest.raises(DependencyError, match=r"front.onnx: ONNX Runtime could not start CUDAExecutionProvider "
                                              r"\(session runs on CPUExecutionProvider\)"):
        op.check_session(fell_back, c)
    started = types.SimpleNamespace(session=types.SimpleNamespace(get_providers=lambda: [CUDA, CPU]), path="x")
    op.check_session(started, c)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_session_with_unavailable_provider_end_to_end(tiny_export, monkeypatch):
    """Pretend this CPU build had the CUDA EP: loading must fail with one line, not run on the CPU."""
    import onnxruntime as ort

    from atfr.runtime.pipeline import Pipeline

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.raises(ATFRError) as ei:
        Pipeline.load(tiny_export, "onnxruntime", providers="cuda")
    # this build warns and runs the session on the CPU; the check turns that into the error
    assert ei.value.exit_code == 4 and "\n" not in str(ei.value)
    assert "front.onnx: ONNX Runtime could not start CUDAExecutionProvider (session runs on" in str(ei.value)


def test_iobinding_runner_matches_plain_session(tiny_export):
    from atfr.runtime.backends import OrtRunner
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(tiny_export)
    x = np.random.default_rng(0).normal(size=m.clip_shapes(2)[0]).astype(np.float32)
    cpu = op.resolve_providers("cpu", [CPU])
    bound = op.make_runner(m.path("front"), 1, op.ProviderChoice("cpu", cpu.providers, io_binding=True, device="cpu"))
    assert isinstance(bound, op.OrtIoBindingRunner)
    plain = OrtRunner(m.path("front"), 1)
    got, ref = bound.run({"clip0": x}), plain.run({"clip0": x})
    assert set(got) == set(ref) == set(m.graphs["front"].outputs and [t.name for t in m.graphs["front"].outputs])
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])  # same kernels, same thread count: bit-identical


def test_pipeline_records_provider_and_rejects_providers_for_tensorrt(tiny_export):
    from atfr.runtime.pipeline import Pipeline

    assert Pipeline.load(tiny_export, "onnxruntime", providers="cpu").provider == "cpu"
    assert Pipeline.load(tiny_export, "auto", providers="cpu").backend == "onnxruntime"  # --providers implies ORT
    with pytest.raises(ATFRError, match="--providers cuda applies to --backend onnxruntime, not tensorrt"):
        Pipeline.load(tiny_export, "tensorrt", providers="cuda")


@pytest.mark.parametrize("cmd", ["run", "infer", "verify", "bench", "predict"])
def test_commands_share_the_flag(cmd):
    """One argparse helper adds --providers to every command that loads a pipeline."""
    import argparse
    import importlib

    p = argparse.ArgumentParser()
    importlib.import_module(f"atfr.commands.{cmd}").add_arguments(p)
    act = next(a for a in p._actions if "--providers" in a.option_strings)
    assert tuple(act.choices) == op.PROVIDERS and act.default is None


def test_cli_cuda_without_onnxruntime_gpu_is_one_line_exit_4(tiny_export, tmp_path):
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with the CUDA EP is installed here")
    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((8, 32, 32, 3), np.uint8))
    r = subprocess.run([sys.executable, "-m", "atfr.cli", "infer", str(tiny_export), "--input", str(clip),
                        "--backend", "onnxruntime", "--providers", "cuda"], capture_output=True, text=True)
    assert r.returncode == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "onnxruntime-gpu" in lines[0] and "--providers cuda" in lines[0]


def test_verify_report_records_provider():
    from atfr.export.verify import BackendReport, format_report

    rep = BackendReport("onnxruntime", provider="cuda")
    assert rep.to_json()["provider"] == "cuda"
    assert format_report(rep).startswith("[onnxruntime/cuda] clips 0")
    assert format_report(BackendReport("tensorrt")).startswith("[tensorrt] clips 0")
