"""Serving AdaFuse exports without a server: the request service (what ``atfr serve`` runs), the
``atfr triton-repo`` layout, and its Python-backend models driven as Triton's ensemble would drive
them (a stand-in for ``triton_python_backend_utils``). The reference is ``atfr infer --json`` on
each clip alone. (On real servers: tests/test_adafuse_serve.py.)"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from atfr.errors import ATFRError
from cli_helpers import one_line_error, run_cli
from tolerances import magnitude, onnx_shape

ROOT = Path(__file__).resolve().parents[1]


def two_clips() -> np.ndarray:
    """Two different raw clips (uint8 [2,4,40,50,3]: resized and cropped like atfr run)."""
    rng = np.random.default_rng(25)
    return rng.integers(0, 256, (2, 4, 40, 50, 3), dtype=np.uint8)


def infer_json(export: Path, frames: np.ndarray, path: Path) -> dict:
    from atfr.cli import main

    np.save(path, frames)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["infer", str(export), "--input", str(path), "--json"]) == 0
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def refs(tiny_adafuse_export, tmp_path_factory):
    """Per clip: ``atfr infer --json`` on it alone; and the logits bound (tests/tolerances.py, as
    tests/test_adafuse_export.py: the served batch of 2 and the single clip may sum in other orders)."""
    d = tmp_path_factory.mktemp("ada_serve")
    frames = two_clips()
    out = [infer_json(tiny_adafuse_export, frames[i], d / f"clip{i}.npy") for i in range(2)]
    assert out[0]["policy"] != out[1]["policy"], "the two clips must get different policies"
    atol = onnx_shape(tiny_adafuse_export / "model.onnx").rtol * max(magnitude(np.asarray(r["logits"])) for r in out)
    return frames, out, atol


def assert_matches(resp: dict[str, np.ndarray], refs_: list[dict], atol: float) -> None:
    """The served batch, clip by clip, against atfr infer --json: logits/probs within the bound; top-k,
    policy fractions and GFLOPs exact (the same policy through the same clip_report, then float32)."""
    assert set(resp) == {"probs", "logits", "topk_index", "topk_label", "policy_fractions", "gflops"}
    assert resp["policy_fractions"].shape == (2, 3) and resp["gflops"].shape == (2, 2)
    for i, ref in enumerate(refs_):
        np.testing.assert_allclose(resp["logits"][i], ref["logits"], rtol=0, atol=atol)
        np.testing.assert_allclose(resp["probs"][i], ref["probs"], rtol=0, atol=atol)
        k = resp["topk_index"].shape[1]
        assert resp["topk_index"][i].tolist() == [t["index"] for t in ref["top5"]][:k]
        assert [v.decode() for v in resp["topk_label"][i]] == [t["label"] for t in ref["top5"]][:k]
        f = ref["policy_fractions"]
        assert resp["policy_fractions"][i].tolist() == np.float32([f["skip"], f["reuse"], f["keep"]]).tolist()
        g = ref["gflops"]
        assert resp["gflops"][i].tolist() == np.float32([g["official"], g["eq5"]]).tolist()
    assert resp["policy_fractions"][0].tolist() != resp["policy_fractions"][1].tolist()


@pytest.fixture(scope="module")
def service(tiny_adafuse_export):
    from atfr.runtime.serving.service import ClipService, ServeLimits, load_pipeline

    return ClipService(load_pipeline(tiny_adafuse_export), topk=3,
                       limits=ServeLimits(max_side=256, max_clips=4, max_request_mib=5))


def test_served_batch_matches_atfr_infer(service, refs):
    """A batch of 2 raw clips and the same 2 as float32 clips, each run as one batch of the clip graph."""
    frames, ref, atol = refs
    clips = service.frames_to_clips(frames)
    assert_matches(service.outputs(service.infer(service.check_clips(clips))), ref, atol)
    assert_matches(service.outputs(service.infer(service.check_clips([clips[0].copy()]))), ref, atol)


def test_response_spec_declares_adafuse_outputs_without_bprime(tiny_adafuse_export, tiny_export):
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.serving.service import response_spec

    assert response_spec(load_manifest(tiny_adafuse_export), 3) == [
        ("probs", "float32", [5]), ("logits", "float32", [5]), ("topk_index", "int32", [3]),
        ("topk_label", "bytes", [3]), ("policy_fractions", "float32", [3]), ("gflops", "float32", [2])]
    assert [n for n, _, _ in response_spec(load_manifest(tiny_export), 3)] == [  # ATFR: unchanged
        "probs", "logits", "bprime", "topk_index", "topk_label"]


@pytest.mark.parametrize("make,msg", [
    (lambda: np.zeros((1, 4, 40, 40, 3), np.float32), "frames: expected uint8 RGB, got float32"),
    (lambda: np.zeros((1, 6, 40, 40, 3), np.uint8), "frames: 6 frames per clip, the model takes 4"),
    (lambda: np.zeros((1, 4, 300, 40, 3), np.uint8), "frames: 300x40 exceeds the limit of 256 pixels per side"),
    (lambda: np.zeros((1, 4, 7, 40, 3), np.uint8), "frames: frames of 7x40 are too small"),
    (lambda: np.zeros((5, 4, 40, 40, 3), np.uint8), "frames: 5 clips in one request, the limit is 4"),
])
def test_bad_frames_get_the_atfr_line(service, make, msg):
    with pytest.raises(ATFRError) as e:
        service.frames_to_clips(make())
    assert str(e.value) == msg


def test_bad_clips_get_the_atfr_line(service):
    ok = np.zeros((1, 3, 4, 32, 32), np.float32)
    with pytest.raises(ATFRError, match=r"^clip0: expected float32, got float64$"):
        service.check_clips([ok.astype(np.float64)])
    nan = ok.copy()
    nan[0, 1, 2, 3, 4] = np.nan
    with pytest.raises(ATFRError, match=r"^pathway 0: the clip contains NaN or Inf values$"):
        service.infer(service.check_clips([nan]))
    with pytest.raises(ATFRError, match=r"does not match the export \[N,3,4,32,32\]$"):
        service.check_clips([ok[:, :, :2]])
    with pytest.raises(ATFRError, match=r"^clip0: 5 clips in one request, the limit is 4$"):
        service.check_clips([np.zeros((5, 3, 4, 32, 32), np.float32)])


def test_request_limit_holds_for_adafuse(tiny_adafuse_export):
    from atfr.runtime.serving.service import ClipService, ServeLimits, load_pipeline

    svc = ClipService(load_pipeline(tiny_adafuse_export), limits=ServeLimits(max_request_mib=1))
    big = np.broadcast_to(np.uint8(0), (1, 4, 256, 512, 3))  # 1.5 MiB, a view
    with pytest.raises(ATFRError, match=r"^frames: 1 clip\(s\) of 4 frames of 256x512 are 1.5 MiB, the limit is 1 MiB"):
        svc.frames_to_clips(big)


# -- atfr triton-repo ------------------------------------------------------------------------------

def test_triton_repo_layout_for_adafuse(tiny_adafuse_export, tmp_path, capsys):
    out = tmp_path / "repo"
    rc, _, err = run_cli(capsys, "triton-repo", tiny_adafuse_export, "-o", out, "--topk", "3")
    assert rc == 0, err
    names = json.loads((out / "atfr-repo.json").read_text())["models"]
    assert names == {"clips": "tiny_adafuse", "frames": "tiny_adafuse_frames", "model": "tiny_adafuse_model",
                     "report": "tiny_adafuse_report", "preprocess": "tiny_adafuse_preprocess"}
    model = (out / "tiny_adafuse_model" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in model and "dynamic_batching" in model
    assert '{ name: "policy3" data_type: TYPE_INT32 dims: [ -1, -1 ] }' in model
    assert (out / "tiny_adafuse_model" / "1" / "model.onnx").read_bytes() == (tiny_adafuse_export / "model.onnx").read_bytes()
    want = ('output [\n  { name: "probs" data_type: TYPE_FP32 dims: [ 5 ] },\n'
            '  { name: "logits" data_type: TYPE_FP32 dims: [ 5 ] },\n'
            '  { name: "topk_index" data_type: TYPE_INT32 dims: [ 3 ] },\n'
            '  { name: "topk_label" data_type: TYPE_STRING dims: [ 3 ] },\n'
            '  { name: "policy_fractions" data_type: TYPE_FP32 dims: [ 3 ] },\n'
            '  { name: "gflops" data_type: TYPE_FP32 dims: [ 2 ] }\n]\n')
    for m in ("tiny_adafuse", "tiny_adafuse_frames", "tiny_adafuse_report"):
        assert want in (out / m / "config.pbtxt").read_text(), m
    ens = (out / "tiny_adafuse_frames" / "config.pbtxt").read_text()
    # the graph's logits travel under another name: an ensemble tensor has one producer
    assert ens.count('value: "graph_logits"') == 2 and ens.count('output_map { key: "logits" value: "logits" }') == 1
    assert ens.index('"tiny_adafuse_preprocess"') < ens.index('"tiny_adafuse_model"') < ens.index('"tiny_adafuse_report"')
    assert "policy_fractions" in (out / "README.md").read_text()
    # no TensorRT engines for AdaFuse yet: one line, exit 2, nothing written
    rc, _, err = run_cli(capsys, "triton-repo", tiny_adafuse_export, "-o", tmp_path / "trt", "--flavor", "tensorrt")
    one_line_error(rc, err, 2, "--flavor tensorrt needs TensorRT engines")
    assert not (tmp_path / "trt").exists()


class FakePb:
    """The part of ``triton_python_backend_utils`` the models use, recording metrics."""

    def __init__(self):
        self.metrics: dict[tuple[str, str], float] = {}
        pb = self

        class MetricFamily:
            COUNTER = "counter"

            def __init__(self, name, description, kind):
                self.name = name

            def Metric(self, labels):  # noqa: N802 - Triton's name
                key = (self.name, labels["model"])
                pb.metrics[key] = 0.0
                return SimpleNamespace(increment=lambda v: pb.metrics.__setitem__(key, pb.metrics[key] + v))

        self.MetricFamily = MetricFamily

    Tensor = staticmethod(lambda name, value: SimpleNamespace(name=name, value=value))
    TritonError = staticmethod(lambda msg: SimpleNamespace(msg=msg))

    @staticmethod
    def InferenceResponse(output_tensors=None, error=None):  # noqa: N802
        return SimpleNamespace(tensors={t.name: t.value for t in output_tensors or []}, error=error)

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return SimpleNamespace(as_numpy=lambda: request[name])


def load_model(repo: Path, name: str, cls: str):
    """A Python-backend model as Triton loads it: its config (parameters and max batch from config.pbtxt)."""
    from atfr.runtime.serving import triton_models

    text = (repo / name / "config.pbtxt").read_text()
    params = dict(re.findall(r'parameters \{ key: "(\w+)" value \{ string_value: "([^"]*)" \} \}', text))
    cfg = {"max_batch_size": int(re.search(r"max_batch_size: (\d+)", text).group(1)),
           "parameters": {k: {"string_value": v} for k, v in params.items()}}
    model = getattr(triton_models, cls)()
    model.initialize({"model_repository": str(repo / name), "model_version": "1", "model_name": name,
                      "model_config": json.dumps(cfg)})
    return model


def test_repo_python_models_match_atfr_infer(tiny_adafuse_export, refs, tmp_path, monkeypatch, capsys):
    """frames -> preprocess -> clip graph -> report, as the ensemble runs them (python flavor)."""
    from atfr.runtime.serving import triton_models

    pb = FakePb()
    monkeypatch.setattr(triton_models, "pb_utils", pb)
    repo = tmp_path / "repo"
    rc, _, err = run_cli(capsys, "triton-repo", tiny_adafuse_export, "-o", repo, "--flavor", "python")
    assert rc == 0, err
    pre = load_model(repo, "tiny_adafuse_preprocess", "PreprocessModel")
    graph = load_model(repo, "tiny_adafuse_model", "OrtGraphModel")
    report = load_model(repo, "tiny_adafuse_report", "AdaFuseReportModel")
    frames, ref, atol = refs
    (clips,) = pre.execute([{"frames": frames}])
    assert clips.error is None
    # a NaN clip batched with the good batch of 2 fails alone (errors are per request)
    nan = np.full((1, 3, 4, 32, 32), np.nan, np.float32)
    good, bad = graph.execute([clips.tensors, {"clip0": nan}])
    assert bad.error.msg == "clip0: the clip contains NaN or Inf values" and good.error is None
    inner = good.tensors
    assert sorted(inner) == ["logits", "policy0", "policy1", "policy2", "policy3"]
    (resp,) = report.execute([inner])
    assert resp.error is None
    assert_matches(resp.tensors, ref, atol)
    eq5 = sum(r["gflops"]["eq5"] for r in ref)
    static = json.loads((tiny_adafuse_export / "atfr.json").read_text())["gflops"]["static_official"]
    assert pb.metrics[("atfr_clips_total", "tiny_adafuse_report")] == 2
    assert pb.metrics[("atfr_gflops_total", "tiny_adafuse_report")] == pytest.approx(eq5, rel=1e-12)
    assert pb.metrics[("atfr_gflops_saved_total", "tiny_adafuse_report")] == pytest.approx(
        sum(max(0.0, static - r["gflops"]["eq5"]) for r in ref), rel=1e-12)
    # a malformed request to the report model: its one line, and the model keeps answering
    (bad,) = report.execute([{**inner, "logits": np.full_like(inner["logits"], np.inf)}])
    assert bad.error.msg == "the model produced NaN/Inf logits for this clip"
    assert report.execute([inner])[0].error is None
