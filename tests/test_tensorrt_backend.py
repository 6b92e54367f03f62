"""TensorRT backend.

Two parts:

* contract tests that run everywhere: the per-clip split of a front that already ran SGS, the
  clip-by-clip front wrapper (driven by a fake engine that runs the ONNX front + numpy SGS), the
  Pipeline override, engine sidecar checks;
* real engine builds on the golden r3d18 export compared with ONNX Runtime and the golden logits
  ('atfr verify'-style). These need the tensorrt package, cuda-python and a GPU, and skip with
  a reason otherwise: the TensorRT code is written against the TRT 10.3-11.x API and has not
  been executed in this repository's CI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from atfr.errors import ATFRError, DependencyError

try:
    import tensorrt  # noqa: F401

    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False

needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed (tests written against the "
                                                    "TRT 10.3 API, not executed here)")


# -- contract tests (no TensorRT) ---------------------------------------------------------------------

class _Layer:
    def __init__(self, p, bins):
        self.pathway, self.bins = p, bins


class _M:
    """The slice of Manifest that split_presampled uses: SGS on pathway 0, pass-through pathway 1."""

    num_pathways = 2
    sgs = [_Layer(0, 6)]

    def sgs_for(self, p):
        return self.sgs[0] if p == 0 else None


def test_split_presampled_per_clip_bprime():
    from atfr.runtime.tensorrt.backend import split_presampled

    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 2, 6, 2, 2)).astype(np.float32)
    feat1 = rng.normal(size=(3, 4, 8, 2, 2)).astype(np.float32)
    res = split_presampled(_M(), {"sgs0": s, "bprime0": np.array([2, 6, 4], np.int32), "feat1": feat1})
    assert [bp for _, bp in res] == [(2,), (6,), (4,)]
    np.testing.assert_array_equal(res[0][0]["sgs0"], s[0:1, :, :2])
    np.testing.assert_array_equal(res[2][0]["feat1"], feat1[2:3])
    # A raw SGS node gives one 0-D B' for the batch.
    res = split_presampled(_M(), {"sgs0": s[:, :, :5], "bprime0": np.array(5, np.int32), "feat1": feat1})
    assert [bp for _, bp in res] == [(5,)] * 3


def test_split_presampled_rejects_bad_bprime_and_nan():
    from atfr.runtime.tensorrt.backend import split_presampled

    s = np.zeros((1, 2, 4, 2, 2), np.float32)
    f = np.zeros((1, 4, 8, 2, 2), np.float32)
    with pytest.raises(ATFRError, match="B'=5"):
        split_presampled(_M(), {"sgs0": s, "bprime0": np.array([5], np.int32), "feat1": f})
    s[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ATFRError, match="NaN"):
        split_presampled(_M(), {"sgs0": s, "bprime0": np.array([4], np.int32), "feat1": f})


class _FakeSampledEngine:
    """Stands in for a front engine containing SGS: ONNX front + numpy SGS, N=1 per call."""

    def __init__(self, manifest):
        from atfr.runtime.backends import OrtRunner
        from atfr.runtime.pipeline import SGSStep

        self.front = OrtRunner(manifest.path("front"))
        self.step = SGSStep(manifest, "numpy")
        self.input_names = self.front.input_names
        self.output_names = [f"sgs{l.pathway}" for l in manifest.sgs] + [f"bprime{l.pathway}" for l in manifest.sgs]
        self.last_timings = {"host_latency": 1.0, "gpu_compute": 0.5, "reallocations": 0.0}
        self.calls = []

    def _run_once(self, feeds, copy=True):
        self.calls.append(int(feeds["clip0"].shape[0]))
        out = self.front.run(feeds)
        sg, bp = self.step(out)
        sg.update({f"bprime{l.pathway}": np.array(b, np.int32) for l, b in zip(self.step.m.sgs, bp)})
        return sg


def test_sampled_front_pipeline_matches_onnxruntime(tiny_export):
    """The TRT pipeline's plumbing (clip-by-clip front, padding, per-clip B', grouping) is exact."""
    from atfr.runtime.backends import OrtRunner
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.tensorrt.backend import SampledFrontRunner, TrtPipeline

    m = load_manifest(tiny_export)
    rng = np.random.default_rng(3)
    shape = m.clip_shapes(5)[0]
    x = rng.normal(size=shape).astype(np.float32)
    x[1] = x[1, :, :1]  # a static clip: a small B'
    x[3] = x[0]  # equal B' -> grouped in one back call
    ref = Pipeline.load(tiny_export, "onnxruntime").infer([x])
    fake = _FakeSampledEngine(m)
    front = SampledFrontRunner(fake, m)
    pipe = TrtPipeline(m, front, OrtRunner(m.path("back")), None, backend="tensorrt")
    got = pipe.infer([x])
    assert fake.calls == [1] * 5  # one clip per front run
    assert [r.bprime for r in got] == [r.bprime for r in ref]
    assert len({r.bprime for r in ref}) > 1  # the batch really mixes B'
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5)
    t = pipe.timings()
    assert t["front"]["host_latency"] == pytest.approx(5.0) and t["front"]["reallocations"] == 0.0


def _write_sidecar(d: Path, role: str, **kw) -> None:
    eng = d / f"{role}.engine"
    eng.write_bytes(b"plan")
    side = {"format": "atfr-engine", "engine": eng.name, "engine_bytes": 4, "tensorrt_version": "10.3.0.30"}
    side.update(kw)
    (d / f"{role}.engine.json").write_text(json.dumps(side))


def test_read_sidecar_errors(tmp_path):
    from atfr.runtime.tensorrt.backend import read_sidecar

    with pytest.raises(ATFRError, match="atfr build X"):
        read_sidecar(tmp_path / "front.engine", "X")
    (tmp_path / "front.engine").write_bytes(b"plan")
    with pytest.raises(ATFRError, match="front.engine.json is missing"):
        read_sidecar(tmp_path / "front.engine", "X")
    _write_sidecar(tmp_path, "front")
    assert read_sidecar(tmp_path / "front.engine", "X")["tensorrt_version"] == "10.3.0.30"
    (tmp_path / "front.engine").write_bytes(b"replaced plan")
    with pytest.raises(ATFRError, match="does not match"):
        read_sidecar(tmp_path / "front.engine", "X")


def test_load_without_tensorrt_is_one_line(tmp_path, tiny_export):
    if HAVE_TRT:
        pytest.skip("TensorRT is installed here")
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.tensorrt.backend import load_trt_pipeline

    m = load_manifest(tiny_export)
    for r in ("front", "back"):
        _write_sidecar(tmp_path, r)
    with pytest.raises(DependencyError, match="TensorRT is not installed") as ei:
        load_trt_pipeline(m, engine_dir=tmp_path)
    assert "\n" not in str(ei.value)


# -- real engines (TensorRT + GPU) ------------------------------------------------------------------

GOLDEN_CASES = ("a_noise", "b_static", "c_translate", "d_scenecut")


@pytest.fixture(scope="module")
def trt_env():
    if not HAVE_TRT:
        pytest.skip("TensorRT is not installed (tests written against the TRT 10.3 API, not executed here)")
    try:
        from atfr.runtime.tensorrt.cuda import Cuda

        info = Cuda.get().device_info()
    except (DependencyError, ATFRError) as e:
        pytest.skip(f"no usable CUDA device / cuda-python: {e}")
    return info


@pytest.fixture(scope="module")
def r3d18_export(tmp_path_factory, golden, trt_env):
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint

    d = tmp_path_factory.mktemp("trt") / "r3d18"
    export_model(load_checkpoint(golden / "r3d18_atfr" / "checkpoint.pyth"), d, ExportOptions(size=112, name="r3d18"))
    return d


def _golden_inputs(golden):
    from conftest import normalize_frames

    return [(c, normalize_frames(np.load(golden / "r3d18_atfr" / c / "frames.npy")),
             np.load(golden / "r3d18_atfr" / c / "expected.npz")) for c in GOLDEN_CASES]


def _build_and_compare(export: Path, golden: Path, engine_dir: Path, sgs: str, precision: str = "fp32",
                       plugin: str | None = None, atol: float = 2e-3, **load_kw):
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.tensorrt.builder import build_engines

    build_engines(export, precision=precision, sgs=sgs, plugin_path=plugin, engine_dir=engine_dir,
                  workspace_mb=2048, progress=False, max_batch=4)
    for r in ("front", "back"):
        side = json.loads((engine_dir / f"{r}.engine.json").read_text())
        assert side["precision"] == precision and side["onnx_sha256"] and side["compute_capability"]
        assert (engine_dir / f"{r}.engine").read_bytes()[:4] != b"{"  # raw plan, nothing prepended
    trt_pipe = Pipeline.load(export, backend="tensorrt", engine_dir=engine_dir, plugin=plugin, **load_kw)
    ort_pipe = Pipeline.load(export, backend="onnxruntime")
    inputs = _golden_inputs(golden)
    for case, x, exp in inputs:
        got = trt_pipe.infer([x])[0]
        ref = ort_pipe.infer([x])[0]
        if not bool(exp["ts0_ulp_fragile"]) and precision == "fp32":
            assert got.bprime == ref.bprime == (int(exp["ts0_B_prime"]),), case
        if got.bprime == ref.bprime:
            np.testing.assert_allclose(got.logits, ref.logits, atol=atol, rtol=0, err_msg=case)
            np.testing.assert_allclose(got.logits, exp["logits"][0], atol=atol + 1e-3, rtol=0, err_msg=case)
    # A batch with different B' per clip: each clip must match its single-clip result.
    batch = np.concatenate([x for _, x, _ in inputs], 0)
    one = [trt_pipe.infer([x])[0] for _, x, _ in inputs]
    for a, b in zip(trt_pipe.infer([batch]), one):
        assert a.bprime == b.bprime
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-4, rtol=0)
    # Steady state: the data-dependent output allocator never grew.
    t = trt_pipe.timings()
    assert t["front"].get("reallocations", 0.0) == 0.0
    assert t["back"]["gpu_compute"] > 0 and t["back"]["host_latency"] >= t["back"]["gpu_compute"] * 0.5
    return trt_pipe


@needs_trt
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
def test_fallback_engines_match_onnxruntime(r3d18_export, golden, tmp_path):
    _build_and_compare(r3d18_export, golden, tmp_path / "fallback", "fallback")


@needs_trt
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
def test_host_sgs_engines_match_onnxruntime_with_cuda_graphs(r3d18_export, golden, tmp_path):
    pipe = _build_and_compare(r3d18_export, golden, tmp_path / "host", "host", cuda_graphs=True)
    assert pipe.back.graphs or not pipe.back.cuda_graphs  # captured, or cleanly switched off with a warning


@needs_trt
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
def test_plugin_engines_match_onnxruntime(r3d18_export, golden, tmp_path):
    plugin = os.environ.get("ATFR_SGS_PLUGIN")
    if not plugin or not Path(plugin).is_file():
        pytest.skip("set ATFR_SGS_PLUGIN to a built libatfr_sgs.so to test the plugin engines")
    _build_and_compare(r3d18_export, golden, tmp_path / "plugin", "plugin", plugin=plugin)


@needs_trt
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
def test_fp16_keeps_bprime(r3d18_export, golden, tmp_path):
    import tensorrt as trt

    from atfr.runtime.tensorrt.compat import capabilities

    if not capabilities(trt.__version__).has_fp16_flag and "back_fp16" not in json.loads(
            (r3d18_export / "atfr.json").read_text())["graphs"]:
        pytest.skip("TensorRT 11 needs fp16 graphs, which this export does not have")
    _build_and_compare(r3d18_export, golden, tmp_path / "fp16", "host", precision="fp16", atol=5e-2)


@needs_trt
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_sidecar_mismatch_is_one_line_rebuild_error(r3d18_export, tmp_path):
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.tensorrt.builder import build_engines

    d = tmp_path / "e"
    build_engines(r3d18_export, sgs="host", engine_dir=d, progress=False)
    with pytest.raises(ATFRError, match="--force"):
        build_engines(r3d18_export, sgs="host", engine_dir=d, progress=False)
    side = json.loads((d / "back.engine.json").read_text())
    side["tensorrt_version"], side["compute_capability"], side["gpu_name"] = "9.9.9", "7.2", "Xavier"
    (d / "back.engine.json").write_text(json.dumps(side))
    with pytest.raises(DependencyError, match=r"engine built with TensorRT 9\.9\.9 on Xavier \(sm_72\); this is "
                                              r"TensorRT .*: rebuild with 'atfr build") as ei:
        Pipeline.load(r3d18_export, backend="tensorrt", engine_dir=d)
    assert "\n" not in str(ei.value)


# -- the engine runner driven by a fake TensorRT + fake CUDA (host memory) ----------------------------
# Exercises TrtEngineRunner's own logic (buffer sizing, IOutputAllocator path, profile choice,
# chunking, CUDA-graph bookkeeping) without TensorRT; the real API calls are what it mimics.

class _FakeCuda:
    H2D, D2H, D2D = "h2d", "d2h", "d2d"

    def __init__(self):
        self.bufs, self.launches, self.mallocs = {}, 0, 0

    def malloc(self, n):
        import ctypes
        b = ctypes.create_string_buffer(max(int(n), 1))
        self.bufs[ctypes.addressof(b)] = b
        self.mallocs += 1
        return ctypes.addressof(b)

    malloc_host = malloc

    def free(self, p):
        self.bufs.pop(p, None)

    free_host = free

    def memcpy_async(self, dst, src, n, kind, stream):
        import ctypes
        ctypes.memmove(dst, src, n)

    def stream(self):
        return 0

    def sync(self, s):
        pass

    def event(self):
        return [0.0]

    def record(self, ev, s):
        import time
        ev[0] = time.perf_counter()

    def elapsed_ms(self, a, b):
        return (b[0] - a[0]) * 1e3

    def begin_capture(self, s):
        self.capturing = True

    def end_capture(self, s):
        self.capturing = False
        return "graph"

    def instantiate(self, g):
        return self._replay

    def launch(self, g, s):
        self.launches += 1
        g()


def _fake_trt():
    import types

    class IOutputAllocator:
        def __init__(self):
            pass

    return types.SimpleNamespace(
        IOutputAllocator=IOutputAllocator, nptype=lambda d: d,
        TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
        TensorLocation=types.SimpleNamespace(HOST="host", DEVICE="device"))


def _read(ptr, shape, dtype):
    import ctypes
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(ctypes.string_at(ptr, n), dtype=dtype).reshape(shape)


def _write(ptr, arr):
    import ctypes
    a = np.ascontiguousarray(arr)
    ctypes.memmove(ptr, a.ctypes.data, a.nbytes)


class _FakeEngine:
    """io: name -> (mode, dtype); profiles: list of name -> (min, opt, max); fn computes outputs."""

    def __init__(self, io, profiles, out_shape, fn):
        self.io, self.prof, self.out_shape, self.fn = io, profiles, out_shape, fn
        self.num_io_tensors, self.num_optimization_profiles = len(io), len(profiles)

    def get_tensor_name(self, i):
        return list(self.io)[i]

    def get_tensor_mode(self, n):
        return self.io[n][0]

    def get_tensor_dtype(self, n):
        return np.dtype(self.io[n][1])

    def get_tensor_location(self, n):
        return "device"

    def get_tensor_profile_shape(self, n, k):
        return self.prof[k][n]

    def create_execution_context(self):
        return _FakeContext(self)


class _FakeContext:
    def __init__(self, e):
        self.e, self.shapes, self.addr, self.alloc, self.profile, self.executions = e, {}, {}, {}, -1, 0

    def set_optimization_profile_async(self, k, stream):
        self.profile = k
        return True

    def set_input_shape(self, n, s):
        lo, _, hi = self.e.prof[self.profile][n]
        if not all(a <= b <= c for a, b, c in zip(lo, s, hi)):
            return False
        self.shapes[n] = tuple(s)
        return True

    def get_tensor_shape(self, n):
        return self.shapes[n] if n in self.shapes else self.e.out_shape(n, self.shapes)

    def set_tensor_address(self, n, p):
        self.addr[n] = p
        return True

    def set_output_allocator(self, n, a):
        self.alloc[n] = a
        return True

    def execute_async_v3(self, stream):
        self.executions += 1
        ins = {n: _read(self.addr[n], self.shapes[n], self.e.io[n][1]) for n in self.shapes}
        for n, v in self.e.fn(ins).items():
            if n in self.alloc:
                p = self.alloc[n].reallocate_output_async(n, 0, v.nbytes, 256, stream)
                assert p
                _write(p, v)
                self.alloc[n].notify_shape(n, v.shape)
            else:
                _write(self.addr[n], v)
        return True


def _front_engine():
    """clip0 [N,3] -> sgs0 [N,2,B'] (B' from the data, DDS, upper bound 4) + bprime0 int32 scalar."""
    def fn(ins):
        x = ins["clip0"]
        b = int(abs(x).sum()) % 4 + 1
        return {"sgs0": np.broadcast_to(x[:, :2, None], (x.shape[0], 2, b)).astype(np.float32) * 1.0,
                "bprime0": np.array(b, np.int32)}

    io = {"clip0": ("in", np.float32), "sgs0": ("out", np.float32), "bprime0": ("out", np.int32)}
    return _FakeEngine(io, [{"clip0": ((1, 3), (1, 3), (2, 3))}],
                       lambda n, s: (s["clip0"][0], 2, -1) if n == "sgs0" else (), fn)


def _back_engine():
    """sgs0 [N,2,T'] (profiles T' 1-2 and 1-4, N <= 2) -> logits [N,2] = sum over T'."""
    io = {"sgs0": ("in", np.float32), "logits": ("out", np.float32)}
    prof = [{"sgs0": ((1, 2, 1), (1, 2, 2), (2, 2, 2))}, {"sgs0": ((1, 2, 1), (1, 2, 2), (2, 2, 4))}]
    return _FakeEngine(io, prof, lambda n, s: (s["sgs0"][0], 2), lambda ins: {"logits": ins["sgs0"].sum(2)})


