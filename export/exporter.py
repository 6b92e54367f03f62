"""``atfr export``: checkpoint -> front.onnx, SGS (plugin node + fallback), back.onnx, model.onnx,
front+SGS graphs for TensorRT, and the ``atfr.json`` manifest. Written atomically."""

from __future__ import annotations

import dataclasses
import io
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from atfr import __version__
from atfr.errors import ATFRError
from atfr.fileio import sha256_file
from atfr.models.base import VideoNet
from atfr.models.checkpoint import LoadedModel
from atfr.output_claim import output_lock
from atfr.runtime.manifest import FORMAT, MANIFEST_NAME, VERSION, SGSLayer, load_manifest, write_manifest

from . import sgs_graphs
from .compose import compose
from .folder import check_destination, staged
from .split import Back, Front, back_input_names, front_output_names

ARTIFACTS = ("front.onnx", "back.onnx", "sgs_plugin.onnx", "sgs_fallback.onnx", "front_plugin.onnx",
             "front_fallback.onnx", "model.onnx", MANIFEST_NAME)
# Ops TensorRT 10.3's ONNX parser imports (subset relevant to these graphs); anything else in
# an exported graph is a bug we want to see at export time, not on the device.
TRT103_OPS = {
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape",
    "Conv", "Div", "Equal", "Expand", "Flatten", "Gather", "GatherElements", "Gemm", "GlobalAveragePool",
    "Greater", "Identity", "MatMul", "Max", "MaxPool", "Min", "Mul", "Not", "Pad", "Range",
    "Reciprocal", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid",
    "Slice", "Softmax", "Sqrt", "Squeeze", "Sub", "TopK", "Transpose", "Unsqueeze", "Where",
    "LessOrEqual", "Less", "GreaterOrEqual", "Neg", "Sum", "Tile", "Clip", "HardSigmoid", "Mean",
    "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "Einsum", "ReduceL2", "Pow", "Exp", "Log",
}


# Argument bounds, checked before any work (see validate_options). Clips of video models are
# 4..64 frames; 512 leaves room for long-clip experiments while keeping a typo (100000) from
# allocating tens of GB. Opsets: 13 is the oldest TensorRT 10.x parses well; the TorchScript
# exporter stops at ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET (20 in torch 2.x).
FRAMES_MAX = 512
SIZE_MIN, SIZE_MAX = 16, 1024
OPSET_MIN = 13
# Peak memory of an export relative to the largest single activation of the front at batch 1
# (the activation, its successor, the traced graph's copies and the B' pass's clips). Measured
# on the demo model: RSS grows 283 MB from 16 to 256 frames at 112 px, 8.2x the growth of its
# largest activation; 10 rounds up. Plus a fixed allowance for tracing and ONNX serialisation.
PEAK_ACTIVATION_FACTOR = 10.0
EXPORT_OVERHEAD_BYTES = 256 << 20


def opset_max() -> int:
    try:
        from torch.onnx import _constants
        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    except ImportError:
        return 20


def validate_arguments(frames: int | None, size: int | None, opset: int) -> None:
    """Plain range checks, before a checkpoint is even loaded (one line each, exit 2). The upper
    bounds of frames and size are checked by check_export_size, which can estimate the memory."""
    if frames is not None and frames < 1:
        raise ATFRError(f"--frames {frames}: must be a positive number of frames")
    if size is not None and size < SIZE_MIN:
        raise ATFRError(f"--size {size}: the crop size must be {SIZE_MIN}..{SIZE_MAX} pixels")
    hi = opset_max()
    if not OPSET_MIN <= opset <= hi:
        raise ATFRError(f"--opset {opset}: the exporter supports opsets {OPSET_MIN}..{hi} (default 17; "
                        "TensorRT 10.x needs 13+)")


