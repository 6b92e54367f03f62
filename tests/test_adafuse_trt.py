"""TensorRT engines for AdaFuse exports: 'atfr build', and 'atfr infer/run --backend tensorrt'.

No TensorRT here. The builder runs against a fake ``tensorrt`` whose parser reads the real exported
ONNX graphs of the tiny AdaFuse-TSN into fake layers (name, tensors, type, ranks; checked against
NVIDIA's bindings in tests/test_real_bindings_fakes.py), so the profiles and the fp32 pins are
computed on the real graphs. Its "plan" records the ONNX path and the profiles the builder set; the
fake runtime turns that back into an engine that runs the graph on ONNX Runtime behind the
TensorRT engine API, so AdaFuseClipRunner / AdaFuseOnlineRunner go through TrtEngineRunner
(buffers, profiles, int32 outputs) exactly as they would on a GPU.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import test_tensorrt_backend as tb
from cli_helpers import one_line_error, run_cli

# ONNX op -> the TensorRT layer type its parser makes (the ones the policy-head walk looks at).
LAYER_TYPE = {"GlobalAveragePool": "REDUCE", "GlobalMaxPool": "REDUCE", "ReduceMean": "REDUCE", "ReduceMax": "REDUCE",
              "MaxPool": "POOLING", "AveragePool": "POOLING", "Shape": "SHAPE", "Conv": "CONVOLUTION"}
ONNX_DTYPE = {1: "float32", 6: "int32", 7: "int64", 9: "bool"}


# -- the fake network: the exported ONNX graph as TensorRT layers ------------------------------------

class _FakeTensor:
    name = ""
    shape = ()
    dtype = "float32"

    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype


class _FakeLayer:
    name = ""
    type = ""
    num_inputs = 0
    num_outputs = 0
    precision = None

    def __init__(self, name, kind, ins, outs):
        self.name, self.type, self._ins, self._outs = name, f"LayerType.{kind}", ins, outs
        self.num_inputs, self.num_outputs = len(ins), len(outs)
        self._types: dict[int, str] = {}

    def get_input(self, i):
        return self._ins[i]

    def get_output(self, i):
        return self._outs[i]

    def set_output_type(self, i, dtype):
        self._types[i] = dtype


class _OnnxNetwork:
    """INetworkDefinition over an ONNX graph: one layer per node (Constant nodes are weights)."""

    num_layers = 0
    num_inputs = 0
    num_outputs = 0

    def __init__(self):
        self._layers, self._inputs, self._outputs, self.path = [], [], [], None

    def _load(self, path):
        import onnx

        self.path = str(path)
        m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        g = m.graph
        vis = {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}

        def tensor(name):
            v = vis.get(name)
            tt = v.type.tensor_type if v is not None else None
            shape = [d.dim_value or -1 for d in tt.shape.dim] if tt is not None else []
            return _FakeTensor(name, shape, ONNX_DTYPE.get(tt.elem_type if tt is not None else 1, "other"))

        for n in g.node:
            if n.op_type != "Constant":
                self._layers.append(_FakeLayer(n.name, LAYER_TYPE.get(n.op_type, n.op_type.upper()),
                                               [tensor(t) for t in n.input if t in vis],
                                               [tensor(t) for t in n.output]))
        self._inputs = [tensor(i.name) for i in g.input]
        self._outputs = [tensor(o.name) for o in g.output]
        self.num_layers, self.num_inputs, self.num_outputs = len(self._layers), len(self._inputs), len(self._outputs)

    def get_layer(self, i):
        return self._layers[i]

    def get_input(self, i):
        return self._inputs[i]

    def get_output(self, i):
        return self._outputs[i]


class _OnnxParser:
    num_errors = 0

    def __init__(self, network, logger):
        self.network = network

    def parse_from_file(self, path):
        self.network._load(path)
        return True

    def get_error(self, i):
        return None


class _OrtRuntime:
    """trt.Runtime whose engines run the plan's ONNX graph on ONNX Runtime (tests only)."""

    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, plan):
        return _ort_engine(json.loads(bytes(plan)[4:]))