def _runner(engine, cuda, **kw):
    import types

    from atfr.runtime.tensorrt.backend import TrtEngineRunner

    rt = types.SimpleNamespace(deserialize_cuda_engine=lambda b: engine)
    p = Path(__file__)  # any readable file stands in for the plan
    return TrtEngineRunner(_fake_trt(), rt, cuda, 0, p, types.SimpleNamespace(errors=[]), **kw)


def test_runner_dds_front_with_fake_trt():
    from atfr.runtime.tensorrt.backend import SampledFrontRunner

    cuda = _FakeCuda()
    r = _runner(_front_engine(), cuda, upper_bounds={"sgs0": {2: 4}})
    assert r.dds == ["sgs0"] and r.max_batch == 2
    assert r.allocator.buffers["sgs0"][1] == 2 * 2 * 4 * 4  # reserved at N=2, B=4
    mallocs = cuda.mallocs
    x = np.array([[0.2, 0.3, 0.0], [2.0, 1.0, 0.0], [0.5, -0.5, 0.0]], np.float32)
    front = SampledFrontRunner(r, _M())
    front.sgs_paths = [0]
    out = front.run({"clip0": x})
    assert out["bprime0"].tolist() == [1, 4, 2]
    assert out["sgs0"].shape == (3, 2, 4)
    np.testing.assert_array_equal(out["sgs0"][2, :, :2], np.broadcast_to(x[2, :2, None], (2, 2)))
    assert (out["sgs0"][0, :, 1:] == 0).all()  # zero padding beyond the clip's own B'
    assert cuda.mallocs == mallocs and r.allocator.reallocations == 0  # steady state: no allocation
    assert set(r.last_timings) >= {"host_latency", "enqueue", "h2d", "gpu_compute", "d2h"}


