"""``atfr triton-repo``: a model repository for stock ``tritonserver``. Torch-free.

Models (``N`` = the export's name):

* ``N`` (ensemble, the entry point for pre-processed clips): ``N_front`` -> ``N_sgs``;
* ``N_frames`` (ensemble, raw uint8 frames): ``N_preprocess`` -> ``N_front`` -> ``N_sgs``;
* ``N_front``: the fixed-shape front graph, dynamically batched;
* ``N_sgs`` (Python backend): SGS per clip, then the clips of the whole dynamic batch grouped by
  B' and one BLS call to ``N_back`` per group, so every clip keeps its exact B'. A BLS model
  rather than an ensemble step because B' is data-dependent: an ensemble cannot route one
  batch to the back as several batches of different shapes;
* ``N_back``: the dynamic-B' back graph (batches come from ``N_sgs``).

An AdaFuse export gets its own layout (adafuse_repo.py: clip graph -> report model; no tensorrt
flavor yet).

Flavors: ``onnxruntime`` (front/back on Triton's ONNX Runtime backend), ``tensorrt`` (the
``atfr build`` engines as ``tensorrt_plan``), ``python`` (front/back on ONNX Runtime inside
Python-backend models: the flavor the ``nvidia-pytriton`` wheel's server can run, it has no
ONNX Runtime/TensorRT backends).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from atfr.errors import ATFRError

from atfr.runtime.adafuse_clip import is_adafuse_manifest
from atfr.runtime.manifest import Manifest, load_manifest
from atfr.runtime.serving import adafuse_repo
from atfr.runtime.serving.repo_config import (  # noqa: F401 - RepoOptions: the command's import
    RepoOptions, batcher, ensemble, graph_io, graph_model, instances, io_block, params_block, python_model, step,
    write_preprocess)
from atfr.runtime.serving.service import response_spec

FLAVORS = ("python", "onnxruntime", "tensorrt")


def response_io(m: Manifest, topk: int) -> list[tuple[str, str, list[Any]]]:
    return response_spec(m, topk)  # one definition for atfr serve and the repository


def model_names(m: Manifest) -> dict[str, str]:
    n = m.name
    return {"clips": n, "frames": f"{n}_frames", "front": f"{n}_front", "sgs": f"{n}_sgs", "back": f"{n}_back",
            "preprocess": f"{n}_preprocess"}


def _atfr_models(tmp: Path, m: Manifest, opt: RepoOptions, names: dict[str, str]) -> None:
    graph_model(tmp, names["front"], m, "front", opt, batched=True)
    graph_model(tmp, names["back"], m, "back", opt, batched=False)
    front_in, front_out = graph_io(m.graphs["front"])
    resp = response_io(m, opt.topk)
    # SGS model: front outputs in, responses out; dynamically batched so groups span requests
    python_model(tmp / names["sgs"], m, "SGSModel", [])
    (tmp / names["sgs"] / "config.pbtxt").write_text(
        f'name: "{names["sgs"]}"\nbackend: "python"\nmax_batch_size: {opt.max_batch}\n' +
        io_block("input", front_out) + io_block("output", resp) + batcher(opt.queue_delay_us) +
        instances("KIND_CPU", opt.instances) +
        params_block({"atfr_back_model": names["back"], "atfr_topk": str(opt.topk)}), encoding="utf-8")
    frames = write_preprocess(tmp, names["preprocess"], m, opt, front_in)
    fo = [t[0] for t in front_out]
    ci = [t[0] for t in front_in]
    ro = [t[0] for t in resp]
    ensemble(tmp, names["clips"], opt, front_in, resp,
              [step(names["front"], ci, fo), step(names["sgs"], fo, ro)])
    ensemble(tmp, names["frames"], opt, frames, resp,
              [step(names["preprocess"], ["frames"], ci), step(names["front"], ci, fo),
               step(names["sgs"], fo, ro)])


def write_repo(export: str | Path, out: str | Path, opt: RepoOptions, force: bool = False) -> dict[str, Any]:
    """Write the repository to ``out`` (atomically: a sibling temp folder renamed at the end)."""
    if opt.flavor not in FLAVORS:
        raise ATFRError(f"unknown flavor {opt.flavor!r}; choose one of: {', '.join(FLAVORS)}")
    if opt.max_batch < 1 or opt.instances < 1 or opt.queue_delay_us < 0:
        raise ATFRError("--max-batch and --instances must be >= 1, --queue-delay-us >= 0")
    m = load_manifest(export, check=True)
    adafuse = is_adafuse_manifest(m)
    if adafuse:
        adafuse_repo.check_flavor(m, opt.flavor)
    dest = Path(out)
    if dest.exists() and not force:
        raise ATFRError(f"{dest} exists; use --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    names = adafuse_repo.model_names(m) if adafuse else model_names(m)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (adafuse_repo.write_models if adafuse else _atfr_models)(tmp, m, opt, names)
        (tmp / "README.md").write_text(readme(m, opt, names), encoding="utf-8")
        (tmp / "atfr-repo.json").write_text(json.dumps({"export": m.name, "flavor": opt.flavor, "models": names},
                                                       indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"repo": str(dest), "flavor": opt.flavor, "models": names}


def readme(m: Manifest, opt: RepoOptions, names: dict[str, str]) -> str:
    clip_shapes = ", ".join(f"clip{p} float32 {list(s[1:])}" for p, s in enumerate(m.clip_shapes(1)))
    adafuse = is_adafuse_manifest(m)
    graphs = "clip graph" if adafuse else "front and back graphs"
    if opt.flavor == "python":
        start = (
            f"This `python` flavor runs the {graphs} with ONNX Runtime inside Python-backend\n"
            "models, so the `tritonserver` bundled in the `nvidia-pytriton` wheel (no ONNX Runtime or\n"
            "TensorRT backend) can serve it. Every Python-backend model imports `atfr.runtime` and\n"
            "`onnxruntime`, and Triton 2.51's stub needs numpy < 2, in the interpreter the stub runs:\n\n"
            "```sh\n"
            "pip install 'atfr-deploy[serve]'          # nvidia-pytriton (tritonserver 2.51), numpy<2\n"
            "TS=$(python -c 'import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent / \"tritonserver\")')\n"
            "cp -r $TS/backends ./backends\n"
            "cp $TS/python_backend_stubs/$(python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')"
            "/triton_python_backend_stub ./backends/python/\n"
            "# the stub must load THIS interpreter's libpython, not the system's:\n"
            "export LD_LIBRARY_PATH=$(python -c 'import sysconfig; print(sysconfig.get_config_var(\"LIBDIR\"))')"
            ":$(python -c 'import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent.parent / \"nvidia_pytriton.libs\")')\n"
            "$TS/bin/tritonserver --model-repository=$PWD/REPO --backend-directory=$PWD/backends \\\n"
            "    --http-address=127.0.0.1 --grpc-address=127.0.0.1\n"
            "```\n")
    else:
        plugin = ""
        if opt.flavor == "tensorrt":
            plugin = (
                "The front and back engines here are the plain split graphs (SGS runs in the Python model),\n"
                "so no plugin library is needed. An engine built with the SGS plugin inside would need\n"
                "`--backend-config=tensorrt,plugins=/models/libsgs_plugin.so` (mount the library built by\n"
                "`plugins/sgs`). Engines are specific to the GPU and TensorRT version they were built with:\n"
                "use the NGC Triton release whose TensorRT matches `atfr build`'s.\n\n")
        start = (
            f"Start it with NVIDIA's Triton container (GPU, `{opt.flavor}` backend):\n\n"
            "```sh\n"
            "docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/REPO:/models \\\n"
            "    nvcr.io/nvidia/tritonserver:24.10-py3 \\\n"
            "    sh -c 'pip install atfr-deploy \"numpy<2\" && tritonserver --model-repository=/models'\n"
            "```\n\n" + plugin +
            f"The Python-backend models ({'report' if adafuse else 'SGS'}, pre-processing) import `atfr.runtime`: install atfr-deploy in\n"
            "the container (above) or build an image with it.\n")
    answers, table, metrics = (adafuse_repo.readme_models(m, opt, names) if adafuse
                               else _atfr_readme_models(opt, names))
    return (
        f"# Triton model repository for `{m.name}` ({m.arch}), flavor `{opt.flavor}`\n\n"
        "Generated by `atfr triton-repo`. Entry points (KServe v2, HTTP and gRPC):\n\n"
        f"* `{names['clips']}`: pre-processed clips ({clip_shapes}), batch axis first;\n"
        f"* `{names['frames']}`: raw frames `frames` uint8 [{m.input.num_frames},H,W,3] RGB, pre-processed like `atfr run`.\n\n"
        + answers + "\n## Models\n\n" + table + "\n"
        f"Dynamic batching: up to {opt.max_batch} clips, {opt.queue_delay_us} us queue delay; "
        f"{opt.instances} instance(s) per model.\n\n"
        "## Start\n\n" + start + "\n"
        "## Metrics (Prometheus, `:8002/metrics`)\n\n" + metrics)


def _atfr_readme_models(opt: RepoOptions, names: dict[str, str]) -> tuple[str, str, str]:
    """(what the entry points answer, the models table, the metrics) of an ATFR repository."""
    backend = opt.flavor if opt.flavor != "python" else "python (ONNX Runtime)"
    answers = "Both answer `probs`, `logits` [K], `bprime` [one per SGS layer], `topk_index` and `topk_label`.\n"
    table = (
        f"| model | backend | job |\n|---|---|---|\n"
        f"| `{names['clips']}`, `{names['frames']}` | ensemble | single entry points |\n"
        f"| `{names['preprocess']}` | python | short-side resize + centre crop (the official test transform) |\n"
        f"| `{names['front']}` | {backend} | fixed-shape front graph, dynamic batching |\n"
        f"| `{names['sgs']}` | python | SGS per clip; clips of a batch grouped by B', one BLS call to "
        f"`{names['back']}` per group (exact B' per clip); ATFR metrics |\n"
        f"| `{names['back']}` | {backend} | back graph, dynamic B' axis |\n")
    metrics = (
        "* `atfr_bprime_clips_total{model,layer,bprime}`: the B' distribution per SGS layer;\n"
        "* `atfr_gflops_saved_total{model}` / `atfr_gflops_total{model}`: GFLOPs not spent / spent against the\n"
        "  static model, from the export's GFLOPs table per B' (`atfr info`);\n"
        "* `atfr_clips_total{model}`.\n")
    return answers, table, metrics
