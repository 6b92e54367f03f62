"""FP16 policy: backbone fp16, SGS embedding/distance and the SGS step fp32 (sgs-semantics §1.4.1).

What goes wrong without it: the ghost bin. The farthest frame's linear weight is exactly
fp32(1+1e-7) - 1 = 2^-23; in fp16 1+1e-7 rounds to 1, that weight becomes 0, and when the
farthest frame is alone in the last bin (13-70% of clips) the bin vanishes and B' drops by one.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from atfr.runtime.sgs_numpy import bin_weights, sgs_step

GHOST = np.float32(2.0 ** -23)


def sgs_fp16_bprime(delta: np.ndarray, num_bins: int) -> int:
    """The SGS bin arithmetic done naively in fp16 (same op order as the fp32 reference)."""
    h = np.float16
    d = delta.astype(h)
    b = d.shape[1] if num_bins == -1 else num_bins
    m1 = d.max(axis=1, keepdims=True)
    scaled = (d * ((h(1) / m1) * h(2 * b))).astype(h)
    m = scaled.max(axis=1)
    w = (m / h(b)).astype(h)
    centres = (np.arange(b, dtype=h)[None, :] * w[:, None] + (w / h(2))[:, None]).astype(h)
    k = np.maximum(h(1.0000001) - np.abs(scaled[:, None, :] - centres[:, :, None]), h(0))
    return int((k.sum(axis=2) != 0).sum(axis=1).max())


def ghost_alone(delta: np.ndarray, num_bins: int) -> bool:
    """fp32: the last active bin holds only the farthest frame, with weight exactly 2^-23."""
    _, _, _, k = bin_weights(delta, num_bins)
    rows = np.nonzero(k[0].sum(axis=1) != 0)[0]
    last = k[0, rows[-1]]
    nz = np.nonzero(last)[0]
    return len(nz) == 1 and last[nz[0]] == GHOST and nz[0] == int(np.argmax(delta[0]))


# ---------------------------------------------------------------------------------------------
# 1. The arithmetic itself, on distances constructed so the ghost bin is alone
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t,b", [(8, -1), (32, 32), (16, 8)])
def test_fp16_bin_arithmetic_drops_the_ghost_bin(t, b):
    rng = np.random.default_rng(t)
    nb = t if b == -1 else b
    for _ in range(20):
        # Every frame but the farthest well inside the lower bins: the max frame is alone in bin B-1.
        delta = rng.uniform(0.05, 0.8, size=(1, t)).astype(np.float32)
        delta[0, rng.integers(t)] = 1.0
        assert ghost_alone(delta, b)
        r32 = sgs_step(rng.normal(size=(1, 2, t, 2, 2)).astype(np.float32), delta, b)
        assert r32.kernel[0, r32.b_prime - 1].max() == GHOST  # the last kept bin is the ghost
        assert sgs_fp16_bprime(delta, b) == r32.b_prime - 1  # fp16: it vanishes, B' shifts by one
    assert np.float16(1.0000001) == np.float16(1.0) and np.float32(1.0000001) - np.float32(1) == GHOST
    del nb


# ---------------------------------------------------------------------------------------------
# 2. Graphs: naive all-fp16 vs the policy, through ONNX Runtime
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fp16_export(tiny_export, tmp_path_factory):
    from atfr.export.precision import write_fp16

    d = tmp_path_factory.mktemp("fp16") / "export"
    shutil.copytree(tiny_export, d)
    # the fp16-front policy (--fp16-front fp16): what these tests take apart is the front
    write_fp16(d, front_fp32=False)
    return d


@pytest.fixture(scope="module")
def random_clips():
    rng = np.random.default_rng(123)
    return [rng.normal(size=(1, 3, 8, 32, 32)).astype(np.float32) for _ in range(100)]


def _sess(path_or_model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def test_fp16_graphs_keep_io_and_sgs_fp32(fp16_export):
    from atfr.export.precision import sgs_fp32_nodes
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(fp16_export, check=True)  # checksums of the new graphs are registered
    for g in ("front_fp16", "back_fp16"):
        assert g in m.graphs
        assert f"{g}.onnx" in m.raw["checksums"]
        base = m.graphs[g.replace("_fp16", "")]
        assert [(t.name, t.dtype) for t in m.graphs[g].inputs] == [(t.name, t.dtype) for t in base.inputs]
        assert [(t.name, t.dtype) for t in m.graphs[g].outputs] == [(t.name, t.dtype) for t in base.outputs]
    front = onnx.load(str(m.path("front_fp16")))
    types = {v.name: v.type.tensor_type.elem_type for v in list(front.graph.value_info) + list(front.graph.output)}
    # The backbone is fp16 except the residual block producing feat0 (the feature block), fp32.
    from atfr.export.precision import feature_block_nodes

    src = onnx.load(str(m.path("front")))
    block = feature_block_nodes(src)
    block_convs = {src.graph.node[i].name for i in block if src.graph.node[i].op_type == "Conv"}
    all_convs = [n for n in src.graph.node if n.op_type == "Conv"]
    assert block_convs and len(block_convs) < len(all_convs)
    assert any(src.graph.node[i].output[0] == "feat0" for i in block)  # the block ends at feat0
    fp16_inits = {i.name: i.data_type for i in front.graph.initializer}
    for n in front.graph.node:
        if n.op_type == "Conv":
            want = onnx.TensorProto.FLOAT if n.name in block_convs else onnx.TensorProto.FLOAT16
            assert fp16_inits[n.input[1]] == want, n.name
    keep = sgs_fp32_nodes(front)
    ops = {front.graph.node[i].op_type for i in keep}
    assert {"ReduceMean", "MatMul", "BatchNormalization", "Sqrt"} <= ops
    for i in keep:  # every embedding/distance tensor is fp32, and so is the 1e-6 epsilon
        for o in front.graph.node[i].output:
            if o in types and types[o] in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                assert types[o] == onnx.TensorProto.FLOAT, o
    fp32_inits = {i.name for i in front.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    # fp32(1e-6) is within u * 1e-6 = 6e-14 of 1e-6 (and an fp16 1e-6 is 1e-9 off): 1e-12 picks it out
    eps = [i for i in front.graph.initializer if i.name in fp32_inits and i.dims == [] and
           abs(float(onnx.numpy_helper.to_array(i)) - 1e-6) < 1e-12]
    assert eps and float(onnx.numpy_helper.to_array(eps[0])) == np.float32(1e-6)
    prec = json.loads((fp16_export / "atfr.json").read_text())["precision"]
    assert prec["fp32_layers"] and all(isinstance(p, str) for p in prec["fp32_layers"])
    import re
    names = [front.graph.node[i].name for i in keep if front.graph.node[i].op_type != "Constant"]
    assert all(any(re.fullmatch(p, n) for p in prec["fp32_layers"]) for n in names)
    backbone = [n.name for n in all_convs if n.name not in block_convs]
    assert not any(re.fullmatch(p, n) for p in prec["fp32_layers"] for n in backbone)
    assert all(any(re.fullmatch(p, n) for p in prec["fp32_layers"]) for n in block_convs)
    assert prec["fp16"]["feature_block_fp32"] is True


def test_naive_fp16_changes_bprime_and_the_policy_does_not(fp16_export, random_clips):
    """front+SGS fallback: naive all-fp16 loses the ghost bin; the policy keeps B' == fp32."""
    from atfr.export.precision import convert_fp16

    src = onnx.load(str(fp16_export / "front_fallback.onnx"))
    naive = _sess(convert_fp16(src, set()))
    policy = _sess(fp16_export / "front_fallback_fp16.onnx")
    ref = _sess(fp16_export / "front_fallback.onnx")
    front = _sess(fp16_export / "front.onnx")
    ghost_clips, agree, naive_ghost_shift = 0, 0, 0
    for x in random_clips:
        bp32 = int(ref.run(["bprime0"], {"clip0": x})[0])
        d = front.run(["dist0"], {"clip0": x})[0]
        bpn = int(naive.run(["bprime0"], {"clip0": x})[0])
        bpp = int(policy.run(["bprime0"], {"clip0": x})[0])
        agree += bpp == bp32
        if ghost_alone(d, -1):
            ghost_clips += 1
            naive_ghost_shift += bpn == bp32 - 1
            assert bpp == bp32, "the policy must keep the ghost bin"
    assert ghost_clips >= 10, f"only {ghost_clips} clips with a lone ghost bin"
    assert naive_ghost_shift == ghost_clips, f"naive fp16 kept the ghost bin on {ghost_clips - naive_ghost_shift} clips"
    assert agree / len(random_clips) >= 0.99


