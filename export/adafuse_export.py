"""``atfr export`` of an AdaFuse model: the clip graph ``model.onnx``, the online per-frame graphs
``online.onnx`` (dense masks, models/adafuse_online.py) and ``online_gathered.onnx`` (batch 1,
gathered convolutions, models/adafuse_gathered.py), and the ``atfr.json`` manifest. AdaFuse-TSM's
online graphs run ``online_delay`` frames behind their input (models/adafuse_online_tsm.py).

The graph takes ``clip0`` [N,3,T,S,S] (normalised, as every export) and gives ``logits`` [N,K]
(the mean of the frame logits) and ``policy{i}`` [N,T,C_i] int32 for each gated block i in network
order (0 skip, 1 reuse, 2 keep; the hard policy with the first-maximum tie-break of
models/adafuse_blocks.first_max3). The masks are dense (every conv computes every channel; the
policy selects afterwards), so the graph has the counted FLOPs of the dense network, not the
saved ones. Only standard ops, checked against the TensorRT 10.3 parser set as the ATFR graphs.

The manifest has no SGS layers and a ``model`` graph only (the runtime's static path runs it), and
an ``adafuse`` section that lets the torch-free runtime count GFLOPs per clip: the official base
count per frame and the (conv1, conv2) flops of every gated block (models/adafuse_flops.py).
"""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any

import onnx
import torch

from atfr import __version__
from atfr.errors import ATFRError
from atfr.fileio import sha256_file
from atfr.models.adafuse import AdaFuseTSN
from atfr.models.adafuse_flops import AdaFuseCounter, static_report
from atfr.models.adafuse_gathered import AdaFuseOnlineGathered
from atfr.models.adafuse_online import AdaFuseOnline
from atfr.models.adafuse_online_tsm import AdaFuseOnlineTSM
from atfr.models.checkpoint import LoadedModel
from atfr.runtime.manifest import FORMAT, MANIFEST_NAME, VERSION, load_manifest, write_manifest

from .exporter import TRT103_OPS, ExportOptions, _onnx_export, _tensor_specs, validate_arguments
from .folder import check_destination, staged

ARTIFACTS = ("model.onnx", "online.onnx", "online_gathered.onnx", MANIFEST_NAME)


class ClipGraph(torch.nn.Module):
    def __init__(self, model: AdaFuseTSN):
        super().__init__()
        self.model = model

    def forward(self, clip0: torch.Tensor):
        out = self.model.run(clip0)
        return (out.logits, *[p.to(torch.int32) for p in out.policy])


# --gate_reduce_type max pools the policy input with GlobalMaxPool (in the TensorRT 10.3 parser's list).
POLICY_OPS = {"GlobalMaxPool"}


def _check_ops(g: onnx.ModelProto, what: str = "model.onnx", more: set[str] = frozenset()) -> None:
    bad = sorted({n.op_type for n in g.graph.node if n.op_type not in TRT103_OPS | POLICY_OPS | more})
    if bad:
        raise ATFRError(f"export: {what} uses ops outside the TensorRT 10.3 parser set: {', '.join(bad)}")
    try:
        onnx.checker.check_model(g)
    except onnx.checker.ValidationError as e:
        raise ATFRError(f"export: {what} fails onnx.checker ({str(e).splitlines()[0]})") from None


# The gathered graph's data-dependent channel selection: NonZero (indices of the chosen channels)
# and ScatterElements (the kept channels back into the conv1 state), both in the TensorRT 10.3
# ONNX parser's operator list; Conv then takes gathered (non-constant) weights.
GATHER_OPS = {"NonZero", "ScatterElements"}


def _online_module(model: AdaFuseTSN, gathered: bool, size: int):
    """The online module and its state [(name, shape, dtype)]: AdaFuse-TSN's (models/adafuse_online.py,
    adafuse_gathered.py) or AdaFuse-TSM's, ``delay`` frames behind (models/adafuse_online_tsm.py)."""
    if model.ada["shift"]:
        tsm = AdaFuseOnlineTSM(model, gathered).eval()
        return tsm, tsm.state_shapes(size), tsm.delay
    if gathered:
        online = AdaFuseOnlineGathered(model).eval()
        return online, online.state_shapes(size), 0
    dense = AdaFuseOnline(model).eval()
    return dense, [(n, s, torch.float32) for n, s in dense.state_shapes(size)], 0