def test_runner_dds_shape_not_notified_fails_instead_of_reusing_stale_bprime():
    """Review item 5: the output allocator kept the previous run's shapes, so a run in which
    TensorRT did not call notify_shape silently returned the last clip's B'."""
    cuda = _FakeCuda()
    r = _runner(_front_engine(), cuda, upper_bounds={"sgs0": {2: 4}})
    x = np.array([[2.0, 1.0, 0.0]], np.float32)  # B' = 4
    assert r.run({"clip0": x})["sgs0"].shape == (1, 2, 4)
    alloc = r.allocator
    real_notify = type(alloc).notify_shape
    type(alloc).notify_shape = lambda self, name, shape: None  # this run: TensorRT never reports the shape
    try:
        with pytest.raises(ATFRError, match="did not report the shape of the data-dependent output 'sgs0'") as ei:
            r.run({"clip0": np.array([[0.2, 0.3, 0.0]], np.float32)})  # B' would be 1, not the stale 4
        assert ei.value.exit_code == 4
    finally:
        type(alloc).notify_shape = real_notify
    assert r.run({"clip0": np.array([[0.2, 0.3, 0.0]], np.float32)})["sgs0"].shape == (1, 2, 1)


def test_runner_back_profiles_chunking_and_graphs():
    cuda = _FakeCuda()
    r = _runner(_back_engine(), cuda, cuda_graphs=True)
    cuda._replay = lambda: r.context.execute_async_v3(0)
    assert r.dds == [] and r.max_batch == 2 and r.host["sgs0"].size == 2 * 2 * 4
    x = np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2)
    np.testing.assert_array_equal(r.run({"sgs0": x})["logits"], x.sum(2))
    assert r.active_profile == 0  # T'=2: the tighter profile
    np.testing.assert_array_equal(r.run({"sgs0": x})["logits"], x.sum(2))
    assert cuda.launches == 1  # second call with the same shapes replays the captured graph
    y = np.ones((5, 2, 3), np.float32)  # N=5 > max batch 2 -> 3 chunks; T'=3 -> profile 1
    np.testing.assert_array_equal(r.run({"sgs0": y})["logits"], np.full((5, 2), 3.0, np.float32))
    assert r.active_profile == 1
    with pytest.raises(ATFRError, match="outside every optimization profile"):
        r.run({"sgs0": np.ones((1, 2, 5), np.float32)})


