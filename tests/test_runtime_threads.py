"""Runtime thread settings: ONNX Runtime spin policy, scoped BLAS threads, static exports on model.onnx."""

from __future__ import annotations

import numpy as np
import pytest

from atfr.errors import ATFRError
from atfr.runtime.backends import DEFAULT_SPIN, ort_session_options, spin_policy
from atfr.runtime.threads import BlasLimit

ort = pytest.importorskip("onnxruntime")


def test_spin_policy_parsing(monkeypatch):
    monkeypatch.delenv("ATFR_ORT_SPIN", raising=False)
    assert spin_policy() == DEFAULT_SPIN
    assert spin_policy("STOP") == "stop"
    monkeypatch.setenv("ATFR_ORT_SPIN", "0")  # the old spelling still means "off"
    assert spin_policy() == "off"
    monkeypatch.setenv("ATFR_ORT_SPIN", "1")
    assert spin_policy() == "on"
    assert spin_policy("stop") == "stop"  # an explicit argument wins over the environment
    with pytest.raises(ATFRError, match="ATFR_ORT_SPIN"):
        spin_policy("sometimes")


@pytest.mark.parametrize("spin,key,value", [("off", "session.intra_op.allow_spinning", "0"),
                                            ("stop", "session.force_spinning_stop", "1")])
def test_session_options_carry_the_policy(spin, key, value):
    so = ort_session_options(ort, threads=3, spin=spin)
    assert so.intra_op_num_threads == 3
    assert so.get_session_config_entry(key) == value


def test_spin_on_leaves_ort_defaults():
    so = ort_session_options(ort, spin="on")
    for key in ("session.intra_op.allow_spinning", "session.force_spinning_stop"):
        with pytest.raises(Exception):  # ORT raises when an entry was never set
            so.get_session_config_entry(key)


def test_blas_limit_is_scoped():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy has no BLAS threadpool threadpoolctl can see")
    before = [i["num_threads"] for i in blas]
    lim = BlasLimit(1)
    with lim.limit():
        inside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert lim.available and inside == [1] * len(blas) and after == before
    with BlasLimit(None).limit():  # no cap: untouched
        assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == before


@pytest.fixture(scope="module")
def static_export(tmp_path_factory):
    pytest.importorskip("torch")
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint, save_checkpoint
    from atfr.models.config import from_compact
    from atfr.models.zoo import build_model
    import torch

    d = tmp_path_factory.mktemp("static")
    torch.manual_seed(0)
    cfg = from_compact({"arch": "3dresnet", "depth": 18, "width_per_group_slow": 8, "width_per_group_fast": 4,
                        "num_frames": 8, "crop_size": 32, "num_classes": 5, "sgs_stage": "none"})
    save_checkpoint(d / "s.pyth", build_model(cfg), cfg)
    return export_model(load_checkpoint(d / "s.pyth"), d / "export", ExportOptions())


def test_static_export_runs_model_onnx_with_the_split_result(static_export):
    from atfr.runtime.pipeline import Pipeline
    mono = Pipeline.load(static_export)
    split = Pipeline.load(static_export, graph="split")
    assert mono.graph == "model" and split.graph == "split"
    x = [np.random.default_rng(0).standard_normal((2, 3, 8, 32, 32), dtype=np.float32)]
    a, b = mono.infer(x), split.infer(x)
    # the same convolutions in one graph or two: ORT may fuse across the cut differently, so
    # allow float32 reassociation of the logits (|logits| ~ 1, a few hundred MACs per output -> 1e-5)
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(ra.logits, rb.logits, rtol=0, atol=1e-5)
        assert ra.bprime == rb.bprime == ()
    # the split graphs stay reachable (benchmarks, calibration) and are loaded only then
    assert set(mono.run_front(x)) == {"feat0"}


def test_atfr_export_refuses_model_graph(tiny_export):
    from atfr.runtime.pipeline import Pipeline
    with pytest.raises(ATFRError, match="hides B'"):
        Pipeline.load(tiny_export, graph="model")
    with pytest.raises(ATFRError, match="unknown graph"):
        Pipeline.load(tiny_export, graph="fast")
    assert Pipeline.load(tiny_export).graph == "split"
