"""``atfr export`` of an AdaFuse model: the clip graph ``model.onnx``, for AdaFuse-TSN the online
per-frame graphs ``online.onnx`` (dense masks, models/adafuse_online.py) and
``online_gathered.onnx`` (batch 1, gathered convolutions, models/adafuse_gathered.py), and the
``atfr.json`` manifest.

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


def _check_ops(g: onnx.ModelProto, what: str = "model.onnx") -> None:
    bad = sorted({n.op_type for n in g.graph.node if n.op_type not in TRT103_OPS | POLICY_OPS})
    if bad:
        raise ATFRError(f"export: {what} uses ops outside the TensorRT 10.3 parser set: {', '.join(bad)}")
    try:
        onnx.checker.check_model(g)
    except onnx.checker.ValidationError as e:
        raise ATFRError(f"export: {what} fails onnx.checker ({str(e).splitlines()[0]})") from None


def _online_graph(model: AdaFuseTSN, size: int, opset: int) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """``frame`` [N,3,S,S] + state (per gated block ``pool{i}`` [N,C_in], ``conv1_{i}`` [N,C,H,W])
    -> ``logits`` [N,K], ``policy{i}`` [N,C] int32, ``pool{i}_next``, ``conv1_{i}_next``."""
    online = AdaFuseOnline(model).eval()
    shapes = online.state_shapes(size)
    g = len(shapes) // 2
    ins = ["frame"] + [n for n, _ in shapes]
    outs = ["logits"] + [f"policy{i}" for i in range(g)] + [f"{n}_next" for n, _ in shapes]
    frame = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(1))
    state = [torch.rand((1, *s), generator=torch.Generator().manual_seed(2 + k)) for k, (_, s) in enumerate(shapes)]
    graph = _onnx_export(OnlineGraph(online, g), (frame, *state), ins, outs, {n: {0: "N"} for n in ins + outs}, opset)
    _check_ops(graph, "online.onnx")
    return graph, [{"name": n, "shape": list(s)} for n, s in shapes]


# The gathered graph's data-dependent channel selection: NonZero (indices of the chosen channels)
# and ScatterElements (the kept channels back into the conv1 state), both in the TensorRT 10.3
# ONNX parser's operator list; Conv then takes gathered (non-constant) weights.
GATHER_OPS = {"NonZero", "ScatterElements"}


def _gathered_graph(model: AdaFuseTSN, size: int, opset: int) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """Batch-1 online graph with gathered convolutions (models/adafuse_gathered.py): ``frame`` + per
    gated block ``pool{i}``, ``xin{i}``, ``conv1_{i}``, ``act{i}`` (int32) -> ``logits``,
    ``policy{i}``, and each state input again with ``_next``."""
    online = AdaFuseOnlineGathered(model).eval()
    shapes = online.state_shapes(size)
    g = len(shapes) // 4
    ins = ["frame"] + [n for n, _, _ in shapes]
    outs = ["logits"] + [f"policy{i}" for i in range(g)] + [f"{n}_next" for n, _, _ in shapes]
    frame = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    state = [torch.randint(0, 3, (1, *s), generator=gen, dtype=torch.int32) if d == torch.int32
             else torch.rand((1, *s), generator=gen) for _, s, d in shapes]
    graph = _onnx_export(OnlineGraph(online, g), (frame, *state), ins, outs, None, opset)
    bad = sorted({n.op_type for n in graph.graph.node if n.op_type not in TRT103_OPS | GATHER_OPS | POLICY_OPS})
    if bad:
        raise ATFRError(f"export: online_gathered.onnx uses ops outside the TensorRT 10.3 parser set: {', '.join(bad)}")
    onnx.checker.check_model(graph)
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
    state: list[dict[str, Any]] = []
    gathered_state: list[dict[str, Any]] = []
    if not model.ada["shift"]:  # TSM's shift reads the next frame: no causal per-frame graph
        graphs["online"], state = _online_graph(model, size, int(opts.opset))
        graphs["online_gathered"], gathered_state = _gathered_graph(model, size, int(opts.opset))
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
                        "online_state": state, "online_gathered_state": gathered_state},
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
