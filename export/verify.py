"""Stage-by-stage comparison of an export's backends against the PyTorch reference.

For every clip: front outputs (feat, dist), B' per SGS layer (must agree exactly: it selects the
back graph's input length), the back graph fed the SAME SGS output as torch (isolates the back
graph's own error), and end to end. End-to-end logits carry the SGS layer's amplification of
float noise in the distances (weights move by ~2B x relative error of Δ), so they get their own
tolerance. Errors are computed with polygraphy's comparator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atfr.errors import ATFRError
from atfr.models.checkpoint import LoadedModel
from atfr.runtime.manifest import Manifest
from atfr.runtime.pipeline import Pipeline
from atfr.runtime.sgs_numpy import sgs_step

from .exporter import example_clips, structured_clips


@dataclass
class Tolerances:
    stage_rtol: float = 1e-3  # front outputs, relative to the tensor's max |value|
    back_atol: float = 1e-4  # back graph with identical input
    logits_atol: float = 5e-3  # end to end (includes SGS float-noise amplification)
    probs_atol: float = 1e-3


@dataclass
class StageStat:
    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0  # relative to max |reference|
    limit: float = 0.0
    kind: str = "abs"

    @property
    def ok(self) -> bool:
        v = self.max_rel if self.kind == "rel" else self.max_abs
        return bool(v <= self.limit)


@dataclass
class BackendReport:
    backend: str
    clips: int = 0
    bprime_agree: int = 0
    bprime_mismatches: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, StageStat] = field(default_factory=dict)
    top1_agree: int = 0
    provider: str | None = None  # ONNX Runtime's execution provider (--providers); None for TensorRT

    @property
    def ok(self) -> bool:
        return self.bprime_agree == self.clips and all(s.ok for s in self.stats.values())

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "provider": self.provider, "clips": self.clips, "bprime_agree": self.bprime_agree,
                "top1_agree": self.top1_agree, "ok": self.ok, "bprime_mismatches": self.bprime_mismatches,
                "stages": {k: {"max_abs": v.max_abs, "max_rel": v.max_rel, "limit": v.limit, "kind": v.kind,
                               "ok": v.ok} for k, v in self.stats.items()}}


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from polygraphy.comparator import IterationResult
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL  # we print our own table
    if a.shape != b.shape:
        return float("inf"), float("inf")
    r = SimpleCompareFunc(atol=np.inf, rtol=np.inf, check_shapes=True)(
        IterationResult({"x": a}, runner_name="torch"), IterationResult({"x": b}, runner_name="backend"))["x"]
    scale = float(np.abs(a).max()) or 1.0
    return float(r.max_absdiff), float(r.max_absdiff) / scale


def update_stat(rep: Any, name: str, ref: np.ndarray, got: np.ndarray, limit: float, kind: str) -> None:
    """Fold one comparison into ``rep.stats`` (BackendReport, or export/adafuse_verify.py's report)."""
    ab, rel = _compare(ref, got)
    st = rep.stats.setdefault(name, StageStat(name, limit=limit, kind=kind))
    st.max_abs = max(st.max_abs, ab)
    st.max_rel = max(st.max_rel, rel)


def verification_clips(lm: LoadedModel, manifest: Manifest, n_random: int, extra: list[list[np.ndarray]]):
    frames, size = manifest.input.num_frames, manifest.input.crop_size
    clips = [[c.numpy() for c in cl] for cl in structured_clips(lm.model, frames, size)]
    for i in range(n_random):
        clips.append([c.numpy() for c in example_clips(lm.model, frames, size, seed=100 + i)])
    return clips + extra


def verify_backend(lm: LoadedModel, pl: Pipeline, clips: list[list[np.ndarray]], tol: Tolerances) -> BackendReport:
    model = lm.model.eval()
    model.batch_independent = True
    m = pl.manifest
    rep = BackendReport(pl.backend, provider=getattr(pl, "provider", None))
    layers = model.ts_layer_map()
    for clip in clips:
        rep.clips += 1
        with torch.inference_mode():
            tin = [torch.from_numpy(c) for c in clip]
            feats, dists = model.front_with_distances(tin)
            ref_logits, ref_bp = model.forward_with_bprime(tin, guard=True)
        fo = pl.run_front(pl.check_inputs(clip))
        for p in range(m.num_pathways):
            if f"feat{p}" in fo:
                update_stat(rep, f"front.feat{p}", feats[p].numpy(), fo[f"feat{p}"], tol.stage_rtol, "rel")
            if p in layers and f"dist{p}" in fo:
                update_stat(rep, f"front.dist{p}", dists[p].numpy(), fo[f"dist{p}"], tol.stage_rtol, "rel")
        (feeds, bp), = pl.run_sgs(fo)
        want = tuple(int(v) for v in ref_bp[0].tolist())
        if tuple(bp) == want:
            rep.bprime_agree += 1
        else:
            rep.bprime_mismatches.append({"clip": rep.clips - 1, "torch": list(want), "backend": list(bp)})
        # Back graph alone, fed torch's own SGS output (numpy SGS on torch's front outputs).
        ref_in = {}
        for p in range(m.num_pathways):
            if p in layers:
                s = layers[p].spec
                ref_in[f"sgs{p}"] = sgs_step(feats[p].numpy(), dists[p].numpy(), s.num_bins, s.kernel,
                                             s.drop_bins).output
            else:
                ref_in[f"feat{p}"] = feats[p].numpy()
        with torch.inference_mode():
            ref_back = model.back([torch.from_numpy(ref_in[m.back_input_name(p)]) for p in range(m.num_pathways)])
        update_stat(rep, "back(same input).logits", ref_back.numpy(), pl.run_back(ref_in), tol.back_atol, "abs")
        res = pl.infer(clip)[0]
        update_stat(rep, "end_to_end.logits", ref_logits[0].numpy(), res.logits, tol.logits_atol, "abs")
        ref_probs = torch.softmax(ref_logits[0], 0).numpy()
        update_stat(rep, "end_to_end.probs", ref_probs, res.probs, tol.probs_atol, "abs")
        rep.top1_agree += int(int(np.argmax(ref_probs)) == res.top(1)[0])
    return rep


def format_report(rep: BackendReport) -> str:
    name = f"{rep.backend}/{rep.provider}" if rep.provider else rep.backend
    lines = [f"[{name}] clips {rep.clips}: B' agree {rep.bprime_agree}/{rep.clips}, "
             f"top-1 agree {rep.top1_agree}/{rep.clips} -> {'PASS' if rep.ok else 'FAIL'}"]
    lines += format_stats(rep.stats.values())
    for mm in rep.bprime_mismatches[:5]:
        lines.append(f"  B' mismatch on clip {mm['clip']}: torch {mm['torch']} vs {mm['backend']}")
    return "\n".join(lines)


def format_stats(stats) -> list[str]:
    """One line per compared stage: max errors against its limit (also the AdaFuse report's)."""
    lines = []
    for s in stats:
        lim = f"rel <= {s.limit:g}" if s.kind == "rel" else f"abs <= {s.limit:g}"
        lines.append(f"  {s.name:28s} max abs {s.max_abs:.3e}  max rel {s.max_rel:.3e}  ({lim}) "
                     f"{'ok' if s.ok else 'FAIL'}")
    return lines


def require_match(lm: LoadedModel, manifest: Manifest) -> None:
    if getattr(lm.model, "family", None) == "adafuse":
        raise ATFRError(f"the checkpoint is an AdaFuse model; {manifest.root} is an ATFR export")
    want = manifest.num_classes
    got = int(lm.cfg["MODEL"]["NUM_CLASSES"])
    if want != got or lm.model.num_pathways != manifest.num_pathways:
        raise ATFRError(f"the checkpoint ({got} classes, {lm.model.num_pathways} pathway(s)) does not match the "
                        f"export ({want} classes, {manifest.num_pathways} pathway(s))")