def _ort_engine(plan: dict):
    import onnxruntime as ort

    sess = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
    dt = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
    io = {i.name: ("in", dt[i.type]) for i in sess.get_inputs()}
    io.update({o.name: ("out", dt[o.type]) for o in sess.get_outputs()})
    profiles = [{n: tuple(tuple(s) for s in mmo) for n, mmo in p.items()} for p in plan["profiles"]]
    assert set(profiles[0]) == {i.name for i in sess.get_inputs()}  # the builder gave every input a range
    cache: dict = {}

    def run(ins):
        return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ins)))

    def out_shape(name, shapes):
        key = tuple(sorted(shapes.items()))
        if key not in cache:
            cache[key] = run({n: np.zeros(s, io[n][1]) for n, s in shapes.items()})
        return cache[key][name].shape

    return tb._FakeEngine(io, profiles, out_shape, run)


def _fake_trt(version: str, rec: dict):
    """_fake_builder_trt with the ONNX-reading parser and network, plus the runtime side."""
    fake = tb._fake_builder_trt(version, rec)
    base = fake.Builder

    class Builder(base):  # type: ignore[misc, valid-type]
        def create_network(self, flags):
            rec.setdefault("network_flags", []).append(flags)
            net = _OnnxNetwork()
            rec.setdefault("networks", []).append(net)
            return net

        def build_serialized_network(self, net, cfg):
            prof = [{n: [list(s) for s in mmo] for n, mmo in p.items()} for p in cfg.profiles]
            return b"PLAN" + json.dumps({"onnx": net.path, "profiles": prof}).encode()

    rt = tb._fake_trt()
    fake.Builder, fake.OnnxParser, fake.Runtime = Builder, _OnnxParser, _OrtRuntime
    fake.IOutputAllocator, fake.nptype, fake.TensorIOMode, fake.TensorLocation = (
        rt.IOutputAllocator, rt.nptype, rt.TensorIOMode, rt.TensorLocation)
    return fake


class _Cuda(tb._FakeCuda):
    def device_info(self):
        return {"gpu_name": "Orin", "compute_capability": "8.7"}


@pytest.fixture
def trt_here(monkeypatch):
    """Install the fake tensorrt (10.3 unless the test calls it again) and a fake GPU."""
    from atfr.runtime.tensorrt import adafuse_backend, adafuse_builder

    rec: dict = {}

    def install(version="10.3.0.26"):
        rec.clear()
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(version, rec))
        return rec

    monkeypatch.setattr(adafuse_builder, "gpu_info", lambda: {"gpu_name": "Orin", "compute_capability": "8.7",
                                                              "cuda_runtime": "12.6"})
    cuda = _Cuda()
    monkeypatch.setattr(adafuse_backend, "Cuda", types.SimpleNamespace(get=lambda: cuda))
    install()
    return install


@pytest.fixture
def export(tiny_adafuse_export, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_adafuse_export, tmp_path / "exp"))


def _onnx_layers(path: Path):
    net = _OnnxNetwork()
    net._load(path)
    from atfr.runtime.tensorrt.builder import network_layers

    return net, network_layers(net)


# -- what is pinned, and the profiles -------------------------------------------------------------------

