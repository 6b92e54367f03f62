"""Benchmark reports: JSON (versioned, schema-validated), Markdown and PNG plots.

``SCHEMA`` is the JSON Schema (draft 2020-12) of ``report.json``; :func:`validate_report` checks
a report against it with ``jsonschema`` when installed (the ``bench`` extra) and otherwise with a
minimal structural check. All times are milliseconds; latency blocks are ``Stats`` objects (see
:mod:`atfr.bench.stats` for the percentile method).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from atfr.errors import ATFRError
from atfr.fileio import check_output_dir, write_bytes_atomic, write_text_atomic

SCHEMA_VERSION = "1.0"
OUTPUT_FILES = ("report.json", "report.md", "latency_vs_bprime.png", "bprime_hist.png", "stages.png")

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STATS = {
    "type": "object",
    "required": ["n", "mean", "median", "p90", "p95", "p99", "min", "max", "std"],
    "properties": {"n": {"type": "integer", "minimum": 1}, **{k: {"type": "number", "minimum": 0}
                   for k in ("mean", "median", "p90", "p95", "p99", "min", "max", "std")}},
}
_STATS_OR_NULL = {"anyOf": [{"$ref": "#/$defs/stats"}, {"type": "null"}]}
_THROUGHPUT = {"type": "object", "required": ["clips_per_s", "frames_per_s"],
               "properties": {"clips_per_s": _NUM, "frames_per_s": _NUM}}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://atfr-deploy/schemas/bench-report-1.json",
    "title": "atfr bench report",
    "type": "object",
    "$defs": {"stats": _STATS, "throughput": _THROUGHPUT},
    "required": ["schema_version", "tool", "created", "environment", "config", "model", "harness", "stages",
                 "bprime_curve", "fit", "distribution", "static", "torch", "ratios", "gflops", "throughput",
                 "memory", "tensorrt", "warnings"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": {"type": "object", "required": ["name", "version", "argv"],
                 "properties": {"name": {"type": "string"}, "version": {"type": ["string", "null"]},
                                "argv": {"type": "array", "items": {"type": "string"}}}},
        "created": {"type": "string"},
        "environment": {"type": "object", "required": ["cpu", "versions"],
                        "properties": {"cpu": {"type": "object"}, "versions": {"type": "object"},
                                       "gpu": {"type": ["array", "null"]}, "jetson": {"type": ["object", "null"]},
                                       "tegrastats": {"type": ["object", "null"]}}},
        "config": {"type": "object",
                   "required": ["export", "backend", "warmup", "iters", "batch", "threads", "bprime"],
                   "properties": {"export": {"type": "string"}, "backend": {"enum": ["onnxruntime", "tensorrt"]},
                                  "warmup": {"type": "integer", "minimum": 0},
                                  "iters": {"type": "integer", "minimum": 1},
                                  "batch": {"type": "integer", "minimum": 1},
                                  "threads": {"type": ["integer", "null"]},
                                  "bprime": {"type": "array", "items": {"type": "integer", "minimum": 1}}}},
        "model": {"type": "object", "required": ["name", "arch", "num_frames", "crop_size", "clip_shapes", "sgs"],
                  "properties": {"sgs": {"type": "array", "items": {
                      "type": "object", "required": ["pathway", "frames", "bins"],
                      "properties": {"pathway": {"type": "integer"}, "frames": {"type": "integer"},
                                     "bins": {"type": "integer", "minimum": 1}}}}}},
        "harness": {"type": "object", "required": ["clock", "interleaving", "percentile_method", "overhead"],
                    "properties": {"overhead": {"anyOf": [{"type": "null"}, {
                        "type": "object", "required": ["direct_median_ms", "harness_median_ms", "overhead_pct",
                                                       "noop_ns_per_call", "noop_pct", "negligible"],
                        "properties": {"overhead_pct": _NUM, "noop_pct": _NUM,
                                       "negligible": {"type": "boolean"}}}]}}},
        "stages": {"type": "object", "required": ["front", "sgs", "end_to_end", "end_to_end_bprime"],
                   "properties": {"front": {"$ref": "#/$defs/stats"}, "sgs": _STATS_OR_NULL,
                                  "end_to_end": {"$ref": "#/$defs/stats"},
                                  "end_to_end_bprime": {"type": "array", "items": {
                                      "type": "array", "items": {"type": "integer"}}}}},
        "bprime_curve": {"type": "array", "items": {
            "type": "object", "required": ["bprime", "bprime_per_layer", "back", "clip_ms", "gflops",
                                           "gflops_per_s", "speedup_vs_static"],
            "properties": {"bprime": {"type": "integer", "minimum": 1},
                           "bprime_per_layer": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                           "back": {"$ref": "#/$defs/stats"}, "clip_ms": _NUM, "gflops": _NUM_OR_NULL,
                           "gflops_per_s": _NUM_OR_NULL, "speedup_vs_static": _NUM_OR_NULL}}},
        "fit": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["slope", "intercept", "r2", "n"],
                                              "properties": {"r2": {"type": "number", "maximum": 1.0}}}]},
        "distribution": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["source", "counts", "n", "expected"],
            "properties": {"counts": {"type": "object", "patternProperties": {"^[0-9]+$": {"type": "integer"}},
                                      "additionalProperties": False},
                           "n": {"type": "integer", "minimum": 1},
                           "expected": {"type": "object", "required": ["latency_ms", "clips_per_s", "frames_per_s"]}}}]},
        "static": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["export", "front", "back", "end_to_end", "clip_ms"],
            "properties": {"front": {"$ref": "#/$defs/stats"}, "back": {"$ref": "#/$defs/stats"},
                           "end_to_end": {"$ref": "#/$defs/stats"}, "clip_ms": _NUM}}]},
        "torch": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["checkpoint", "end_to_end", "error"],
            "properties": {"end_to_end": _STATS_OR_NULL, "error": {"type": ["string", "null"]}}}]},
        "ratios": {"type": "object"},
        "gflops": {"type": "object", "required": ["source"]},
        "throughput": {"type": "object", "required": ["end_to_end"],
                       "properties": {"end_to_end": {"$ref": "#/$defs/throughput"}}},
        "memory": {"type": "object", "required": ["peak_rss_mb", "gpu_memory_mb"],
                   "properties": {"peak_rss_mb": _NUM_OR_NULL, "gpu_memory_mb": _NUM_OR_NULL}},
        "tensorrt": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["host_latency", "gpu_compute", "enqueue", "h2d", "d2h"],
            "properties": {k: _STATS_OR_NULL for k in ("host_latency", "gpu_compute", "enqueue", "h2d", "d2h")}}]},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}


class ReportValidationError(ATFRError):
    pass


def validate_report(report: dict[str, Any]) -> None:
    """Raise ReportValidationError when ``report`` does not match :data:`SCHEMA`."""
    try:
        import jsonschema
    except ImportError:
        missing = [k for k in SCHEMA["required"] if k not in report]
        if missing or report.get("schema_version") != SCHEMA_VERSION:
            raise ReportValidationError(f"bench report is invalid (missing: {', '.join(missing) or 'none'}; "
                                        f"schema_version {report.get('schema_version')!r})") from None
        return
    try:
        jsonschema.validate(report, SCHEMA)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ReportValidationError(f"bench report is invalid at {where}: {e.message[:200]}") from None


# -- Markdown --------------------------------------------------------------------------------------
def _f(v: Any, nd: int = 2, suffix: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}{suffix}"
    return f"{v}{suffix}"


def to_markdown(r: dict[str, Any]) -> str:
    env, cfg, model = r["environment"], r["config"], r["model"]
    cpu = env.get("cpu", {})
    v = env.get("versions", {})
    lines = [f"# atfr bench: {model['name']} ({model['arch']})", ""]
    lines.append(f"- command: `{' '.join(r['tool']['argv'])}`")
    lines.append(f"- created: {r['created']}")
    gpus = env.get("gpu") or []
    lines.append(f"- machine: {cpu.get('model')} ({cpu.get('usable_cores')} usable cores), threads "
                 f"{cfg.get('threads') or 'default'}" + (f", GPU {gpus[0]['name']}" if gpus else ""))
    if env.get("jetson"):
        j = env["jetson"]
        nv = (j.get("nvpmodel") or {}).get("name")
        jc = (j.get("jetson_clocks") or {}).get("locked")
        lines.append(f"- Jetson: {j.get('board')} / {j.get('l4t_release')}; nvpmodel {nv}; clocks locked: {jc}")
    lines.append(f"- versions: onnxruntime {v.get('onnxruntime')}, numpy {v.get('numpy')}, opencv {v.get('opencv')}, "
                 f"tensorrt {v.get('tensorrt')}, torch {v.get('torch')}")
    prov = f" ({cfg['provider']} provider)" if cfg.get("provider") else ""
    lines.append(f"- backend {cfg['backend']}{prov}, batch {cfg['batch']}, warmup {cfg['warmup']}, iters {cfg['iters']}; "
                 f"input {model['clip_shapes']}; SGS "
                 + (", ".join(f"p{s['pathway']} T={s['frames']} B={s['bins']}" for s in model["sgs"]) or "none"))
    h = r["harness"]
    lines.append(f"- harness: {h['interleaving']}; percentiles: numpy '{h['percentile_method']}'")
    ld = r.get("load")
    if ld:
        lines.append(f"- load average before {ld.get('before')}, after {ld.get('after')} on {ld.get('usable_cores')} "
                     f"cores: {'LOADED' if ld.get('loaded') else 'not loaded'}")
    if cfg.get("threads_meaning"):
        lines.append(f"- threads: {cfg['threads_meaning']}; ORT spin {cfg.get('ort_spin')}; {cfg.get('blas')}; "
                     f"graphs: {cfg.get('graph')}")
    ov = h.get("overhead")
    if ov:
        lines.append(f"- harness overhead: {ov['overhead_pct']:+.2f}% vs a bare loop on the same session call "
                     f"(direct {ov['direct_median_ms']:.3f} ms, harness {ov['harness_median_ms']:.3f} ms); "
                     f"fixed cost {ov['noop_ns_per_call']:.0f} ns/call = {ov['noop_pct']:.3f}%")
    lines += ["", "## Stages (per call, batch %d; ms)" % cfg["batch"], "",
              "| stage | median | mean | p90 | p95 | p99 | min | max | std |", "|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, s: dict[str, Any] | None) -> None:
        if s:
            lines.append(f"| {name} | " + " | ".join(f"{s[k]:.3f}" for k in
                                                     ("median", "mean", "p90", "p95", "p99", "min", "max", "std")) + " |")

    st = r["stages"]
    if r.get("adafuse"):  # one graph: front and end-to-end are the same clip graph
        row("AdaFuse clip graph (model.onnx), end-to-end", st["end_to_end"])
    else:
        row("front", st["front"])
        row("SGS", st.get("sgs"))
        row(f"end-to-end (B'={st['end_to_end_bprime']})", st["end_to_end"])
    if r.get("static"):
        row("static front", r["static"]["front"])
        row("static back", r["static"]["back"])
        row("static end-to-end", r["static"]["end_to_end"])
    if r.get("model_onnx"):
        row("ATFR model.onnx (monolithic)", r["model_onnx"])
    for k, v in (r.get("default_threads") or {}).items():
        row(f"{k.replace('_e2e', '')} end-to-end, default threads", v)
    t = r.get("torch") or {}
    for k, v in (t.get("layouts") or {}).items():
        row(f"PyTorch eager ({k})", v)
    if t.get("end_to_end") and not t.get("layouts"):
        row("PyTorch eager", t["end_to_end"])
    tp = r["throughput"]["end_to_end"]
    lines += ["", f"End-to-end throughput: {tp['clips_per_s']:.2f} clips/s, {tp['frames_per_s']:.1f} frames/s.", ""]

    if r["bprime_curve"]:
        lines += ["## Latency vs B' (per clip; clip = front + SGS + back medians)", "",
                  "| B' | back median ms | back p90 ms | clip ms | GFLOPs | GFLOP/s | static / ATFR |",
                  "|---|---|---|---|---|---|---|"]
        for c in r["bprime_curve"]:
            bp = c["bprime"] if len(c["bprime_per_layer"]) < 2 else "/".join(map(str, c["bprime_per_layer"]))
            lines.append(f"| {bp} | {c['back']['median']:.3f} | {c['back']['p90']:.3f} | {c['clip_ms']:.3f} | "
                         f"{_f(c['gflops'], 3)} | {_f(c['gflops_per_s'], 1)} | {_f(c['speedup_vs_static'], 2, 'x')} |")
        if r.get("fit"):
            f = r["fit"]
            lines += ["", f"Back latency vs B': slope {f['slope']:.4f} ms per B', intercept {f['intercept']:.3f} ms, "
                          f"R^2 = {f['r2']:.4f} (n = {f['n']})."]
        lines.append("")
    if r.get("back_steps"):
        lines += ["## Back latency per slow-pathway step (two SGS pathways)", "",
                  "| slow B' | B' (fast) | back median ms | fit over the step |", "|---|---|---|---|"]
        for st_ in r["back_steps"]:
            f = st_.get("fit")
            lines.append(f"| {st_['slow_bprime']} | {', '.join(map(str, st_['bprime']))} | "
                         f"{', '.join(f'{v:.2f}' for v in st_['back_median_ms'])} | "
                         + (f"{f['slope']:.3f} ms per B', R^2 {f['r2']:.3f}" if f else "-") + " |")
        lines.append("")
    ps = r.get("precision_speed")
    if ps:
        lines += [f"## Precision on this provider ({ps['provider']})", "", "| precision | median ms | vs fp32 |",
                  "|---|---|---|"]
        for p_, v in ps["median_ms"].items():
            lines.append(f"| {p_} | {v:.3f} | {ps['ratio_vs_fp32'].get(p_, 1.0):.2f}x |")
        lines.append("")
    d = r.get("distribution")
    if d:
        e = d["expected"]
        lines += ["## Under the B' distribution", "",
                  f"Source: {d['source']} ({d['n']} clips). Counts: " +
                  ", ".join(f"B'={k}: {n}" for k, n in d["counts"].items()), "",
                  f"Expected clip latency {e['latency_ms']:.3f} ms, {e['clips_per_s']:.2f} clips/s, "
                  f"{e['frames_per_s']:.1f} frames/s" +
                  (f"; expected GFLOPs {d['expected_gflops']:.3f}" if d.get("expected_gflops") is not None else "") +
                  (f"; static / ATFR = {d['speedup_vs_static']:.2f}x" if d.get("speedup_vs_static") else "") + ".", ""]
    if r.get("adafuse"):
        from .adafuse_report import markdown_lines
        lines += markdown_lines(r)
    rat = r.get("ratios") or {}
    if rat:
        lines += ["## Ratios (measured side by side, interleaved, in this run)", "", "| ratio | value |", "|---|---|"]
        for k, val in rat.items():
            lines.append(f"| {k} | {_f(val, 3)} |")
        lines.append("")
    g = r["gflops"]
    lines += ["## GFLOPs and memory", "", f"- GFLOPs source: {g['source']}; static {_f(g.get('static'), 3)}; "
              f"ATFR at B'=B {_f(g.get('at_B'), 3)}",
              f"- peak RSS {_f(r['memory']['peak_rss_mb'], 1)} MB; GPU memory {_f(r['memory']['gpu_memory_mb'], 1)} MB"]
    if r.get("tensorrt"):
        lines += ["", "## TensorRT (trtexec vocabulary; ms)", ""]
        for k, s in r["tensorrt"].items():
            if isinstance(s, dict) and "median" in s:
                lines.append(f"- {k}: median {s['median']:.3f}, p99 {s['p99']:.3f}")
    ts = env.get("tegrastats")
    if ts:
        lines += ["", "## tegrastats", ""]
        for k, s in ts.get("power_mw", {}).items():
            lines.append(f"- {k}: mean {s['mean']:.0f} mW, max {s['max']:.0f} mW")
        for k, s in ts.get("temps_c", {}).items():
            lines.append(f"- {k}: max {s['max']:.1f} C")
    if r["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r["warnings"]]
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_latency_vs_bprime(r: dict[str, Any]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    curve = r["bprime_curve"]
    if curve:
        x = [c["bprime"] for c in curve]
        ax.plot(x, [c["clip_ms"] for c in curve], "o-", label="ATFR clip (front + SGS + back)")
        ax.fill_between(x, [c["back"]["p90"] / r["config"]["batch"] + c["clip_ms"] - c["back"]["median"] /
                            r["config"]["batch"] for c in curve],
                        [c["clip_ms"] for c in curve], alpha=0.2, label="back p90 band")
        ax.plot(x, [c["back"]["median"] / r["config"]["batch"] for c in curve], "s--", ms=3, label="ATFR back only")
        f = r.get("fit")
        if f:
            ax.plot(x, [(f["slope"] * b + f["intercept"]) / r["config"]["batch"] for b in x], ":", color="gray",
                    label=f"linear fit of back (R$^2$={f['r2']:.3f})")
    if r.get("static"):
        ax.axhline(r["static"]["clip_ms"], color="red",
                   label=f"static model, front + back ({r['static']['clip_ms']:.1f} ms)")
    t = r.get("torch")
    if t and t.get("end_to_end"):
        tv = t["end_to_end"]["median"] / r["config"]["batch"]
        top = ax.get_ylim()[1]
        if curve and tv > 2.5 * top:  # keep the ATFR/static scale readable
            ax.text(0.99, 0.97, f"PyTorch eager: {tv:.1f} ms per clip (off scale)", color="purple", ha="right",
                    va="top", fontsize=8, transform=ax.transAxes)
        else:
            ax.axhline(tv, color="purple", ls="--", label=f"PyTorch eager ({tv:.1f} ms)")
    ax.set_xlabel("B' (bins kept by SGS)")
    ax.set_ylabel("latency per clip (ms, median)")
    ax.set_title(f"{r['model']['name']}: latency vs B' ({r['config']['backend']})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no B' curve (static export)", ha="center", va="center", transform=ax.transAxes)
    data = _png(fig)
    plt.close(fig)
    return data


def plot_bprime_hist(r: dict[str, Any]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    d = r.get("distribution")
    bins = max([s["bins"] for s in r["model"]["sgs"]] or [1])
    if d and d["counts"]:
        ks = [int(k) for k in d["counts"]]
        from matplotlib.ticker import MaxNLocator
        ax.bar(ks, list(d["counts"].values()), color="tab:blue")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        src = d["source"].split(" (")[0]
        ax.set_title(f"B' distribution: {src} (n={d['n']})", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no B' distribution (pass --videos DIR)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_title("B' distribution")
    ax.set_xlim(0.4, bins + 0.6)
    ax.set_xlabel("B'")
    ax.set_ylabel("clips")
    data = _png(fig)
    plt.close(fig)
    return data


def plot_stages(r: dict[str, Any]) -> bytes:
    """Stacked front / SGS / back per clip for each measured B' (and the static model)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(r["bprime_curve"]) + 3), 4))
    n = r["config"]["batch"]
    front = r["stages"]["front"]["median"] / n
    sgs = (r["stages"]["sgs"] or {}).get("median", 0.0) / n
    labels, fr, sg, bk = [], [], [], []
    for c in r["bprime_curve"]:
        labels.append(str(c["bprime"]))
        fr.append(front)
        sg.append(sgs)
        bk.append(c["back"]["median"] / n)
    if not r["bprime_curve"]:
        labels.append("e2e")
        fr.append(front)
        sg.append(sgs)
        bk.append(max(0.0, r["stages"]["end_to_end"]["median"] / n - front - sgs))
    if r.get("static"):
        labels.append("static")
        fr.append(r["static"]["front"]["median"] / n)
        sg.append(0.0)
        bk.append(r["static"]["back"]["median"] / n)
    x = list(range(len(labels)))
    ax.bar(x, fr, label="front", color="tab:blue")
    ax.bar(x, sg, bottom=fr, label="SGS", color="tab:orange")
    ax.bar(x, bk, bottom=[a + b for a, b in zip(fr, sg)], label="back", color="tab:green")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlabel("B'")
    ax.set_ylabel("ms per clip (median)")
    ax.set_title("stage breakdown")
    ax.legend(fontsize=8)
    data = _png(fig)
    plt.close(fig)
    return data