def test_fp16_pipeline_agreement(fp16_export, random_clips):
    """front_fp16 -> numpy SGS (fp32) -> back_fp16 vs fp32: B' and top-1 agree on >= 99%."""
    from atfr.calibration.accuracy import compare_precisions

    res = compare_precisions(fp16_export, ["fp32", "fp16"], random_clips)
    r = res["precisions"]["fp16"]
    assert r["bprime_agreement"] >= 0.99, r
    assert r["top1_agreement"] >= 0.99, r
    assert res["passed"]


def test_fp16_refuses_overwrite(fp16_export):
    from atfr.errors import ATFRError
    from atfr.export.precision import write_fp16

    with pytest.raises(ATFRError, match="--force"):
        write_fp16(fp16_export)


def test_feature_block_can_be_fp16_too(tiny_export, tmp_path, capsys):
    """--fp16-feature-block fp16 (write_fp16(feature_block=False)): only SGS's own branch stays
    fp32, every backbone conv is fp16, and the manifest says so."""
    from atfr.cli import main
    from atfr.runtime.manifest import load_manifest

    d = tmp_path / "export"
    shutil.copytree(tiny_export, d)
    from atfr.export.precision import write_fp16

    write_fp16(d, force=True, feature_block=False, front_fp32=False)
    m = load_manifest(d, check=True)
    front = onnx.load(str(m.path("front_fp16")))
    inits = {i.name: i.data_type for i in front.graph.initializer}
    convs = [n for n in front.graph.node if n.op_type == "Conv"]
    assert convs and all(inits[n.input[1]] == onnx.TensorProto.FLOAT16 for n in convs)
    assert m.raw["precision"]["fp16"]["feature_block_fp32"] is False
    # the CLI flag is checked per value
    with pytest.raises(SystemExit) as e:  # argparse: usage + one error line, exit 2
        main(["export", "nothing.pt", "-o", str(tmp_path / "o"), "--fp16", "--fp16-feature-block", "bf16"])
    assert e.value.code == 2 and "--fp16-feature-block" in capsys.readouterr().err