@pytest.mark.parametrize("graph", ["model", "online", "online_gathered"])
def test_policy_head_is_the_gate_network_of_every_gated_block(tiny_adafuse_export, graph):
    """Walked back from policy{i} to the pooling of the block input: both gate FCs, the gate BN and
    ReLU, the softmax, log and the first-maximum comparisons of every gated block; no convolution,
    nothing of the backbone (the classifier's Gemm is the one Gemm left out)."""
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.tensorrt.adafuse_plan import policy_head_layers

    m = load_manifest(tiny_adafuse_export)
    gated = len(m.raw["adafuse"]["policy_blocks"])
    net, layers = _onnx_layers(m.path(graph))
    head = policy_head_layers(layers, [o.name for o in m.graphs[graph].outputs if o.name.startswith("policy")])
    kinds = {ly.name: ly.type.split(".")[-1] for ly in net._layers}
    count = lambda k: sum(kinds[n] == k for n in head)  # noqa: E731
    assert count("GEMM") == 2 * gated and sum(k == "GEMM" for k in kinds.values()) == 2 * gated + 1
    assert count("SOFTMAX") == count("LOG") == count("BATCHNORMALIZATION") == gated
    assert count("REDUCE") == gated  # the pooling of each block input, where the walk stops
    assert count("GREATEROREQUAL") == 3 * gated and count("WHERE") == 3 * gated
    assert count("CONVOLUTION") == 0 and count("POOLING") == 0 and count("SHAPE") == 0
    assert all("gate_fc" in n for n in head if kinds[n] == "GEMM")


def test_profile_shapes_from_the_manifest(tiny_adafuse_export):
    from atfr.errors import ATFRError
    from atfr.runtime.manifest import TensorSpec, load_manifest
    from atfr.runtime.tensorrt.adafuse_plan import graphs_to_build, profile_shapes

    m = load_manifest(tiny_adafuse_export)
    assert graphs_to_build(m.graphs) == ["model", "online", "online_gathered"]
    assert graphs_to_build(["model", "front"]) == ["model"]  # an export without online graphs (older ones)
    with pytest.raises(ATFRError, match="no 'model' graph"):
        graphs_to_build(["online"])
    assert profile_shapes(m.graphs["model"].inputs, 4) == {"clip0": ((1, 3, 4, 32, 32),) * 2 + ((4, 3, 4, 32, 32),)}
    online = profile_shapes(m.graphs["online"].inputs, 2)
    assert list(online) == [t.name for t in m.graphs["online"].inputs] and len(online) == 9
    assert online["conv1_0"] == ((1, 128, 4, 4), (1, 128, 4, 4), (2, 128, 4, 4))
    gathered = profile_shapes(m.graphs["online_gathered"].inputs, 8)  # static: batch 1 whatever --max-batch
    assert len(gathered) == 17 and all(lo == opt == hi and lo[0] == 1 for lo, opt, hi in gathered.values())
    with pytest.raises(ATFRError, match="dynamic dimension 2"):
        profile_shapes([TensorSpec("frame", ["N", 3, "H", 32])], 1, "online")


# -- atfr build --------------------------------------------------------------------------------------------

