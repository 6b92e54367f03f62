"""AdaFuse under fp16: do policies flip, and does pinning the policy head to fp32 keep them?

TensorRT is not available here, so fp16 is emulated on ONNX Runtime CPU: the clip graph converted
to fp16 by export/precision.convert_fp16 (every tensor and weight fp16; ONNX Runtime's CPU kernels
compute each op in fp32 between fp16 inputs and outputs, the way fp16 tensor-core kernels
accumulate in fp32 and round their outputs), with

* nothing kept fp32 ("all fp16": weakly typed fp16 without pins), or
* the policy head kept fp32 (the layers ``atfr build --precision fp16`` pins:
  atfr.runtime.tensorrt.adafuse_plan.policy_head_layers, found here on the ONNX nodes),

against the fp32 graph, on the AdaFuse demo model (atfr/assets/demo_adafuse.pt) and its held-out
clips, and on seeded random weights (policy nets near uniform: the worst case for near-ties).

    python benchmarks/adafuse_fp16_policy.py [--per-class 40] [--random-clips 16]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from atfr.export.precision import convert_fp16
from atfr.runtime.tensorrt.adafuse_plan import policy_head_layers

ROOT = Path(__file__).resolve().parents[1]
KIND = {"GlobalAveragePool": "REDUCE", "GlobalMaxPool": "REDUCE", "ReduceMean": "REDUCE", "ReduceMax": "REDUCE",
        "MaxPool": "POOLING", "AveragePool": "POOLING", "Shape": "SHAPE"}


def head_nodes(model: onnx.ModelProto) -> set[int]:
    """Indices of the ONNX nodes of the policy heads (the walk the TensorRT builder does on its layers)."""
    m = onnx.shape_inference.infer_shapes(model)
    g = m.graph
    rank = {v.name: len(v.type.tensor_type.shape.dim) for v in list(g.value_info) + list(g.input) + list(g.output)}
    layers = [(n.name, list(n.input), list(n.output), KIND.get(n.op_type, n.op_type.upper()),
               [rank.get(t, 0) for t in n.input]) for n in g.node]
    names = policy_head_layers(layers, [o.name for o in g.output if re.fullmatch(r"policy\d+", o.name)])
    return {i for i, n in enumerate(model.graph.node) if n.name in names}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, clips: np.ndarray, batch: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
    outs = [sess.run(None, {"clip0": clips[i:i + batch]}) for i in range(0, len(clips), batch)]
    logits = np.concatenate([o[0] for o in outs])
    return logits, [np.concatenate([o[k] for o in outs]) for k in range(1, len(outs[0]))]


def compare(name: str, onnx_path: Path, clips: np.ndarray) -> None:
    fp32 = onnx.load(str(onnx_path))
    keep = head_nodes(fp32)
    ref_lg, ref_pol = run(session(fp32), clips)
    print(f"{name}: {len(clips)} clips, {sum(p.size for p in ref_pol)} policy entries, "
          f"{len(keep)} head nodes kept fp32 of {len(fp32.graph.node)}")
    print(f"  {'graph':<22}{'policy = fp32':>14}{'flipped':>9}{'top-1 = fp32':>13}{'max |dlogit|':>13}")
    for label, k in (("all fp16", set()), ("fp16, head fp32", keep)):
        lg, pol = run(session(convert_fp16(fp32, k)), clips)
        flips = sum(int((p != q).sum()) for p, q in zip(pol, ref_pol))
        total = sum(p.size for p in ref_pol)
        top1 = float((lg.argmax(1) == ref_lg.argmax(1)).mean())
        print(f"  {label:<22}{1 - flips / total:>14.5f}{flips:>9d}{top1:>13.3f}{np.abs(lg - ref_lg).max():>13.2e}")


def main() -> None:
    import torch

    from atfr.demo import synth
    from atfr.demo.train import CROP, HELD_OUT_SPLIT, NUM_FRAMES, preprocess
    from atfr.demo.train_adafuse import sample_frames
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.adafuse_config import from_compact
    from atfr.models.adafuse_weights import randomize
    from atfr.models.checkpoint import LoadedModel, load_checkpoint
    from atfr.models.zoo import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "atfr" / "assets" / "demo_adafuse.pt"))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--random-clips", type=int, default=16)
    a = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        demo = load_checkpoint(a.checkpoint)
        export_model(demo, Path(tmp) / "demo", ExportOptions(name="demo"))
        x, _ = synth.make_dataset(a.per_class, 0, NUM_FRAMES, CROP, split=HELD_OUT_SPLIT)
        clips = preprocess(sample_frames(x)).numpy().astype(np.float32)
        compare(f"demo model ({Path(a.checkpoint).name}, held-out split {HELD_OUT_SPLIT})", Path(tmp) / "demo" /
                "model.onnx", clips)
        cfg = from_compact({"arch": "adafuse", "depth": 18, "num_classes": 200, "num_frames": 8, "crop_size": 112,
                            "adafuse": {"gate_bn_between_fcs": True, "gate_relu_between_fcs": True}})
        model = build_model(cfg).eval()
        randomize(model, 7)
        export_model(LoadedModel(model, cfg, [str(i) for i in range(200)], "atfr", {}), Path(tmp) / "r18",
                     ExportOptions(name="r18"))
        rnd = torch.randn((a.random_clips, 3, 8, 112, 112), generator=torch.Generator().manual_seed(0)).numpy()
        compare("AdaFuse-TSN-R18, seeded random weights (near-uniform policies), 8 x 112^2", Path(tmp) / "r18" /
                "model.onnx", rnd)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