def test_front_fp32_keeps_the_front_exact_and_the_back_fp16(tiny_export, tmp_path, random_clips):
    """--fp16-front fp32 (write_fp16(front_fp32=True)): every front node stays fp32, so B' equals
    fp32 on every clip (SGS amplifies any front error ~2B-fold); the back still runs in fp16."""
    from atfr.calibration.accuracy import compare_precisions
    from atfr.export.precision import write_fp16
    from atfr.runtime.manifest import load_manifest

    d = tmp_path / "export"
    shutil.copytree(tiny_export, d)
    write_fp16(d, force=True, front_fp32=True)
    m = load_manifest(d, check=True)
    front = onnx.load(str(m.path("front_fp16")))
    assert not [i.name for i in front.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    back = onnx.load(str(m.path("back_fp16")))
    convs = [n for n in back.graph.node if n.op_type == "Conv"]
    inits = {i.name: i.data_type for i in back.graph.initializer}
    assert convs and all(inits[n.input[1]] == onnx.TensorProto.FLOAT16 for n in convs)
    prec = m.raw["precision"]
    assert prec["fp16"]["front_fp32"] is True
    import re

    # TensorRT 10.3 builds pin these layers to fp32: every front conv is among them
    pats = prec["fp32_layers_by_graph"]["front"]
    assert all(any(re.fullmatch(p, n.name) for p in pats) for n in front.graph.node if n.op_type == "Conv")
    res = compare_precisions(d, ["fp32", "fp16"], random_clips[:20])
    assert res["precisions"]["fp16"]["bprime_agreement"] == 1.0  # exact: the front is fp32


def test_fp32_front_is_the_default(tiny_checkpoint, tmp_path, capsys):
    """`atfr export --fp16` without --fp16-front keeps the front fp32 (the measured choice: an fp16
    front moved B' on 4 of 320 held-out demo clips); --fp16-front fp16 opts into the fast front, and
    --fp16-feature-block without it says in one line that it does nothing."""
    from atfr.cli import main

    assert main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "a"), "--fp16"]) == 0
    prec = json.loads((tmp_path / "a" / "atfr.json").read_text())["precision"]["fp16"]
    assert prec["front_fp32"] is True
    capsys.readouterr()
    assert main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "b"), "--fp16", "--fp16-front", "fp16"]) == 0
    prec = json.loads((tmp_path / "b" / "atfr.json").read_text())["precision"]["fp16"]
    assert prec["front_fp32"] is False and prec["feature_block_fp32"] is True
    capsys.readouterr()
    assert main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "c"), "--fp16",
                 "--fp16-feature-block", "fp16"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only applies with --fp16 --fp16-front fp16" in err[0]