def _online_graph(model: AdaFuseTSN, size: int, opset: int, gathered: bool) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """``frame`` [N,3,S,S] (+ ``valid`` [N] for TSM) + state -> ``logits`` [N,K], ``policy{i}`` [N,C]
    int32 (+ ``frame_valid`` [N] for TSM) and each state input again with ``_next``. The dense graph
    takes any batch N; the gathered one (``online_gathered.onnx``) batch 1: its channel selection
    is per stream."""
    online, shapes, delay = _online_module(model, gathered, size)
    g = len(model.gated_blocks())
    extra_in, extra_out = (["valid"], ["frame_valid"]) if delay else ([], [])
    ins = ["frame"] + extra_in + [n for n, _, _ in shapes]
    outs = ["logits"] + [f"policy{i}" for i in range(g)] + extra_out + [f"{n}_next" for n, _, _ in shapes]
    frame = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    state = [torch.randint(0, 3, (1, *s), generator=gen, dtype=torch.int32) if d == torch.int32
             else torch.rand((1, *s), generator=gen) for _, s, d in shapes]
    valid = [torch.ones((1,))] if delay else []
    dyn = None if gathered else {n: {0: "N"} for n in ins + outs}
    graph = _onnx_export(OnlineGraph(online, g), (frame, *valid, *state), ins, outs, dyn, opset)
    what = "online_gathered.onnx" if gathered else "online.onnx"
    _check_ops(graph, what, GATHER_OPS if gathered else set())
    return graph, [{"name": n, "shape": list(s), "dtype": "int32" if d == torch.int32 else "float32"}
                   for n, s, d in shapes]


class OnlineGraph(torch.nn.Module):
    def __init__(self, online: torch.nn.Module, gated: int):
        super().__init__()
        self.online = online
        self.gated = gated

    def forward(self, frame: torch.Tensor, *state: torch.Tensor):
        out = self.online(frame, *state)
        return (out[0], *[p.to(torch.int32) for p in out[1:1 + self.gated]], *out[1 + self.gated:])


def export_adafuse(loaded: LoadedModel, outdir: str | Path, opts: ExportOptions) -> Path:
    out = Path(outdir)
    check_destination(out, ARTIFACTS, opts.force)
    model: AdaFuseTSN = loaded.model.eval()  # type: ignore[assignment]
    spec = model.input_spec
    frames = int(spec.num_frames if opts.frames is None else opts.frames)
    size = int(spec.crop_size if opts.size is None else opts.size)
    validate_arguments(frames, size, int(opts.opset))
    new_spec = dataclasses.replace(spec, num_frames=frames, crop_size=size,
                                   short_side=spec.short_side if opts.size is None else size)
    blocks = [n for n, _ in model.gated_blocks()]
    names = ["logits"] + [f"policy{i}" for i in range(len(blocks))]
    clip = torch.randn((1, 3, frames, size, size), generator=torch.Generator().manual_seed(0))
    dyn = {n: {0: "N"} for n in ["clip0"] + names}
    graph = _onnx_export(ClipGraph(model), (clip,), ["clip0"], names, dyn, int(opts.opset))
    _check_ops(graph)
    graphs = {"model": graph}
    graphs["online"], state = _online_graph(model, size, int(opts.opset), gathered=False)
    graphs["online_gathered"], gathered_state = _online_graph(model, size, int(opts.opset), gathered=True)
    counter = AdaFuseCounter(model, size)
    with staged(out) as tmp:
        for k, g in graphs.items():
            onnx.save(g, str(tmp / f"{k}.onnx"))
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "model": {"name": opts.name or Path(str(loaded.meta.get("source", "model"))).stem or "model",
                      "arch": "adafuse", "num_classes": int(model.new_fc.out_features),
                      "labels": loaded.labels, "source_format": loaded.source_format},
            "family": "adafuse",
            **({"untrained": True} if loaded.meta.get("untrained") else {}),  # atfr init: predictions mean nothing
            "input": new_spec.to_dict(),
            "num_pathways": 1,
            "batch": "dynamic (N)",
            "sgs": [],
            "split_shapes": [[3, frames, size, size]],
            "graphs": {k: {"file": f"{k}.onnx", "inputs": _tensor_specs(g.graph.input),
                           "outputs": _tensor_specs(g.graph.output)} for k, g in graphs.items()},
            "opset": int(opts.opset),
            "adafuse": {"policy_blocks": blocks, "base_gflops_per_frame": counter.base_per_frame,
                        "block_conv_flops": [list(c) for c in counter.convs],
                        "variant": "TSM" if model.ada["shift"] else "TSN", "depth": model.depth,
                        "online_state": state, "online_gathered_state": gathered_state,
                        # frames the online graphs' output is behind their newest input (TSM: one per block)
                        "online_delay": AdaFuseOnlineTSM(model).delay if model.ada["shift"] else 0},
            "gflops": static_report(model, frames, size),
            "source": {"checkpoint": str(Path(loaded.meta["source"]).resolve()) if loaded.meta.get("source") else None,
                       "format": loaded.source_format},
            "producer": {"atfr-deploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                         "python": platform.python_version(), "exporter": "torch.onnx (TorchScript)"},
            "checksums": {f"{k}.onnx": sha256_file(tmp / f"{k}.onnx") for k in graphs},
        }
        write_manifest(tmp / MANIFEST_NAME, manifest)
    load_manifest(out, check=True)
    return out