def _fake_builder_trt(version: str, record: dict):
    """Just enough of the TensorRT builder API for build_engines' own logic (no real engines)."""
    import types

    class _T:
        def __init__(self, name, dtype="float32", shape=(1,)):
            self.name, self.dtype, self.shape = name, dtype, shape

    class Network:
        def __init__(self, flags):
            record.setdefault("network_flags", []).append(flags)
            self.num_layers, self.num_inputs, self.num_outputs = 0, 1, 1

        def get_input(self, i):
            return _T("in")

        def get_output(self, i):
            return _T("out")

    class Parser:
        def __init__(self, net, logger):
            pass

        def parse_from_file(self, path):
            record.setdefault("parsed", []).append(Path(path).name)
            return True

    class Config:
        def __init__(self):
            self.flags, self.profiles = [], []
            self.on = {"T32"}  # TensorRT sets TF32 by default

        def set_memory_pool_limit(self, pool, n):
            record["workspace"] = n

        def set_flag(self, f):
            record.setdefault("flags", []).append(f)
            self.on.add(f)

        def clear_flag(self, f):
            record.setdefault("cleared", []).append(f)
            self.on.discard(f)

        def get_flag(self, f):
            return f in self.on

        def add_optimization_profile(self, p):
            self.profiles.append(p.shapes)
            record.setdefault("profiles", []).append(p.shapes)
            return len(self.profiles) - 1

        def create_timing_cache(self, b):
            record.setdefault("cache_in", []).append(bytes(b))
            return None if bytes(b) == b"GARBAGE" else bytes(b)

        def set_timing_cache(self, c, ignore_mismatch):
            # like IBuilderConfig.set_timing_cache: False for a cache from another GPU/TensorRT
            record.setdefault("cache_set", []).append(c)
            return not (c.startswith(b"FOREIGN") and not ignore_mismatch)

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"CACHE")

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, n, a, b, c):
            self.shapes[n] = (a, b, c)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, net, cfg):
            return b"PLAN" + bytes(len(cfg.profiles))

    class ILogger:
        class Severity:
            ERROR, WARNING = 1, 2

        def __init__(self):
            pass

    flags = {"FP16": "F16", "INT8": "I8", "OBEY_PRECISION_CONSTRAINTS": "OBEY"} if version.startswith("10") else {}
    flags["TF32"] = "T32"
    return types.SimpleNamespace(
        __version__=version, Builder=Builder, OnnxParser=Parser, ILogger=ILogger,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        BuilderFlag=types.SimpleNamespace(**flags), MemoryPoolType=types.SimpleNamespace(WORKSPACE="ws"),
        float32="float32", float16="float16", init_libnvinfer_plugins=lambda logger, ns: True)