def check_outputs(out: str | Path, force: bool) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ATFRError(f"{p} exists and is not a directory")
    if not force:
        clash = [f for f in OUTPUT_FILES if (p / f).exists()]
        if clash:
            raise ATFRError(f"{p} already holds a bench report ({clash[0]} ...); pass --force to overwrite it")
    check_output_dir(p)  # a read-only folder fails now, not after minutes of timing
    return p


def write_report(r: dict[str, Any], out: str | Path, force: bool = False) -> dict[str, Path]:
    """Validate, then write report.json, report.md and the three PNGs atomically into ``out``."""
    p = check_outputs(out, force)
    validate_report(r)
    p.mkdir(parents=True, exist_ok=True)
    files = {
        "latency_vs_bprime.png": plot_latency_vs_bprime(r),
        "bprime_hist.png": plot_bprime_hist(r),
        "stages.png": plot_stages(r),
    }
    written = {}
    for name, data in files.items():
        write_bytes_atomic(p / name, data)
        written[name] = p / name
    write_text_atomic(p / "report.md", to_markdown(r))
    written["report.md"] = p / "report.md"
    write_text_atomic(p / "report.json", json.dumps(r, indent=2) + "\n")  # last: its presence = complete
    written["report.json"] = p / "report.json"
    return written