def test_build_fp16_on_10_3_pins_the_policy_head(export, trt_here, capsys):
    rec = trt_here("10.3.0.26")
    rc, out, err = run_cli(capsys, "build", export, "--precision", "fp16", "--max-batch", "2", "--quiet")
    assert rc == 0, err
    names = ["model", "online", "online_gathered"]
    assert out.split() == [str(export / f"{g}{x}") for g in names for x in (".engine", ".engine.json")]
    assert rec["flags"] == ["F16", "OBEY"] * 3 and rec["network_flags"] == [0, 0, 0] and rec["cleared"] == ["T32"] * 3
    m = json.loads((export / "atfr.json").read_text())
    for g, net in zip(names, rec["networks"]):
        side = json.loads((export / f"{g}.engine.json").read_text())
        assert side["graph"] == g and side["family"] == "adafuse" and side["engine_bytes"] == len(
            (export / f"{g}.engine").read_bytes())
        assert side["onnx_sha256"] == m["checksums"][f"{g}.onnx"] and side["tensorrt_version"] == "10.3.0.26"
        assert side["precision"] == "fp16" and side["builder_flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
        batch = 1 if g == "online_gathered" else 2
        assert [s[2][0] for s in side["profiles"][0].values()] == [batch] * len(m["graphs"][g]["inputs"])
        pinned = {ly.name for ly in net._layers if ly.precision == "float32"}
        typed = {ly.name for ly in net._layers if "float32" in ly._types.values()}
        # exactly the float layers of the policy heads, with their float outputs typed fp32
        head = {ly.name for ly in net._layers
                if ("gate_fc" in ly.name and ly.type.endswith("GEMM")) or ly.type.endswith((".SOFTMAX", ".LOG"))}
        assert len(head) == 4 * len(m["adafuse"]["policy_blocks"]) and head <= pinned <= typed
        assert side["fp32_pinned_layers"] >= len(pinned) > 0
        assert not any(ly.type.endswith(("CONVOLUTION", "POOLING")) for ly in net._layers if ly.name in typed)
        assert side["fp32_pinned"] == "policy head"
    one_line_error(*run_cli(capsys, "build", export, "--quiet")[::2], match="--force")


def test_build_fp32_on_11_is_strongly_typed_without_pins(export, trt_here, capsys):
    rec = trt_here("11.4.0")
    one_line_error(*run_cli(capsys, "build", export, "--precision", "fp16", "--quiet")[::2],
                   match="AdaFuse exports have none: build --precision fp32")
    assert not list(export.glob("*.engine*"))  # refused before anything was written
    rc, _, err = run_cli(capsys, "build", export, "--quiet")
    assert rc == 0, err
    assert rec["network_flags"] == [2, 2, 2] and "flags" not in rec
    assert all(ly.precision is None and not ly._types for net in rec["networks"] for ly in net._layers)
    assert json.loads((export / "online.engine.json").read_text())["fp32_pinned_layers"] == 0


def test_build_refusals_and_warnings_are_one_line(export, trt_here, capsys, monkeypatch):
    if tb.HAVE_TRT:
        pytest.skip("TensorRT is installed here")
    one_line_error(*run_cli(capsys, "build", export, "--precision", "int8")[::2],
                   match="--precision int8: AdaFuse exports have no Q/DQ graphs")
    one_line_error(*run_cli(capsys, "build", export, "--max-batch", "0")[::2], match="--max-batch 0")
    trt_here("10.16.1.11")
    rc, _, err = run_cli(capsys, "build", export, "--precision", "fp16", "--plugin", "x.so", "--quiet")
    assert rc == 0 and "--plugin is ignored: an AdaFuse export has no SGS layer" in err
    assert "deprecated since TensorRT 10.12" in err
    monkeypatch.delitem(sys.modules, "tensorrt")  # and none is installed here (the test skips where one is)
    one_line_error(*run_cli(capsys, "build", export, "--force")[::2], 4, match="TensorRT is not installed")


# -- the runtime: the same runner classes over TensorRT engines ---------------------------------------------

def _clip(m, seed=0):
    return np.random.default_rng(seed).normal(size=m.clip_shapes(1)[0]).astype(np.float32)


def test_clip_and_online_runners_on_engines_equal_onnxruntime(export, trt_here, capsys, tmp_path):
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner
    from atfr.runtime.adafuse_stream import AdaFuseStream
    from atfr.runtime.tensorrt.backend import TrtEngineRunner

    # auto: TensorRT imports here (the fake), but without engines the export runs on ONNX Runtime
    assert AdaFuseClipRunner.load(export).backend == "onnxruntime"
    assert run_cli(capsys, "build", export, "--quiet", "--max-batch", "2")[0] == 0
    assert AdaFuseClipRunner.load(export).backend == "tensorrt"  # auto, now that model.engine exists
    trt_clip = AdaFuseClipRunner.load(export, "tensorrt")
    assert isinstance(trt_clip.runner, TrtEngineRunner) and trt_clip.backend == "tensorrt"
    ort_clip = AdaFuseClipRunner.load(export, "onnxruntime")
    x = _clip(ort_clip.manifest)
    (a, ea), (b, eb) = trt_clip.infer(x), ort_clip.infer(x)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert ea["policy"] == eb["policy"] and ea["gflops"] == eb["gflops"]
    clip = np.concatenate([x, _clip(ort_clip.manifest, 1), _clip(ort_clip.manifest, 2)])  # N=3 > max batch 2
    for graph in ("online", "online_gathered"):
        on = AdaFuseOnlineRunner.load(export, graph=graph, backend="tensorrt")
        assert on.backend == "tensorrt" and on.runner.input_names == [t.name for t in on.manifest.graphs[graph].inputs]
        ref = AdaFuseOnlineRunner.load(export, graph=graph)
        batch = clip if graph == "online" else x  # the gathered graph runs one stream
        (lg, pol), (lg0, pol0) = on.run_clip(batch), ref.run_clip(batch)
        np.testing.assert_array_equal(lg, lg0)
        assert all((p == q).all() for p, q in zip(pol, pol0))
    assert AdaFuseStream.load(export, "tensorrt", graph="online_gathered").runner.backend == "tensorrt"
    np.save(tmp_path / "clip.npy", np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), np.uint8))
    rc, out, err = run_cli(capsys, "infer", export, "--backend", "tensorrt", "--input", tmp_path / "clip.npy", "--json")
    got = json.loads(out)
    rc0, out0, _ = run_cli(capsys, "infer", export, "--backend", "onnxruntime", "--input", tmp_path / "clip.npy",
                           "--json")
    ref = json.loads(out0)
    assert rc == rc0 == 0 and got["backend"] == "tensorrt" and ref["backend"] == "onnxruntime"
    assert got["policy"] == ref["policy"] and got["logits"] == ref["logits"]