def test_build_engines_with_fake_trt(tmp_path, monkeypatch):
    from atfr.runtime.tensorrt import builder as trt_builder
    from test_trt_compat import _fake_export

    exp = _fake_export(tmp_path / "exp")
    rec: dict = {}
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", _fake_builder_trt("10.3.0.26", rec))
    monkeypatch.setattr(trt_builder, "gpu_info", lambda: {"gpu_name": "Orin", "compute_capability": "8.7",
                                                          "cuda_runtime": "12.6"})
    cache = tmp_path / "t.cache"
    written = trt_builder.build_engines(exp, precision="fp16", sgs="host", workspace_mb=512, timing_cache=str(cache),
                                        profiles="1-3:2,4-8:6", max_batch=2, progress=False)
    assert [p.name for p in written] == ["front.engine", "front.engine.json", "back.engine", "back.engine.json",
                                         "t.cache"]
    assert rec["parsed"] == ["front.onnx", "back.onnx"]
    assert rec["flags"] == ["F16", "OBEY"] * 2 and rec["network_flags"] == [0, 0]  # weakly typed on 10.3
    assert rec["cleared"] == ["T32", "T32"]  # TF32 off in both engines (default on in TensorRT)
    assert rec["workspace"] == 512 << 20
    assert rec["cache_in"] == [b"", b"CACHE"]  # the back build reuses the front's timings
    assert cache.read_bytes() == b"CACHE"
    assert rec["profiles"][0] == {"clip0": ((1, 3, 8, 32, 32), (1, 3, 8, 32, 32), (2, 3, 8, 32, 32))}
    assert rec["profiles"][2]["sgs0"] == ((1, 4, 4, 8, 8), (1, 4, 6, 8, 8), (2, 4, 8, 8, 8))
    assert (exp / "back.engine").read_bytes() == b"PLAN\x00\x00"  # raw plan, nothing prepended
    side = json.loads((exp / "back.engine.json").read_text())
    assert side["tensorrt_version"] == "10.3.0.26" and side["compute_capability"] == "8.7"
    assert side["precision"] == "fp16" and side["builder_flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert side["tprime_profiles"] == [["1-3:2"], ["4-8:6"]] and side["plugin"] is None
    assert side["tf32"] is False
    assert side["engine_bytes"] == 6 and len(side["onnx_sha256"]) == 64 and side["created_utc"].endswith("Z")
    with pytest.raises(ATFRError, match="--force"):
        trt_builder.build_engines(exp, sgs="host", progress=False)
    # TensorRT 11: strongly typed; fp16 without fp16 graphs is refused before anything is written.
    rec.clear()
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", _fake_builder_trt("11.0.0", rec))
    with pytest.raises(ATFRError, match="front_fp16/back_fp16"):
        trt_builder.build_engines(exp, precision="fp16", sgs="host", progress=False, force=True)
    trt_builder.build_engines(exp, sgs="host", progress=False, force=True)
    assert rec["network_flags"] == [2, 2] and "flags" not in rec and rec["cleared"] == ["T32", "T32"]
    rec.clear()
    trt_builder.build_engines(exp, sgs="host", progress=False, force=True, tf32=True)
    assert rec["flags"] == ["T32", "T32"] and "cleared" not in rec
    assert json.loads((exp / "front.engine.json").read_text())["tf32"] is True


@pytest.mark.parametrize("content", [b"FOREIGN-GPU-CACHE", b"GARBAGE"])
def test_build_engines_rejected_timing_cache(tmp_path, monkeypatch, capsys, content):
    """set_timing_cache's False (another GPU/TensorRT) and create_timing_cache's None (not a cache)
    are noticed: the build goes on with a fresh cache, says so, and keeps the user's file unless --force."""
    from atfr.runtime.tensorrt import builder as trt_builder
    from test_trt_compat import _fake_export

    exp = _fake_export(tmp_path / "exp")
    rec: dict = {}
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", _fake_builder_trt("10.3.0.26", rec))
    monkeypatch.setattr(trt_builder, "gpu_info", lambda: {"gpu_name": "Orin", "compute_capability": "8.7",
                                                          "cuda_runtime": "12.6"})
    cache = tmp_path / "t.cache"
    cache.write_bytes(content)
    written = trt_builder.build_engines(exp, sgs="host", timing_cache=str(cache), progress=False)
    assert rec["cache_in"] == [content, b"", b"CACHE"]  # rejected -> fresh for the front; back reuses the front's
    # a foreign cache reaches set_timing_cache (which says False); garbage already fails to deserialize
    assert rec["cache_set"] == ([content] if content != b"GARBAGE" else []) + [b"", b"CACHE"]
    err = capsys.readouterr().err
    assert "was not accepted" in err and "not replacing the rejected timing cache" in err
    assert cache.read_bytes() == content and cache not in written
    trt_builder.build_engines(exp, sgs="host", timing_cache=str(cache), progress=False, force=True)
    assert cache.read_bytes() == b"CACHE"


def test_build_engines_fresh_timing_cache_refused_is_an_error(tmp_path, monkeypatch):
    from atfr.runtime.tensorrt import builder as trt_builder
    from test_trt_compat import _fake_export

    exp = _fake_export(tmp_path / "exp")
    fake = _fake_builder_trt("10.3.0.26", {})
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", fake)
    monkeypatch.setattr(trt_builder, "gpu_info", lambda: {"gpu_name": None, "compute_capability": None,
                                                          "cuda_runtime": None})
    cfg_cls = type(fake.Builder(None).create_builder_config())
    monkeypatch.setattr(cfg_cls, "set_timing_cache", lambda self, c, ignore_mismatch: False)
    with pytest.raises(ATFRError, match="refused a new, empty timing cache") as ei:
        trt_builder.build_engines(exp, sgs="host", progress=False)
    assert ei.value.exit_code == 4


def test_build_cli_tf32_flag(tmp_path, monkeypatch, capsys):
    """'atfr build --tf32' reaches the builder config; without it TF32 is cleared (sidecar records both)."""
    from atfr.cli import main
    from atfr.runtime.tensorrt import builder as trt_builder
    from test_trt_compat import _fake_export

    exp = _fake_export(tmp_path / "exp")
    rec: dict = {}
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", _fake_builder_trt("10.16.1.11", rec))
    monkeypatch.setattr(trt_builder, "gpu_info", lambda: {"gpu_name": "Orin", "compute_capability": "8.7",
                                                          "cuda_runtime": "13.0"})
    assert main(["build", str(exp), "--sgs", "host", "--quiet"]) == 0
    assert rec["cleared"] == ["T32", "T32"]
    assert json.loads((exp / "front.engine.json").read_text())["tf32"] is False
    assert main(["build", str(exp), "--sgs", "host", "--quiet", "--force", "--tf32"]) == 0
    assert rec["flags"] == ["T32", "T32"]
    assert json.loads((exp / "back.engine.json").read_text())["tf32"] is True
    assert "--tf32: TensorRT may run the fp32 SGS embedding/distance layers with TF32" in capsys.readouterr().err