def estimate_export_bytes(model: VideoNet, frames: int, size: int) -> int:
    """Rough peak memory of exporting at (frames, size): the largest activation of the front at
    the model's own input (one cheap pass), scaled by frames x size^2, times
    PEAK_ACTIVATION_FACTOR. For messages and refusals, not an exact figure."""
    spec = model.input_spec
    t0, s0 = spec.num_frames, spec.crop_size
    peak = [0]

    def hook(_m, _i, out):
        for o in out if isinstance(out, (list, tuple)) else [out]:
            if isinstance(o, torch.Tensor):
                peak[0] = max(peak[0], o.numel() * o.element_size())

    hs = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.front(example_clips(model, t0, s0))
    finally:
        for h in hs:
            h.remove()
    scale = (frames / t0) * (size / s0) ** 2
    inputs = sum(c.numel() * 4 for c in example_clips_shapes(model, frames, size))
    return int(PEAK_ACTIVATION_FACTOR * peak[0] * scale + 4 * inputs + EXPORT_OVERHEAD_BYTES)


def example_clips_shapes(model: VideoNet, frames: int, size: int) -> list[torch.Size]:
    alpha = model.input_spec.slowfast_alpha
    shapes = [(1, 3, frames // alpha, size, size), (1, 3, frames, size, size)] if alpha else [(1, 3, frames, size, size)]
    return [torch.Size(s) for s in shapes]


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("MemAvailable:"):
                    return int(ln.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_export_size(model: VideoNet, frames: int, size: int) -> None:
    """Refuse sizes outside the bounds, or larger than the model's own and needing more memory
    than is available, before allocating anything big (the message carries the estimate)."""
    spec = model.input_spec
    if frames < 1 or size < SIZE_MIN:
        raise ATFRError(f"invalid export size: {frames} frames x {size}px (need >= 1 frame and >= {SIZE_MIN}px)")
    if spec.slowfast_alpha and frames % spec.slowfast_alpha:
        raise ATFRError(f"--frames {frames} must be a multiple of SlowFast alpha {spec.slowfast_alpha}")
    if frames * size * size <= spec.num_frames * spec.crop_size ** 2:
        return  # no larger than what the model runs at: nothing to estimate
    need = estimate_export_bytes(model, frames, size)
    gib = need / 2 ** 30
    if frames > FRAMES_MAX or size > SIZE_MAX:
        raise ATFRError(f"{frames} frames x {size}px is outside the supported range (<= {FRAMES_MAX} frames, "
                        f"<= {SIZE_MAX}px); it would need about {gib:.1f} GiB")
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise ATFRError(f"{frames} frames x {size}px needs about {gib:.1f} GiB to export, more than the "
                        f"{avail / 2 ** 30:.1f} GiB available; use fewer frames or a smaller size")


@dataclass
class ExportOptions:
    frames: int | None = None
    size: int | None = None
    opset: int = 17
    force: bool = False
    name: str | None = None


def _onnx_export(module: torch.nn.Module, args: tuple, input_names, output_names, dynamic_axes, opset) -> onnx.ModelProto:
    buf = io.BytesIO()
    # The exporter traces in eval mode and then restores the wrapper's own mode, which a freshly
    # made wrapper has as training: eval() first, so the model stays in eval for the next graph
    # (and for any torch comparison after the export).
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: its tracing keeps the dynamic T' of the back graph as shape
        # arithmetic and emits plain opset-17 ops that TensorRT 10.3 parses.
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _tensor_specs(values) -> list[dict[str, Any]]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
        out.append({"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name})
    return out


def _check_ops(model: onnx.ModelProto, what: str, allow_plugin: bool = False) -> None:
    bad = sorted({n.op_type for n in model.graph.node if n.op_type not in TRT103_OPS
                  and not (allow_plugin and n.op_type == sgs_graphs.PLUGIN_NAME)})
    if bad:
        raise ATFRError(f"export: {what} uses ops outside the TensorRT 10.3 parser set: {', '.join(bad)}")


def example_clips(model: VideoNet, frames: int, size: int, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    spec = model.input_spec
    shapes = [(batch, 3, frames // spec.slowfast_alpha, size, size), (batch, 3, frames, size, size)] \
        if spec.slowfast_alpha else [(batch, 3, frames, size, size)]
    return [torch.randn(s, generator=g) for s in shapes]


def structured_clips(model: VideoNet, frames: int, size: int, seed: int = 0) -> list[list[torch.Tensor]]:
    """A few deterministic clips (static, slow and fast translation, noise) for B' statistics."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, size * 2, size * 2)).astype(np.float32)
    # Smooth the texture so translation is meaningful.
    k = np.ones(5, np.float32) / 5
    for ax in (1, 2):
        base = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), ax, base)
    clips = []
    for speed in (0, 1, 3):
        fr = np.stack([np.roll(base, (speed * t, speed * t // 2), axis=(1, 2))[:, :size, :size] for t in range(frames)], 1)
        clips.append(fr)
    clips.append(rng.normal(size=(3, frames, size, size)).astype(np.float32))
    out = []
    alpha = model.input_spec.slowfast_alpha
    for c in clips:
        x = torch.from_numpy(np.ascontiguousarray(c / (c.std() + 1e-6)))[None]
        if alpha:
            idx = torch.linspace(0, frames - 1, frames // alpha).long()
            out.append([torch.index_select(x, 2, idx), x])
        else:
            out.append([x])
    return out


def export_model(loaded: LoadedModel, outdir: str | Path, opts: ExportOptions) -> Path:
    """Export ``loaded`` into the folder ``outdir``, holding its write claim (atfr/output_claim.py)
    throughout: a second atfr process writing the same folder exits 2 instead of racing."""
    with output_lock(outdir):
        if getattr(loaded.model, "family", None) == "adafuse":  # one clip graph + policy (export/adafuse_export.py)
            from .adafuse_export import export_adafuse
            return export_adafuse(loaded, outdir, opts)
        return _export_model(loaded, Path(outdir), opts)


def _export_model(loaded: LoadedModel, out: Path, opts: ExportOptions) -> Path:
    check_destination(out, ARTIFACTS, opts.force)
    model = loaded.model.eval()
    model.batch_independent = True
    spec = model.input_spec
    # 0 or a negative size is an error, not "the default" (None is the default).
    frames = int(spec.num_frames if opts.frames is None else opts.frames)
    size = int(spec.crop_size if opts.size is None else opts.size)
    validate_arguments(None, None, int(opts.opset))
    check_export_size(model, frames, size)
    new_spec = dataclasses.replace(spec, num_frames=frames, crop_size=size,
                                   short_side=spec.short_side if opts.size is None else size)
    n_path = model.num_pathways
    clips = example_clips(model, frames, size)
    with torch.no_grad():
        feats, _ = model.front_with_distances(clips)
    layers_map = model.ts_layer_map()
    sgs_layers: list[SGSLayer] = []
    for p, ts in sorted(layers_map.items()):
        _, c, t, h, w = feats[p].shape
        b = ts.spec.bins_for(t)
        sgs_layers.append(SGSLayer(ts.spec, t, b, c, h, w))
    opset = int(opts.opset)

    # 1. front: fixed T,H,W; dynamic batch.
    in_names = [f"clip{p}" for p in range(n_path)]
    f_out = front_output_names(model)
    dyn = {n: {0: "N"} for n in in_names + f_out}
    front = _onnx_export(Front(model), tuple(clips), in_names, f_out, dyn, opset)
    # 2. back: dynamic batch and T' for SGS pathways.
    b_in = back_input_names(model)
    back_args = []
    dyn_b: dict[str, dict[int, str]] = {"logits": {0: "N"}}
    for p, name in enumerate(b_in):
        x = feats[p]
        if p in layers_map:
            lay = next(l for l in sgs_layers if l.pathway == p)
            x = x[:, :, : max(1, lay.bins // 2)]  # a T' other than T, so nothing gets baked in
            dyn_b[name] = {0: "N", 2: f"T{p}"}
        else:
            dyn_b[name] = {0: "N"}
        back_args.append(x.contiguous())
    back = _onnx_export(Back(model), tuple(back_args), b_in, ["logits"], dyn_b, opset)
    _check_ops(front, "front.onnx")
    _check_ops(back, "back.onnx")

    graphs: dict[str, onnx.ModelProto] = {"front": front, "back": back}
    if sgs_layers:
        plug = sgs_graphs.plugin_graph(sgs_layers, opset)
        fb = sgs_graphs.fallback_graph(sgs_layers, opset)
        _check_ops(fb, "sgs_fallback.onnx")
        passthrough = [f"feat{p}" for p in range(n_path) if p not in layers_map]
        sgs_outs = [n for l in sgs_layers for n in (f"sgs{l.pathway}", f"bprime{l.pathway}")]
        graphs["sgs_plugin"] = plug
        graphs["sgs_fallback"] = fb
        graphs["front_plugin"] = compose([front, plug], sgs_outs + passthrough, "atfr_front_plugin")
        graphs["front_fallback"] = compose([front, fb], sgs_outs + passthrough, "atfr_front_fallback")
        graphs["model"] = compose([front, fb, back], ["logits"], "atfr_model")
    else:
        graphs["model"] = compose([front, back], ["logits"], "atfr_model")
    for k, g in graphs.items():
        try:
            onnx.checker.check_model(g)
        except onnx.checker.ValidationError as e:
            raise ATFRError(f"export: {k}.onnx fails onnx.checker ({str(e).splitlines()[0]})") from None

    # 3. B' statistics on structured clips: the builder's default optimisation-profile opt.
    bstats: dict[str, Any] = {}
    model.eval()  # belt and braces: nothing above may leave BN in train mode
    if sgs_layers:
        with torch.no_grad():
            bps = [model.forward_with_bprime(c)[1][0].tolist() for c in structured_clips(model, frames, size)]
        per_layer = list(zip(*bps))
        bstats = {
            "source": "structured synthetic clips (static, slow/fast translation, noise)",
            "layers": [{"pathway": l.pathway, "values": list(v), "opt": int(np.median(v)), "max": l.bins}
                       for l, v in zip(sgs_layers, per_layer)],
        }
    gflops = _gflops(model, clips, sgs_layers)

    # 4. Write into a private work folder, then publish it (export/folder.py).
    with staged(out) as tmp:
        for k, g in graphs.items():
            onnx.save(g, str(tmp / f"{k}.onnx"))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "model": {"name": opts.name or Path(str(loaded.meta.get("source", "model"))).stem or "model",
                      "arch": loaded.cfg["MODEL"]["ARCH"], "num_classes": int(loaded.cfg["MODEL"]["NUM_CLASSES"]),
                      "labels": loaded.labels, "source_format": loaded.source_format},
            **({"untrained": True} if loaded.meta.get("untrained") else {}),  # atfr init: predictions mean nothing
            "input": new_spec.to_dict(),
            "num_pathways": n_path,
            "batch": "dynamic (N); the runtime runs SGS per clip and groups equal B' for the back",
            "sgs": [{"spec": l.spec.to_dict(), "frames": l.frames, "bins": l.bins, "channels": l.channels,
                     "height": l.height, "width": l.width,
                     "plugin": {"name": sgs_graphs.PLUGIN_NAME, "version": sgs_graphs.PLUGIN_VERSION,
                                "namespace": sgs_graphs.PLUGIN_NAMESPACE,
                                "attributes": {k: v for k, v in sgs_graphs.plugin_attributes(l).items()
                                               if not k.startswith("plugin_")}}}
                    for l in sgs_layers],
            "split_shapes": [list(f.shape[1:]) for f in feats],
            "graphs": {k: {"file": f"{k}.onnx", "inputs": _tensor_specs(g.graph.input),
                           "outputs": _tensor_specs(g.graph.output)} for k, g in graphs.items()},
            "opset": opset,
            "source": {"checkpoint": str(Path(loaded.meta["source"]).resolve()) if loaded.meta.get("source") else None,
                       "format": loaded.source_format},
            "bprime_stats": bstats,
            "gflops": gflops,
            "producer": {"atfr-deploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                         "python": platform.python_version(), "exporter": "torch.onnx (TorchScript)"},
            "checksums": {f"{k}.onnx": sha256_file(tmp / f"{k}.onnx") for k in graphs},
        }
        write_manifest(tmp / MANIFEST_NAME, manifest)
    load_manifest(out, check=True)
    return out


def _gflops(model: VideoNet, clips, sgs_layers: list[SGSLayer]) -> dict[str, Any]:
    """GFLOPs (multiply-adds) of front, SGS and back per B', when the counter is available."""
    try:
        from atfr.models.flops import flops_report
    except ImportError:
        return {}
    try:
        rep = flops_report(model, [(1,) + tuple(c.shape[1:]) for c in clips])
        # summary at B' = B (front, sgs, back, total, static) + one row per B' (per layer).
        return {**rep["summary"], "vs_bprime": rep["table"]}
    except Exception as e:  # the counter is informative only; never fail an export on it
        return {"error": f"{type(e).__name__}: {e}"}