def test_engine_errors_are_one_line(export, trt_here, capsys, tmp_path):
    from footage import real_video

    src = str(real_video("carphone"))
    np.save(tmp_path / "clip.npy", np.zeros((4, 32, 32, 3), np.uint8))
    infer = ("infer", export, "--backend", "tensorrt", "--input", tmp_path / "clip.npy")
    one_line_error(*run_cli(capsys, *infer)[::2], match="model.engine is missing: build the engines with 'atfr build")
    one_line_error(*run_cli(capsys, "run", export, "--source", src, "--backend", "tensorrt")[::2],
                   match="online.engine is missing")
    one_line_error(*run_cli(capsys, "run", export, "--source", src, "--backend", "tensorrt", "--online-graph",
                            "online_gathered")[::2], match="online_gathered.engine is missing")
    assert run_cli(capsys, "build", export, "--quiet")[0] == 0
    # built by another TensorRT release: exit 4, naming both
    side = json.loads((export / "model.engine.json").read_text())
    (export / "model.engine.json").write_text(json.dumps(dict(side, tensorrt_version="10.16.1.11")))
    one_line_error(*run_cli(capsys, *infer)[::2], 4, match="engine built with TensorRT 10.16.1 on Orin (sm_87); "
                                                           "this is TensorRT 10.3.0")
    # built from another export's graph (its checksum): rebuild
    (export / "model.engine.json").write_text(json.dumps(dict(side, onnx_sha256="0" * 64)))
    one_line_error(*run_cli(capsys, *infer)[::2], match="model.engine was built from an older model.onnx")
    # an engine file of another graph under this name
    shutil.copy(export / "online.engine", export / "model.engine")
    shutil.copy(export / "online.engine.json", export / "model.engine.json")
    one_line_error(*run_cli(capsys, *infer)[::2], match="model.engine was built from online.onnx, not model.onnx")
    one_line_error(*run_cli(capsys, *infer, "--providers", "cuda")[::2])  # --providers: onnxruntime only


# -- real engines (TensorRT + GPU; skip here: written against the TRT 10.3-11.x API, not executed) ------------

