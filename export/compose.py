"""Join ONNX graphs that share tensor names (front -> SGS -> back) into one model.

Internal names of each part get a prefix so parts cannot collide; the tensors that connect the
parts (feat{p}, dist{p}, sgs{p}) keep their names.
"""

from __future__ import annotations

import onnx
from onnx import helper


def _rename(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> None:
    def r(name: str) -> str:
        return name if (not name or name in keep) else prefix + name

    for init in graph.initializer:
        init.name = r(init.name)
    for vi in list(graph.value_info):
        vi.name = r(vi.name)
    for node in graph.node:
        node.name = prefix + node.name if node.name else node.name
        node.input[:] = [r(x) for x in node.input]
        node.output[:] = [r(x) for x in node.output]
    for vi in list(graph.input) + list(graph.output):
        vi.name = r(vi.name)


def compose(parts: list[onnx.ModelProto], outputs: list[str], name: str) -> onnx.ModelProto:
    """Chain ``parts``; graph inputs are the first part's inputs plus any input no part produces."""
    parts = [onnx.ModelProto.FromString(p.SerializeToString()) for p in parts]
    io_names = set()
    for p in parts:
        io_names |= {i.name for i in p.graph.input} | {o.name for o in p.graph.output}
    produced: set[str] = set()
    nodes, inits, vinfo, inputs, outs_vi = [], [], [], [], {}
    for i, p in enumerate(parts):
        _rename(p.graph, f"p{i}_", io_names)
        for inp in p.graph.input:
            if inp.name not in produced and inp.name not in {x.name for x in inputs}:
                inputs.append(inp)
        nodes += list(p.graph.node)
        inits += list(p.graph.initializer)
        vinfo += list(p.graph.value_info)
        for o in p.graph.output:
            produced.add(o.name)
            outs_vi[o.name] = o
    g = helper.make_graph(nodes, name, inputs, [outs_vi[o] for o in outputs], initializer=inits, value_info=vinfo)
    opsets: dict[str, int] = {}
    for p in parts:
        for op in p.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                             producer_name="atfr-deploy", ir_version=parts[0].ir_version)
