"""``atfr info CHECKPOINT``: architecture, parameters, SGS layers and GFLOPs per B' (AdaFuse:
gated blocks, policy nets and static GFLOPs in both conventions, models/adafuse_report.py).

GFLOPs follow models/flops.py (multiply-adds of conv/linear, per clip, fvcore/PySlowFast
convention) at the model's own input (``input_spec``: num_frames x crop_size; SlowFast slow
pathway T // alpha). Rows cover every B' = 1..B (SlowFast: every (B'_slow, B'_fast) pair).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="official .pyth or atfr checkpoint")
    parser.add_argument("--config", default=None, help="config YAML (official dump or compact); "
                        "overrides the checkpoint's embedded cfg")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _arch_description(model: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    arch = str(cfg["MODEL"]["ARCH"]).lower()
    d: dict[str, Any] = {"arch": arch, "class": type(model).__name__,
                         "num_classes": int(cfg["MODEL"]["NUM_CLASSES"])}
    if arch == "x3d":
        d["variant"] = getattr(model, "variant", None)
        d["stage_widths"] = list(getattr(model, "stage_dims", []))
        d["stage_depths"] = list(getattr(model, "stage_depths", []))
    else:
        d["depth"] = int(cfg["RESNET"]["DEPTH"])
    if arch == "slowfast":
        sf = cfg["SLOWFAST"]
        d.update(alpha=int(sf["ALPHA"]), beta_inv=int(sf["BETA_INV"]),
                 width_per_group=int(cfg["RESNET"]["WIDTH_PER_GROUP"]))
    d["sgs_stage"] = str(cfg["MODEL"]["TEMPORAL_LAYER_STAGE"])
    return d


def collect(path: str, config: str | None = None) -> dict[str, Any]:
    """Everything ``atfr info`` reports, as a JSON-friendly dict."""
    from atfr.models.checkpoint import load_checkpoint
    from atfr.models.flops import default_input_shapes, flops_report

    lm = load_checkpoint(path, config)
    model = lm.model
    from atfr.models.adafuse_report import info_fields, is_adafuse
    if is_adafuse(model):  # no SGS: policy nets instead (models/adafuse_report.py)
        return {"checkpoint": str(path), "format": lm.source_format, "meta": _plain(lm.meta),
                "input": model.input_spec.to_dict(), "sgs": [], **info_fields(model)}
    shapes = default_input_shapes(model)
    rep = flops_report(model, shapes)
    s = rep["summary"]
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sgs = []
    for spec, b in zip(model.sgs_specs, s["num_bins"]):
        d = spec.to_dict()
        d["bins_effective"] = int(b)  # num_bins -1 means B = T of the layer's input
        sgs.append(d)
    return {
        "checkpoint": str(path),
        "format": lm.source_format,
        "meta": _plain(lm.meta),
        "architecture": _arch_description(model, lm.cfg),
        "parameters": int(n_params),
        "trainable_parameters": int(n_train),
        "input": model.input_spec.to_dict(),
        "input_shapes": s["input_shapes"],
        "sgs": sgs,
        "gflops": {
            "static": s["static"],
            "front": s["front"],
            "sgs_embed": s["sgs_embed"],
            "at_max_bprime": s["total"],
            "min": min(r["total"] for r in rep["table"]),
        },
        "gflops_per_bprime": rep["table"],
    }


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _text(info: dict[str, Any]) -> str:
    a = info["architecture"]
    if a["arch"] == "adafuse":
        from atfr.models.adafuse_report import info_text
        return "\n".join([
            f"checkpoint    {info['checkpoint']} ({info['format']})",
            f"architecture  adafuse ({a['class']}), {a['num_classes']} classes",
            f"parameters    {info['parameters']:,} ({info['parameters'] / 1e6:.2f} M)",
            f"input         {info['input']['num_frames']} frames x {info['input']['crop_size']}^2 crop",
            *info_text(info)])
    extra = ", ".join(f"{k} {v}" for k, v in a.items() if k not in ("arch", "class", "num_classes"))
    lines = [
        f"checkpoint    {info['checkpoint']} ({info['format']})",
        f"architecture  {a['arch']} ({a['class']}), {a['num_classes']} classes; {extra}",
        f"parameters    {info['parameters']:,} ({info['parameters'] / 1e6:.2f} M)",
        f"input         {info['input']['num_frames']} frames x {info['input']['crop_size']}^2 crop "
        f"-> {' + '.join(str(s) for s in info['input_shapes'])}",
    ]
    if not info["sgs"]:
        lines.append("SGS           none (static model)")
    for s in info["sgs"]:
        lines.append(f"SGS           {s['name']}: pathway {s['pathway']}, C={s['channels']}, L={s['latent_dim']}, "
                     f"B={s['bins_effective']}{' (=T)' if s['num_bins'] == -1 else ''}, distance {s['distance']}, "
                     f"kernel {s['kernel']}, drop_bins {s['drop_bins']}, {'ReLU' if s['use_relu'] else 'Swish'}")
    g = info["gflops"]
    lines.append(f"GFLOPs        static {g['static']:.3f}; ATFR = front {g['front']:.3f} + SGS(B') + back(B'), "
                 f"{g['min']:.3f} .. {g['at_max_bprime']:.3f}")
    if info["sgs"]:
        names = [s["name"] for s in info["sgs"]]
        lines.append("  " + "  ".join(f"B'[{n}]" for n in names) + "     sgs      back     total  vs static")
        for r in info["gflops_per_bprime"]:
            bp = "  ".join(f"{b:>{len(n) + 4}d}" for b, n in zip(r["bprime"], names))
            lines.append(f"  {bp}  {r['sgs']:7.3f}  {r['back']:8.3f}  {r['total']:8.3f}  {r['ratio']:8.1%}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = collect(args.checkpoint, args.config)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(_text(info))
    return 0