@tb.needs_trt
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engines_match_onnxruntime(export, precision):
    import tensorrt as trt

    from atfr.errors import ATFRError, DependencyError
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner
    from atfr.runtime.tensorrt.adafuse_builder import build_adafuse_engines
    from atfr.runtime.tensorrt.compat import BuildOptions, capabilities
    from atfr.runtime.tensorrt.cuda import Cuda
    from tolerances import magnitude, onnx_shape

    try:
        Cuda.get().device_info()
    except (DependencyError, ATFRError) as e:
        pytest.skip(f"no usable CUDA device / cuda-python: {e}")
    if precision == "fp16" and not capabilities(trt.__version__).has_fp16_flag:
        pytest.skip("TensorRT 11 builds fp16 only from fp16 graphs, which AdaFuse exports do not have")
    build_adafuse_engines(export, BuildOptions(precision=precision, max_batch=2), progress=False)
    side = json.loads((export / "model.engine.json").read_text())
    assert (side["fp32_pinned_layers"] > 0) == (precision == "fp16")
    trt_clip, ort_clip = AdaFuseClipRunner.load(export, "tensorrt"), AdaFuseClipRunner.load(export, "onnxruntime")
    rtol = onnx_shape(export / "model.onnx").rtol
    # fp32 (TF32 off): another summation order, so a policy entry at a near-tie may flip (and what follows it);
    # fp16: the backbone's rounding flips ~0.1% of the entries of this near-uniform random model
    # (benchmarks/adafuse_fp16_policy.py emulates it), the pinned head adds none.
    min_agree = 0.999 if precision == "fp32" else 0.99
    same = total = 0
    for seed in range(4):
        x = _clip(ort_clip.manifest, seed)
        (a, ea), (b, eb) = trt_clip.infer(x), ort_clip.infer(x)
        pa, pb = [np.asarray(p) for p in ea["policy"]], [np.asarray(p) for p in eb["policy"]]
        same += sum(int((p == q).sum()) for p, q in zip(pa, pb))
        total += sum(p.size for p in pb)
        if precision == "fp32" and all((p == q).all() for p, q in zip(pa, pb)):
            np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=rtol * magnitude(b.logits))
    assert same / total >= min_agree, (same, total)
    for graph in ("online", "online_gathered"):
        x = _clip(ort_clip.manifest, 9)
        (lg, pol), (lg0, pol0) = (AdaFuseOnlineRunner.load(export, graph=graph, backend="tensorrt").run_clip(x),
                                  AdaFuseOnlineRunner.load(export, graph=graph).run_clip(x))
        agree = sum(int((p == q).sum()) for p, q in zip(pol, pol0)) / sum(p.size for p in pol0)
        assert agree >= min_agree, (graph, agree)
        if precision == "fp32" and agree == 1.0:
            np.testing.assert_allclose(lg, lg0, rtol=0, atol=rtol * magnitude(lg0))


def test_tsm_online_engines_equal_onnxruntime(tiny_adafuse_tsm_export, trt_here, capsys, tmp_path):
    """AdaFuse-TSM: its delayed online graphs (inputs ``valid`` and ``valid_reg`` besides the frame)
    build like TSN's and, run through TrtEngineRunner, give ONNX Runtime's frames after the flush."""
    from atfr.runtime.adafuse_clip import AdaFuseOnlineRunner

    export = Path(shutil.copytree(tiny_adafuse_tsm_export, tmp_path / "tsm"))
    assert run_cli(capsys, "build", export, "--quiet", "--max-batch", "2")[0] == 0
    x = _clip(AdaFuseOnlineRunner.load(export).manifest)
    for graph in ("online", "online_gathered"):
        on = AdaFuseOnlineRunner.load(export, graph=graph, backend="tensorrt")
        assert on.delay == 8 and {"valid", "valid_reg"} <= set(on.runner.input_names)
        (lg, pol), (lg0, pol0) = on.run_clip(x), AdaFuseOnlineRunner.load(export, graph=graph).run_clip(x)
        assert lg.shape == lg0.shape == (1, 4, 5)
        np.testing.assert_array_equal(lg, lg0)
        assert all((p == q).all() for p, q in zip(pol, pol0))
