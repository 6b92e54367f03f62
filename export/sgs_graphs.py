"""The SGS step as ONNX: a custom ``SGS`` node (TensorRT plugin) and a standard-op fallback.

Both read ``feat{p}`` [N,C,T,H,W] and ``dist{p}`` [N,T] and write ``sgs{p}`` [N,C,B',H,W] and
``bprime{p}`` (int32 scalar, B' = the batch max of active bins). The fallback is traced from
the same torch code as the model (``atfr.models.sgs.sgs_step``), so there is one definition of
the semantics; it uses only ops TensorRT 10.3's ONNX parser supports (TopK for the ordering,
GatherElements, dynamic Slice, MatMul).
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper

from atfr.models.sgs import guard_zero_max, sgs_step
from atfr.runtime.manifest import SGSLayer

PLUGIN_NAME = "SGS"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "atfr"
PLUGIN_DOMAIN = "atfr"
KERNEL_CODES = {"linear": 0, "delta": 1}


def plugin_attributes(layer: SGSLayer) -> dict[str, int | str]:
    s = layer.spec
    return {
        "num_bins": int(s.num_bins),
        "kernel": KERNEL_CODES[s.kernel_base],
        "normalize": int(s.normalized),
        "drop_bins": int(s.drop_bins),
        "guard_zero": 1,
        "plugin_version": PLUGIN_VERSION,
        "plugin_namespace": PLUGIN_NAMESPACE,
    }


def plugin_nodes(layers: list[SGSLayer]) -> list[onnx.NodeProto]:
    return [
        helper.make_node(PLUGIN_NAME, [f"feat{l.pathway}", f"dist{l.pathway}"],
                         [f"sgs{l.pathway}", f"bprime{l.pathway}"], name=f"SGS_{l.pathway}",
                         domain=PLUGIN_DOMAIN, **plugin_attributes(l))
        for l in layers
    ]


def _io(layers: list[SGSLayer]):
    ins, outs = [], []
    for l in layers:
        p = l.pathway
        ins.append(helper.make_tensor_value_info(f"feat{p}", TensorProto.FLOAT, ["N", l.channels, l.frames, l.height, l.width]))
        ins.append(helper.make_tensor_value_info(f"dist{p}", TensorProto.FLOAT, ["N", l.frames]))
        outs.append(helper.make_tensor_value_info(f"sgs{p}", TensorProto.FLOAT, ["N", l.channels, f"B{p}", l.height, l.width]))
        outs.append(helper.make_tensor_value_info(f"bprime{p}", TensorProto.INT32, []))
    return ins, outs


def plugin_graph(layers: list[SGSLayer], opset: int) -> onnx.ModelProto:
    """A graph holding only the SGS custom node(s): what the TensorRT plugin implements."""
    ins, outs = _io(layers)
    g = helper.make_graph(plugin_nodes(layers), "atfr_sgs_plugin", ins, outs)
    # IR 8 (ONNX 1.12 era): what opset 17 needs, and old enough for TensorRT 10.3's parser and
    # every ONNX Runtime in use; onnx's default would be the newest IR this onnx package knows.
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(PLUGIN_DOMAIN, 1)],
                             producer_name="atfr-deploy", ir_version=8)


class _Fallback(nn.Module):
    def __init__(self, layers: list[SGSLayer]):
        super().__init__()
        self.layers = layers
        self.eval()

    def forward(self, *args):
        outs = []
        for i, l in enumerate(self.layers):
            feat, dist = args[2 * i], args[2 * i + 1]
            y, k = sgs_step(feat, guard_zero_max(dist), l.spec.num_bins, l.spec.kernel, l.spec.drop_bins)
            # B' is the temporal length of the output (= B without dropping), as the plugin reports.
            outs += [y, torch._shape_as_tensor(y)[2].to(torch.int32)]
        return tuple(outs)


def fallback_graph(layers: list[SGSLayer], opset: int) -> onnx.ModelProto:
    """The SGS step in standard ONNX ops, traced from the torch implementation."""
    mod = _Fallback(layers).eval()
    args, names, dyn = [], [], {}
    for l in layers:
        p = l.pathway
        args += [torch.randn(1, l.channels, l.frames, l.height, l.width), torch.rand(1, l.frames) + 0.1]
        names += [f"feat{p}", f"dist{p}"]
        dyn[f"feat{p}"] = {0: "N"}
        dyn[f"dist{p}"] = {0: "N"}
        dyn[f"sgs{p}"] = {0: "N", 2: f"B{p}"}
    out_names = [n for l in layers for n in (f"sgs{l.pathway}", f"bprime{l.pathway}")]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, tuple(args), buf, dynamo=False, opset_version=opset, input_names=names,
                          output_names=out_names, dynamic_axes=dyn, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())
