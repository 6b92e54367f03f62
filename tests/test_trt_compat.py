"""TensorRT version/precision/profile logic and the `atfr build` front door, without TensorRT.

Nothing here imports tensorrt: the choices the builder makes on TensorRT 10.3 (JetPack 6.1/6.2),
10.12, 10.16 (JetPack 7.2), 11.0 and 11.4 are pure functions, and the few builder helpers that
touch the TensorRT API are driven with fake module objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from atfr.errors import ATFRError, DependencyError
from atfr.runtime.tensorrt import compat as tc

# -- versions / capabilities ---------------------------------------------------------------------


@pytest.mark.parametrize("s, want", [
    ("10.3.0.26", (10, 3, 0, 26)), ("10.13.3.9", (10, 13, 3, 9)), ("11.0", (11, 0, 0, 0)),
    ("10.16.1.11+cuda13.0", (10, 16, 1, 11)), ("v10.3", (10, 3, 0, 0)), ("8.6.2.3", (8, 6, 2, 3)),
    ((10, 12), (10, 12, 0, 0)),
])
def test_parse_version(s, want):
    v = tc.parse_version(s)
    assert (v.major, v.minor, v.patch, v.build) == want


def test_parse_version_bad_and_ordering():
    with pytest.raises(ATFRError):
        tc.parse_version("tensorrt")
    assert tc.parse_version("10.12") > tc.parse_version("10.3.0.26")  # numeric, not lexicographic
    assert str(tc.parse_version("10.3.0.26")) == "10.3.0"
    assert tc.parse_version("10.3.0.26").release == tc.parse_version("10.3.0.30").release


@pytest.mark.parametrize("v, fp16flag, st_avail, st_default, v3, onnx_v3", [
    ("10.0.1", True, False, False, True, False),
    ("10.3.0", True, False, False, True, True),
    ("10.12.0", True, True, False, True, True),
    ("10.16.1", True, True, False, True, True),
    ("11.0.0", False, True, True, True, True),
    ("11.4.1", False, True, True, True, True),
])
def test_capabilities(v, fp16flag, st_avail, st_default, v3, onnx_v3):
    c = tc.capabilities(v)
    assert c.has_fp16_flag == c.has_int8_flag == c.has_implicit_int8 == fp16flag
    assert c.strongly_typed_available == st_avail
    assert c.strongly_typed_default == st_default
    assert c.strongly_typed_flag  # the creation flag exists on every 10.x/11.x
    assert c.supports_ipluginv3 == v3 and c.onnx_v3_plugin == onnx_v3
    assert c.weak_typing_deprecated == (tc.parse_version(v) >= tc.parse_version("10.12"))


def test_check_supported():
    with pytest.raises(DependencyError, match="too old"):
        tc.check_supported("8.6.2.3")  # JetPack 6.0: no IPluginV3
    with pytest.raises(DependencyError, match="V3 plugins"):
        tc.check_supported("10.0.1", sgs="plugin")
    tc.check_supported("10.0.1", sgs="fallback")
    tc.check_supported("10.3.0", sgs="plugin")


# -- precision plans -----------------------------------------------------------------------------

VERSIONS = ["10.3.0.26", "10.12.0.36", "10.16.1.11", "11.0.0", "11.4.1"]


@pytest.mark.parametrize("v", VERSIONS)
def test_fp32_plan(v):
    p = tc.choose_precision_plan(v, "fp32", int8_graph_present=True, fp16_graph_present=True)
    assert p.graph_suffix == "" and p.builder_flags == () and not p.pin_fp32
    assert p.strongly_typed == v.startswith("11")  # the only mode on 11.x; no casts in fp32 graphs


def test_fp16_plan_weak_on_10_3():
    for fp16_graph in (False, True):
        p = tc.choose_precision_plan("10.3.0.26", "fp16", fp16_graph_present=fp16_graph)
        assert p.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
        assert not p.strongly_typed and p.pin_fp32 and p.graph_suffix == ""
        assert bool(p.warnings) == fp16_graph  # says why the fp16 graphs are not used


@pytest.mark.parametrize("v", ["10.12.0.36", "10.16.1.11", "11.0.0", "11.4.1"])
def test_fp16_plan_strong_with_fp16_graphs(v):
    p = tc.choose_precision_plan(v, "fp16", fp16_graph_present=True)
    assert p.strongly_typed and p.builder_flags == () and p.graph_suffix == "_fp16" and not p.pin_fp32


@pytest.mark.parametrize("v", ["10.12.0.36", "10.16.1.11"])
def test_fp16_plan_deprecated_flag_route_without_graphs(v):
    p = tc.choose_precision_plan(v, "fp16", fp16_graph_present=False)
    assert p.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and not p.strongly_typed and p.pin_fp32
    assert any("deprecated" in w for w in p.warnings)


@pytest.mark.parametrize("v", ["11.0.0", "11.4.1"])
def test_fp16_plan_error_on_11_without_graphs(v):
    with pytest.raises(ATFRError, match="front_fp16/back_fp16"):
        tc.choose_precision_plan(v, "fp16", fp16_graph_present=False)


@pytest.mark.parametrize("v", VERSIONS)
def test_int8_needs_qdq_graphs(v):
    with pytest.raises(ATFRError, match="atfr calibrate"):
        tc.choose_precision_plan(v, "int8", int8_graph_present=False)


@pytest.mark.parametrize("v, flags, strong, warn", [
    ("10.3.0.26", ("INT8", "FP16"), False, False),
    ("10.12.0.36", ("INT8", "FP16"), False, True),
    ("10.16.1.11", ("INT8", "FP16"), False, True),
    ("11.0.0", (), True, False),
    ("11.4.1", (), True, False),
])
def test_int8_plan(v, flags, strong, warn):
    p = tc.choose_precision_plan(v, "int8", int8_graph_present=True)
    assert p.graph_suffix == "_int8" and p.builder_flags == flags and p.strongly_typed == strong
    assert bool(p.warnings) == warn
    assert "calibrat" not in " ".join(p.builder_flags).lower()  # never an implicit calibrator


def test_plans_never_use_removed_flags_on_11():
    for prec, kw in (("fp32", {}), ("fp16", {"fp16_graph_present": True}), ("int8", {"int8_graph_present": True})):
        assert tc.choose_precision_plan("11.1.0", prec, **kw).builder_flags == ()


def test_unknown_precision():
    with pytest.raises(ATFRError, match="unknown precision"):
        tc.choose_precision_plan("10.3", "bf16")


# -- graph choice -------------------------------------------------------------------------------

GRAPHS = {"front": ["feat0", "dist0"], "back": ["logits"], "front_plugin": ["sgs0", "bprime0"],
          "front_fallback": ["sgs0", "bprime0"], "sgs_plugin": ["sgs0", "bprime0"], "model": ["logits"]}


def test_resolve_graphs_fp32():
    p = tc.choose_precision_plan("10.3", "fp32")
    assert tc.resolve_graphs(p, GRAPHS, "plugin") == tc.GraphChoice("front_plugin", "back")
    assert tc.resolve_graphs(p, GRAPHS, "fallback").front == "front_fallback"
    assert tc.resolve_graphs(p, GRAPHS, "host").front == "front"
    assert tc.resolve_graphs(p, GRAPHS, "plugin", has_sgs_layers=False).front == "front"


def test_resolve_graphs_int8_prefers_sgs_variant_and_warns_on_plain_front():
    p = tc.choose_precision_plan("11.0", "int8", int8_graph_present=True)
    g = dict(GRAPHS, front_int8=["feat0", "dist0"], back_int8=["logits"])
    c = tc.resolve_graphs(p, g, "plugin")
    assert (c.front, c.back) == ("front_int8", "back_int8") and "host" in c.warnings[0]
    g["front_plugin_int8"] = ["sgs0", "bprime0"]
    c = tc.resolve_graphs(p, g, "plugin")
    assert c.front == "front_plugin_int8" and not c.warnings
    with pytest.raises(ATFRError, match="back_int8"):
        tc.resolve_graphs(p, {k: v for k, v in g.items() if k != "back_int8"}, "plugin")
    with pytest.raises(ATFRError, match="atfr calibrate"):
        tc.resolve_graphs(p, GRAPHS, "plugin")


def test_graph_has_sgs():
    assert tc.graph_has_sgs(["sgs0", "bprime0"]) and tc.graph_has_sgs(["sgs1", "feat0"])
    assert not tc.graph_has_sgs(["feat0", "dist0"]) and not tc.graph_has_sgs(["sgs_x"])


# -- fp32 islands --------------------------------------------------------------------------------

def test_fp32_layers_embedding_and_sgs():
    layers = [  # the shape of front_plugin.onnx: backbone -> feat0 -> embedding -> dist0 -> SGS
        ("conv1", ["clip0"], ["c1"]), ("conv2", ["c1"], ["feat0"]),
        ("pool", ["feat0"], ["p"]), ("fc", ["p"], ["e"]), ("dist", ["e"], ["dist0"]),
        ("SGS_0", ["feat0", "dist0"], ["sgs0", "bprime0"]),
    ]
    assert tc.fp32_layers(layers, ["feat0"], ["dist0"]) == {"pool", "fc", "dist", "SGS_0"}
    fallback = layers[:5] + [("topk", ["dist0"], ["i"]), ("gather", ["feat0", "i"], ["sgs0"])]
    assert tc.fp32_layers(fallback, ["feat0"], ["dist0"]) == {"pool", "fc", "dist", "topk", "gather"}
    assert tc.fp32_layers(layers, [], []) == set()


# -- profiles ------------------------------------------------------------------------------------

def test_parse_profiles():
    pr = tc.parse_profiles("1-4:2,5-32:8", [32])
    assert pr == [(tc.TRange(1, 4, 2),), (tc.TRange(5, 32, 8),)]
    assert tc.parse_profiles("1-32", [32]) == [(tc.TRange(1, 32, 17),)]  # opt defaults to the middle
    two = tc.parse_profiles("1-2:2/1-16:8,3-4:4/17-32:24", [4, 32])
    assert two[1] == (tc.TRange(3, 4, 4), tc.TRange(17, 32, 24))
    same = tc.parse_profiles("1-32:8", [4, 32])  # one range for both pathways, capped at each B
    assert same == [(tc.TRange(1, 4, 4), tc.TRange(1, 32, 8))]


@pytest.mark.parametrize("spec, match", [
    ("1-4:2,6-32:8", "T'=5 uncovered"), ("1-40:8", "exceeds B=32"), ("4-1", "MIN <= MAX"),
    ("1-8:9,9-32", "outside"), ("a-b", "bad profile range"), ("0-32", "MIN <= MAX"), (" , ", "empty"),
    ("1-2:2/1-16:8/1-3", "3 range"),
])
def test_parse_profiles_errors(spec, match):
    with pytest.raises(ATFRError, match=match):
        tc.parse_profiles(spec, [32] if "/" not in spec else [4, 32])


def test_default_and_pick_profile():
    assert tc.default_profiles([32], [8]) == [(tc.TRange(1, 32, 8),)]
    assert tc.default_profiles([32, 4], [None, 9]) == [(tc.TRange(1, 32, 16), tc.TRange(1, 4, 4))]
    profs = tc.parse_profiles("1-32:8,1-4:2", [32])
    assert tc.pick_profile(profs, [3]) == 1  # the tightest that fits
    assert tc.pick_profile(profs, [20]) == 0
    with pytest.raises(ATFRError, match="no optimization profile"):
        tc.pick_profile(tc.parse_profiles("1-4,5-32", [32])[:1], [9])


# -- engine compatibility -----------------------------------------------------------------------

ORIN = {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7",
        "plugin": {"file": "libatfr_sgs.so", "sha256": "a" * 64}, "engine": "front.engine",
        "onnx_file": "front_plugin.onnx", "onnx_sha256": "c" * 64}


def test_engine_compat_ok_and_build_number_ignored():
    assert tc.engine_compat_problem(ORIN, "10.3.0.26", "Orin", "8.7", "a" * 64) is None
    assert tc.engine_compat_problem(ORIN, "10.3.0", "Jetson AGX Orin", (8, 7), "a" * 64) is None  # same arch


def test_engine_compat_other_trt_and_gpu():
    msg = tc.engine_compat_problem(ORIN, "10.13.3.9", "NVIDIA GeForce RTX 4090", "8.9", "a" * 64, outdir="exp")
    assert msg == ("engine built with TensorRT 10.3.0 on Orin (sm_87); this is TensorRT 10.13.3 on "
                   "NVIDIA GeForce RTX 4090 (sm_89): rebuild with 'atfr build exp'")
    assert "\n" not in msg
    assert "sm_89" in tc.engine_compat_problem(ORIN, "10.3.0", "RTX 4090", "sm_89", "a" * 64)
    assert "TensorRT 11.0.0" in tc.engine_compat_problem(ORIN, "11.0", "Orin", "8.7", "a" * 64)


def test_engine_compat_plugin():
    assert "--plugin PATH" in tc.engine_compat_problem(ORIN, "10.3.0", "Orin", "8.7", None)
    assert "different SGS plugin" in tc.engine_compat_problem(ORIN, "10.3.0", "Orin", "8.7", "b" * 64)
    no_plugin = dict(ORIN, plugin=None)
    assert tc.engine_compat_problem(no_plugin, "10.3.0", "Orin", "8.7", None) is None


def test_engine_compat_bad_sidecar_and_stale():
    assert "rebuild" in tc.engine_compat_problem({}, "10.3.0", "Orin", "8.7", None)
    assert tc.stale_problem(ORIN, "c" * 64) is None
    assert "older front_plugin.onnx" in tc.stale_problem(ORIN, "d" * 64, "exp")


@pytest.mark.parametrize("cc, want", [("8.7", (8, 7)), ("sm_87", (8, 7)), ("87", (8, 7)), ((11, 0), (11, 0)),
                                      ("sm_110", (11, 0)), ("12.0", (12, 0))])
def test_normalize_cc(cc, want):
    assert tc.normalize_cc(cc) == want


def test_plan_engines_int8_with_float_front():
    """--front float exports (back_int8 only): the front engine gets this version's fp16 plan and
    the back the int8 plan; one plan for both otherwise."""
    g16 = dict(GRAPHS, front_fp16=["feat0", "dist0"], front_plugin_fp16=["sgs0", "bprime0"], back_fp16=["logits"],
               back_int8=["logits"])
    plans, _ = tc.plan_engines("10.3.0.26", "int8", g16, "plugin", int8_front="float")
    (f, b) = plans
    assert (f.role, f.graph, f.plan.precision) == ("front", "front_plugin", "fp16")
    assert f.plan.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and f.plan.pin_fp32
    assert (b.role, b.graph, b.plan.precision, b.plan.builder_flags) == ("back", "back_int8", "int8", ("INT8", "FP16"))
    plans, _ = tc.plan_engines("11.4.1", "int8", g16, "plugin", int8_front="float")
    assert [(e.graph, e.plan.strongly_typed, e.plan.builder_flags) for e in plans] == [
        ("front_plugin_fp16", True, ()), ("back_int8", True, ())]
    # TensorRT 11 has no FP16 flag: a float front needs the fp16 graphs
    with pytest.raises(ATFRError, match="fp16 ONNX graphs"):
        tc.plan_engines("11.0", "int8", dict(GRAPHS, back_int8=["logits"]), "plugin", int8_front="float")
    with pytest.raises(ATFRError, match="back_int8"):
        tc.plan_engines("10.3", "int8", {k: v for k, v in g16.items() if k != "back_int8"}, "plugin",
                        int8_front="float")
    # both quantized (--front int8) and other precisions: one plan, graphs as resolve_graphs picks them
    g8 = dict(GRAPHS, front_plugin_int8=["sgs0", "bprime0"], back_int8=["logits"])
    plans, _ = tc.plan_engines("10.3", "int8", g8, "plugin", int8_front="int8")
    assert [(e.graph, e.plan.precision) for e in plans] == [("front_plugin_int8", "int8"), ("back_int8", "int8")]
    plans, _ = tc.plan_engines("10.3", "fp32", GRAPHS, "host")
    assert [(e.graph, e.plan.precision) for e in plans] == [("front", "fp32"), ("back", "fp32")]


def test_plan_engines_fp32_front_policy():
    """Exports whose fp16 policy keeps the whole front fp32 (atfr export --fp16's default): the
    front engine is a plain fp32 build of the fp32 graph (no FP16 flag, no casts), the back keeps
    its fp16 or int8 plan; on TensorRT 11 too, where the fp16 front would need its cast graph."""
    g = dict(GRAPHS, front_fp16=["feat0", "dist0"], front_plugin_fp16=["sgs0", "bprime0"], back_fp16=["logits"],
             back_int8=["logits"])
    for version in ("10.3.0.26", "10.16.1", "11.4.1"):
        plans, _ = tc.plan_engines(version, "fp16", g, "plugin", front_fp32=True)
        (f, b) = plans
        assert (f.graph, f.plan.precision, f.plan.builder_flags, f.plan.pin_fp32) == ("front_plugin", "fp32", (), False)
        assert b.plan.precision == "fp16" and b.graph in ("back", "back_fp16")
        plans, _ = tc.plan_engines(version, "int8", g, "plugin", int8_front="float", front_fp32=True)
        assert [(e.graph, e.plan.precision) for e in plans] == [("front_plugin", "fp32"), ("back_int8", "int8")]
    # the same export built without the flag (older manifests): the fp16 front plan, as before
    plans, _ = tc.plan_engines("10.3.0.26", "fp16", g, "plugin")
    assert plans[0].plan.precision == "fp16" and plans[0].plan.pin_fp32
    # a both-quantized export (--front int8) and fp32 builds ignore the flag
    g8 = dict(g, front_plugin_int8=["sgs0", "bprime0"])
    plans, _ = tc.plan_engines("10.3", "int8", g8, "plugin", int8_front="int8", front_fp32=True)
    assert [(e.graph, e.plan.precision) for e in plans] == [("front_plugin_int8", "int8"), ("back_int8", "int8")]
    plans, _ = tc.plan_engines("11.4.1", "fp32", g, "host", front_fp32=True)
    assert [(e.graph, e.plan.precision) for e in plans] == [("front", "fp32"), ("back", "fp32")]
    with pytest.raises(ATFRError, match="back_int8"):
        tc.plan_engines("10.3", "int8", {k: v for k, v in g.items() if k != "back_int8"}, "plugin",
                        int8_front="float", front_fp32=True)


def test_fp16_front_flag_is_read_from_the_manifest():
    from atfr.runtime.manifest import fp16_front_is_fp32

    assert fp16_front_is_fp32({"precision": {"fp16": {"front_fp32": True}}}) is True
    assert fp16_front_is_fp32({"precision": {"fp16": {"front_fp32": False}}}) is False
    assert fp16_front_is_fp32({"precision": {}}) is False and fp16_front_is_fp32({}) is False


# -- build option validation (before tensorrt is imported) ---------------------------------------

def _validate(tmp_path, keys=("front", "back", "front_plugin", "front_fallback"), bins=(32,), int8_front="int8", **kw):
    lib = tmp_path / "libatfr_sgs.so"
    lib.write_bytes(b"\x7fELF")
    kw.setdefault("plugin_path", str(lib))
    return tc.validate_build_options(tc.BuildOptions(**kw), list(bins), keys, int8_front=int8_front)


def test_validate_ok_no_warnings(tmp_path):
    o = _validate(tmp_path)
    assert o.warnings == [] and o.sgs == "plugin"


def test_validate_plugin_required_and_missing(tmp_path):
    with pytest.raises(ATFRError, match="--plugin PATH"):
        _validate(tmp_path, plugin_path=None)
    with pytest.raises(ATFRError, match="no such file"):
        _validate(tmp_path, plugin_path=str(tmp_path / "nope.so"))
    o = _validate(tmp_path, sgs="fallback")
    assert o.plugin_path is None and any("--plugin is ignored" in w for w in o.warnings)


def test_validate_per_precision(tmp_path):
    with pytest.raises(ATFRError, match="atfr calibrate"):
        _validate(tmp_path, precision="int8")
    o = _validate(tmp_path, precision="int8", keys=("front", "back", "front_int8", "back_int8", "front_plugin"))
    assert o.warnings == []
    # --front float exports have back_int8 only
    with pytest.raises(ATFRError, match=r"\(front_int8, back_int8\)"):
        _validate(tmp_path, precision="int8", keys=("front", "back", "back_int8", "front_plugin"))
    o = _validate(tmp_path, precision="int8", keys=("front", "back", "back_int8", "front_plugin"), int8_front="float")
    assert o.warnings == []
    with pytest.raises(ATFRError, match=r"needs Q/DQ graphs \(back_int8\)"):
        _validate(tmp_path, precision="int8", keys=("front", "back", "front_plugin"), int8_front="float")
    o = _validate(tmp_path, precision="fp16")
    assert any("no fp16 graphs" in w and "TensorRT 11" in w for w in o.warnings)
    assert all(w.startswith("WARNING ⚠️") for w in o.warnings)
    o = _validate(tmp_path, precision="fp16", keys=("front_plugin", "back", "front_plugin_fp16", "back_fp16"))
    assert o.warnings == []


@pytest.mark.parametrize("kw, match", [
    ({"max_batch": 0}, "--max-batch"), ({"workspace_mb": 0}, "--workspace"), ({"opt_bprime": 33}, "--opt 33"),
    ({"profiles": "1-4,6-32"}, "uncovered"), ({"precision": "bf16"}, "--precision"), ({"sgs": "cuda"}, "--sgs"),
])
def test_validate_errors(tmp_path, kw, match):
    with pytest.raises(ATFRError, match=match):
        _validate(tmp_path, **kw)


def test_validate_warnings(tmp_path):
    o = _validate(tmp_path, profiles="1-8:4,9-32:16", opt_bprime=8, max_batch=4, workspace_mb=64)
    text = " ".join(o.warnings)
    assert "--opt is ignored" in text and "one clip at a time" in text and "small" in text
    assert o.opt_bprime is None
    o = _validate(tmp_path, bins=(), profiles="1-4")
    assert o.sgs == "host" and o.profiles is None and o.plugin_path is None
    assert len(o.warnings) == 2 and "--plugin is ignored" in o.warnings[1]
    with pytest.raises(ATFRError, match="does not exist"):
        _validate(tmp_path, timing_cache=str(tmp_path / "missing" / "t.cache"))


# -- builder helpers with a fake tensorrt module -------------------------------------------------

class _FakeConfig:
    """IBuilderConfig's flag API; like TensorRT, TF32 starts set (``default``)."""

    def __init__(self, default=("T",)):
        self.flags = set(default)
        self.set_calls: list[str] = []

    def set_flag(self, f):
        self.set_calls.append(f)
        self.flags.add(f)

    def clear_flag(self, f):
        self.flags.discard(f)

    def get_flag(self, f):
        return f in self.flags


def _flags_trt(version, tf32=True):
    names = {"FP16": "F16", "INT8": "I8", "OBEY_PRECISION_CONSTRAINTS": "O"} if version.startswith("10") else {}
    if tf32:
        names["TF32"] = "T"
    return types.SimpleNamespace(__version__=version, BuilderFlag=types.SimpleNamespace(**names))


def test_set_flags_by_name_fake_trt():
    from atfr.runtime.tensorrt.builder import _set_flags

    cfg = _FakeConfig()
    _set_flags(_flags_trt("10.3.0.26"), cfg, tc.choose_precision_plan("10.3.0.26", "fp16"))
    assert cfg.set_calls == ["F16", "O"]
    cfg = _FakeConfig()
    _set_flags(_flags_trt("11.0.0"), cfg, tc.choose_precision_plan("11.0.0", "int8", int8_graph_present=True))
    assert cfg.set_calls == []  # no precision flags asked on 11.x
    with pytest.raises(ATFRError, match="no BuilderFlag.FP16"):
        _set_flags(_flags_trt("11.0.0"), cfg, tc.choose_precision_plan("10.3", "fp16"))


# TensorRT sets TF32 by default; it must end up cleared for every precision on every version unless
# --tf32 asks for it (issue 14, review item 2).
TF32_CASES = [(v, prec, kw) for v in ("10.3.0.26", "10.12.0.36", "10.16.1.11", "11.0.0", "11.4.1")
              for prec, kw in (("fp32", {}), ("fp16", {"fp16_graph_present": True}),
                               ("int8", {"int8_graph_present": True}))]


@pytest.mark.parametrize("v, prec, kw", TF32_CASES)
def test_tf32_cleared_by_default(v, prec, kw):
    from atfr.runtime.tensorrt.builder import _set_flags

    plan = tc.choose_precision_plan(v, prec, **kw)
    assert plan.tf32 is False and "TF32 off" in plan.describe()
    cfg = _FakeConfig()
    assert _set_flags(_flags_trt(v), cfg, plan) is False
    assert "T" not in cfg.flags
    assert set(cfg.flags) == set(plan.builder_flags and [{"FP16": "F16", "INT8": "I8",
                                                         "OBEY_PRECISION_CONSTRAINTS": "O"}[f]
                                                        for f in plan.builder_flags])


@pytest.mark.parametrize("v, prec, kw", TF32_CASES[::4])
def test_tf32_opt_in_sets_flag_and_warns(v, prec, kw):
    from atfr.runtime.tensorrt.builder import _set_flags

    plan = tc.choose_precision_plan(v, prec, tf32=True, **kw)
    assert plan.tf32 and any("--tf32" in w and "B'" in w for w in plan.warnings)
    cfg = _FakeConfig(default=())
    assert _set_flags(_flags_trt(v), cfg, plan) is True and "T" in cfg.flags


def test_tf32_plan_engines_int8_float_front_carries_flag():
    graphs = {"front": ["feat0", "dist0"], "front_fp16": ["feat0", "dist0"], "back_fp16": ["logits"],
              "back_int8": ["logits"], "back": ["logits"]}
    plans, _ = tc.plan_engines("10.16.1", "int8", graphs, "host", int8_front="float")
    assert [p.plan.tf32 for p in plans] == [False, False]
    plans, warns = tc.plan_engines("10.16.1", "int8", graphs, "host", int8_front="float", tf32=True)
    assert [p.plan.tf32 for p in plans] == [True, True]
    assert sum("--tf32" in w for w in warns) == 1  # said once, not per engine


def test_tf32_flag_missing_or_ignored():
    from atfr.runtime.tensorrt.builder import _set_flags

    plan = tc.choose_precision_plan("11.4.1", "fp32")
    assert _set_flags(_flags_trt("11.4.1", tf32=False), _FakeConfig(), plan) is None  # cannot be controlled

    class Stuck(_FakeConfig):
        def clear_flag(self, f):
            pass  # a binding that ignores the request must not go unnoticed

    with pytest.raises(ATFRError, match="did not clear BuilderFlag.TF32"):
        _set_flags(_flags_trt("10.3.0"), Stuck(), plan)


def test_pin_fp32_fake_network():
    from atfr.runtime.tensorrt.builder import _pin_fp32, sgs_fp32_selection

    f32, f16, i32 = "float32", "float16", "int32"

    class T:
        def __init__(self, name, dtype=f32):
            self.name, self.dtype, self.shape = name, dtype, (1, 4, 8, 8, 8)

    class L:
        type = "LayerType.CONVOLUTION"

        def __init__(self, name, ins, outs):
            self.name, self._in, self._out = name, [T(x) for x in ins], [T(*o) if isinstance(o, tuple) else T(o) for o in outs]
            self.num_inputs, self.num_outputs = len(ins), len(outs)
            self.precision, self.out_types = None, {}

        def get_input(self, j):
            return self._in[j]

        def get_output(self, k):
            return self._out[k]

        def set_output_type(self, k, t):
            self.out_types[k] = t

    layers = [L("conv", ["clip0"], ["feat0"]), L("emb", ["feat0"], ["dist0"]),
              L("SGS_0", ["feat0", "dist0"], ["sgs0", ("bprime0", i32)])]
    net = types.SimpleNamespace(num_layers=3, get_layer=lambda i: layers[i])
    trt = types.SimpleNamespace(float32=f32, float16=f16)
    assert _pin_fp32(trt, net, sgs_fp32_selection(["feat0"], ["dist0"])) == 2
    assert layers[0].precision is None
    assert layers[1].precision == f32 and layers[1].out_types == {0: f32}
    assert layers[2].precision is None and layers[2].out_types == {0: f32}  # int32 size tensor left alone
    # the export's fp16 policy patterns (manifest fp32_layers_by_graph) pin more layers: the feature block
    layers[0].precision, layers[1].precision = None, None
    assert _pin_fp32(trt, net, sgs_fp32_selection(["feat0"], ["dist0"], [r"conv", r"no\(such"])) == 3
    assert layers[0].precision == f32
    assert tc.layers_matching(["/pathway0_res1/Add", "/pathway0_res1/Add_1", "x"], [r"/pathway0_res1/Add", "["]) == {
        "/pathway0_res1/Add"}


def test_plugin_variant_choice():
    from atfr.runtime.tensorrt.plugin import plugin_variant

    assert plugin_variant("/x/libatfr_sgs.so") == "static"
    assert plugin_variant("/x/libatfr_sgs_vc.so") == "dynamic"
    assert plugin_variant("/x/libatfr_sgs_vc.so", "static") == "static"
    with pytest.raises(ATFRError):
        plugin_variant("/x/lib.so", "magic")


def test_load_plugin_missing_names_flag(tmp_path):
    from atfr.runtime.tensorrt.plugin import load_plugin_library

    with pytest.raises(DependencyError, match=r"not found: .*--plugin PATH"):
        load_plugin_library(types.SimpleNamespace(), tmp_path / "libatfr_sgs.so")


def test_load_plugin_dynamic_fake_registry(tmp_path, monkeypatch):
    from atfr.runtime.tensorrt import plugin as trt_plugin

    monkeypatch.setattr(trt_plugin, "_LOADED_PLUGINS", {})
    lib = tmp_path / "libatfr_sgs_vc.so"
    lib.write_bytes(b"not really a library")
    calls = []

    class Reg:
        def load_library(self, p):
            calls.append(p)
            return object()

        def get_creator(self, name, version, ns):
            return object() if (name, version, ns) == ("SGS", "1", "atfr") else None

    trt = types.SimpleNamespace(get_plugin_registry=lambda: Reg())
    digest = trt_plugin.load_plugin_library(trt, lib)
    assert len(digest) == 64 and calls == [str(lib.resolve())]
    other = tmp_path / "libatfr_sgs.so"
    other.write_bytes(b"x")
    with pytest.raises(ATFRError, match="already loaded"):
        trt_plugin.load_plugin_library(trt, other)
    monkeypatch.setattr(trt_plugin, "_LOADED_PLUGINS", {})
    with pytest.raises(DependencyError, match="did not register plugin SGS"):
        trt_plugin.load_plugin_library(trt, lib, namespace="")


# -- the CLI without tensorrt --------------------------------------------------------------------

def _fake_export(root: Path) -> Path:
    """A minimal manifest with one SGS layer (graph files are placeholders; nothing parses them)."""
    root.mkdir(parents=True, exist_ok=True)
    t = lambda n, s: {"name": n, "shape": s, "dtype": "float32"}  # noqa: E731
    graphs = {
        "front": {"file": "front.onnx", "inputs": [t("clip0", ["N", 3, 8, 32, 32])],
                  "outputs": [t("feat0", ["N", 4, 8, 8, 8]), t("dist0", ["N", 8])]},
        "front_plugin": {"file": "front_plugin.onnx", "inputs": [t("clip0", ["N", 3, 8, 32, 32])],
                         "outputs": [t("sgs0", ["N", 4, "B0", 8, 8]), {"name": "bprime0", "shape": [], "dtype": "int32"}]},
        "back": {"file": "back.onnx", "inputs": [t("sgs0", ["N", 4, "T0", 8, 8])], "outputs": [t("logits", ["N", 5])]},
    }
    for g in graphs.values():
        (root / g["file"]).write_bytes(b"placeholder")
    spec = {"name": "s2.ts_layer", "pathway": 0, "channels": 4, "latent_dim": 2, "num_bins": 8, "distance": "L2",
            "kernel": "linear", "drop_bins": True, "use_relu": True}
    d = {"format": "atfr-export", "version": 1,
         "model": {"name": "fake", "arch": "3dresnet", "num_classes": 5, "labels": []},
         "input": {"num_frames": 8, "sampling_rate": 2, "target_fps": 30.0, "crop_size": 32, "short_side": 32,
                   "mean": [0.45] * 3, "std": [0.225] * 3, "channel_order": "RGB", "slowfast_alpha": 0},
         "num_pathways": 1, "sgs": [{"spec": spec, "frames": 8, "bins": 8, "channels": 4, "height": 8, "width": 8}],
         "split_shapes": [[4, 8, 8, 8]], "graphs": graphs, "opset": 17,
         "bprime_stats": {"layers": [{"pathway": 0, "opt": 3, "max": 8}]}}
    (root / "atfr.json").write_text(json.dumps(d))
    return root


def _tensorrt_missing() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(not _tensorrt_missing(), reason="TensorRT is installed here; this checks the message without it")
def test_build_without_tensorrt_one_line(tmp_path, capsys):
    from atfr.cli import main
    from atfr.runtime.manifest import load_manifest

    exp = _fake_export(tmp_path / "exp")
    load_manifest(exp, check=True)
    rc = main(["build", str(exp), "--sgs", "host"])
    err = capsys.readouterr().err
    assert rc != 0 and rc == 4
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "TensorRT is not installed" in lines[0] and "ONNX Runtime backend needs no build" in lines[0]
    assert not (exp / "front.engine").exists()


def test_build_cli_validation_errors_are_one_line(tmp_path, capsys):
    from atfr.cli import main

    exp = _fake_export(tmp_path / "exp")
    assert main(["build", str(exp)]) == 2  # --sgs plugin without --plugin
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--plugin PATH" in err[0]
    assert main(["build", str(exp), "--sgs", "host", "--precision", "int8"]) == 2
    assert "atfr calibrate" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_build_refuses_to_overwrite_before_tensorrt(tmp_path, capsys):
    from atfr.cli import main

    exp = _fake_export(tmp_path / "exp")
    (exp / "front.engine").write_bytes(b"old")
    assert main(["build", str(exp), "--sgs", "host"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (exp / "front.engine").read_bytes() == b"old"


def test_resolve_profiles_from_manifest(tmp_path):
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.tensorrt.builder import back_profile_shapes, front_profile_shapes, resolve_profiles

    m = load_manifest(_fake_export(tmp_path / "exp"))
    prof = resolve_profiles(m, None, None)
    assert prof == [(tc.TRange(1, 8, 3),)]  # opt from bprime_stats
    assert resolve_profiles(m, None, 5) == [(tc.TRange(1, 8, 5),)]
    shapes = back_profile_shapes(m, resolve_profiles(m, "1-2:1,3-8:4", None), max_batch=4)
    assert shapes[1]["sgs0"] == ((1, 4, 3, 8, 8), (1, 4, 4, 8, 8), (4, 4, 8, 8, 8))
    assert front_profile_shapes(m, 4)["clip0"] == ((1, 3, 8, 32, 32), (1, 3, 8, 32, 32), (4, 3, 8, 32, 32))


# -- runtime stays torch-free ------------------------------------------------------------------------

def test_runtime_imports_no_torch():
    code = ("import sys, atfr.runtime.pipeline, atfr.runtime.tensorrt.compat, atfr.runtime.tensorrt.builder, "
            "atfr.runtime.tensorrt.backend, atfr.commands.build; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'tensorrt' not in sys.modules, 'tensorrt imported eagerly'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
