"""``atfr triton-repo`` on an AdaFuse export: its models and their README lines. Torch-free.

Models (``N`` = the export's name):

* ``N`` (ensemble, pre-processed clips): ``N_model`` -> ``N_report``;
* ``N_frames`` (ensemble, raw uint8 frames): ``N_preprocess`` -> ``N_model`` -> ``N_report``;
* ``N_model``: the clip graph (``model.onnx``: logits and ``policy{i}`` [T,C_i] per gated block),
  dynamically batched: it takes any batch and each clip keeps its own policy, so no routing model
  (ATFR's B' grouping) is needed;
* ``N_report`` (Python backend): per clip probs, top-k, skip/reuse/keep fractions and GFLOPs
  (``clip_report``, the function ``atfr infer --json`` prints), and the metrics.

No ``tensorrt`` flavor: TensorRT engines for AdaFuse exports are not built yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atfr.errors import ATFRError

from atfr.runtime.manifest import Manifest
from atfr.runtime.serving import repo_config as rc
from atfr.runtime.serving.service import response_spec


GRAPH_LOGITS = "graph_logits"  # the clip graph's logits inside the ensembles


def check_flavor(m: Manifest, flavor: str) -> None:
    if flavor == "tensorrt":
        raise ATFRError(f"{m.root} is an AdaFuse export: --flavor tensorrt needs TensorRT engines, which "
                        "are not built for AdaFuse exports yet (use --flavor onnxruntime or python)")


def model_names(m: Manifest) -> dict[str, str]:
    n = m.name
    return {"clips": n, "frames": f"{n}_frames", "model": f"{n}_model", "report": f"{n}_report",
            "preprocess": f"{n}_preprocess"}


def write_models(repo: Path, m: Manifest, opt: Any, names: dict[str, str]) -> None:
    rc.graph_model(repo, names["model"], m, "model", opt, batched=True)
    graph_in, graph_out = rc.graph_io(m.graphs["model"])
    resp = response_spec(m, opt.topk)
    rc.python_model(repo / names["report"], m, "AdaFuseReportModel", [])
    (repo / names["report"] / "config.pbtxt").write_text(
        f'name: "{names["report"]}"\nbackend: "python"\nmax_batch_size: {opt.max_batch}\n' +
        rc.io_block("input", graph_out) + rc.io_block("output", resp) + rc.batcher(opt.queue_delay_us) +
        rc.instances("KIND_CPU", opt.instances) + rc.params_block({"atfr_topk": str(opt.topk)}), encoding="utf-8")
    frames = rc.write_preprocess(repo, names["preprocess"], m, opt, graph_in)
    gi, go, ro = [t[0] for t in graph_in], [t[0] for t in graph_out], [t[0] for t in resp]
    # the graph's logits and the report's share a name, and an ensemble tensor has one producer
    inner = {n: GRAPH_LOGITS if n == "logits" else n for n in go}
    model_step = _step(names["model"], {n: n for n in gi}, inner)
    report_step = _step(names["report"], inner, {n: n for n in ro})
    rc.ensemble(repo, names["clips"], opt, graph_in, resp, [model_step, report_step])
    rc.ensemble(repo, names["frames"], opt, frames, resp,
                 [_step(names["preprocess"], {"frames": "frames"}, {n: n for n in gi}), model_step, report_step])


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    """An ensemble step: model tensor name -> ensemble tensor name, for inputs and outputs."""
    im = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    om = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'    {{ model_name: "{model}" model_version: -1 {im} {om} }}'


def readme_models(m: Manifest, opt: Any, names: dict[str, str]) -> tuple[str, str, str]:
    """(what the entry points answer, the models table, the metrics) for the generated README."""
    backend = opt.flavor if opt.flavor != "python" else "python (ONNX Runtime)"
    answers = ("Both answer `probs`, `logits` [K], `topk_index`, `topk_label` [k], `policy_fractions` [3]\n"
               "(skip, reuse, keep: fractions of all gated blocks' frames x channels) and `gflops` [2]\n"
               "(official convention, Eq. 5), as `atfr infer --json` computes them. No `bprime`: AdaFuse has no\n"
               "SGS layer.\n")
    table = (f"| model | backend | job |\n|---|---|---|\n"
             f"| `{names['clips']}`, `{names['frames']}` | ensemble | single entry points |\n"
             f"| `{names['preprocess']}` | python | short-side resize + centre crop (the official test transform) |\n"
             f"| `{names['model']}` | {backend} | AdaFuse clip graph (logits, policy per gated block), dynamic batching |\n"
             f"| `{names['report']}` | python | probs, top-k, policy fractions, GFLOPs per clip; metrics |\n")
    metrics = ("* `atfr_gflops_total{model}`: GFLOPs counted by Eq. 5 for each clip's policy;\n"
               "* `atfr_gflops_saved_total{model}`: against the static TSN (the manifest's `static_official`);\n"
               "* `atfr_clips_total{model}`.\n")
    return answers, table, metrics
