"""An AdaFuse export against its PyTorch model: the clip graph, and the online graph(s) frame by frame.

Per clip (export/verify.py's seeded clips and ``--input`` clips), the torch model gives the
reference logits, frame logits and policy, and each policy entry's margin (best minus second-best
log-probability). Then:

* ``model.onnx`` (clip graph): the policy of every gated block identical, top-1 identical, logits
  and probabilities within the bound below.
* ``online.onnx`` / ``online_gathered.onnx`` where the export has them, run frame by frame from a
  zero state (AdaFuseOnlineRunner.run_clip): the same policy per frame, frame logits and the clip
  prediction (their mean, as TSN_Gate) within the bound, the same top-1.

Policies and top-1 are exact. The one exception is a near tie: an entry whose torch margin is
below the float bound may legitimately flip under another summation order, and everything after
it changes with it. A clip whose policy differs only in such entries (or whose top-2 logits are
within twice the logits bound) is counted as a near tie, reported, and not compared further; any
other difference fails.

The bound (as tests/tolerances.py derives it): two fp32 evaluations that sum in other orders
differ, per reduction of length K, by at most lambda * sqrt(K) * u relative (Higham & Mary, SIAM
J. Sci. Comput. 41(5), 2019; lambda = 8: failure probability < 1e-9), and through D reductions the
independent errors add in quadrature: rtol = lambda * u * sqrt(D * K_max), times the magnitude of
the compared values (max |value|, at least 1). Softmax halves it (max|dp| <= max|dz| / 2).
Errors are computed with polygraphy's comparator (export/verify.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atfr.errors import ATFRError
from atfr.models.checkpoint import LoadedModel
from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner
from atfr.runtime.manifest import Manifest
from atfr.runtime.pipeline import softmax

from .verify import StageStat, update_stat, format_stats

U32 = 2.0 ** -24  # fp32 unit roundoff
LAMBDA = 8.0  # Higham–Mary confidence parameter
GRAPH_TITLES = {"model": "clip graph", "online": "online graph", "online_gathered": "gathered online graph"}


def network_rtol(model: torch.nn.Module) -> float:
    """lambda * u * sqrt(D * K_max) over the model's Conv2d/Linear reductions (module docstring)."""
    ks = [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return LAMBDA * U32 * math.sqrt(max(1, len(ks)) * max(ks, default=1))


def magnitude(*xs: np.ndarray) -> float:
    return max([1.0] + [float(np.max(np.abs(x))) for x in xs])


@dataclass
class TorchRef:
    logits: np.ndarray  # [K]
    frame_logits: np.ndarray  # [T, K]
    policy: list[np.ndarray]  # per gated block [T, C]
    margins: list[np.ndarray]  # per gated block [T, C]: best minus second-best log-probability
    logprob_max: float


def torch_reference(model: torch.nn.Module, clip: np.ndarray) -> TorchRef:
    """One clip [1,3,T,S,S] through the torch model; the policy nets' log-probabilities are caught
    with forward hooks (recomputed from the hook's inputs: the policy net is small)."""
    blocks = model.gated_blocks()
    caught: list[torch.Tensor | None] = [None] * len(blocks)

    def hook(i: int):
        def fn(mod, args, _out):
            caught[i] = mod.log_probs(*args)
        return fn

    handles = [b.policy_net.register_forward_hook(hook(i)) for i, (_, b) in enumerate(blocks)]
    try:
        with torch.inference_mode():
            out = model.run(torch.from_numpy(np.ascontiguousarray(clip)))
    finally:
        for h in handles:
            h.remove()
    t = clip.shape[2]
    margins, lp_max = [], 0.0
    for lp in caught:
        top2 = lp.topk(2, dim=-1).values
        margins.append((top2[..., 0] - top2[..., 1]).reshape(1, t, -1)[0].double().numpy())
        lp_max = max(lp_max, float(lp.abs().max()))
    return TorchRef(out.logits[0].double().numpy(), out.frame_logits[0].double().numpy(),
                    [p[0].numpy().astype(np.int64) for p in out.policy], margins, lp_max)


@dataclass
class AdaFuseGraphReport:
    graph: str  # "model", "online", "online_gathered"
    provider: str | None = None
    backend: str = "onnxruntime"
    clips: int = 0
    policy_agree: int = 0
    top1_agree: int = 0
    near_ties: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, StageStat] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No mismatch, every output within its bound, and at least one clip compared in full
        (near ties alone verify nothing)."""
        return self.policy_agree > 0 and not self.mismatches and all(s.ok for s in self.stats.values())

    def to_json(self) -> dict[str, Any]:
        return {"family": "adafuse", "graph": self.graph, "backend": self.backend, "provider": self.provider,
                "clips": self.clips, "policy_agree": self.policy_agree, "top1_agree": self.top1_agree,
                "near_ties": self.near_ties, "mismatches": self.mismatches, "ok": self.ok,
                "stages": {k: {"max_abs": v.max_abs, "max_rel": v.max_rel, "limit": v.limit, "kind": v.kind,
                               "ok": v.ok} for k, v in self.stats.items()}}


@dataclass
class Bounds:
    logits_atol: float  # logits and frame logits
    policy_margin: float  # a policy entry whose torch margin is at most this is a near tie

    @property
    def probs_atol(self) -> float:
        return 0.5 * self.logits_atol


def derive_bounds(model: torch.nn.Module, refs: list[TorchRef], logits_atol: float | None) -> Bounds:
    rtol = network_rtol(model)
    mag = magnitude(*[r.logits for r in refs], *[r.frame_logits for r in refs])
    return Bounds(rtol * mag if logits_atol is None else float(logits_atol),
                  rtol * max([1.0] + [r.logprob_max for r in refs]))


def _policy_check(rep: AdaFuseGraphReport, k: int, got: list[np.ndarray], ref: TorchRef, blocks: list[str],
                  bounds: Bounds) -> bool:
    """True when the policy is identical; otherwise records a near tie or a mismatch (False)."""
    diffs = []
    for name, g, want, margin in zip(blocks, got, ref.policy, ref.margins):
        g = np.asarray(g)
        if g.shape != want.shape:
            diffs.append({"block": name, "shape": list(g.shape), "want": list(want.shape)})
            continue
        bad = g != want
        if bad.any():
            diffs.append({"block": name, "entries": int(bad.sum()), "of": int(bad.size),
                          "max_margin": float(margin[bad].max())})  # the flip least like a tie
    if len(got) != len(blocks):
        diffs.append({"blocks": len(got), "want": len(blocks)})
    if not diffs:
        rep.policy_agree += 1
        return True
    if all("max_margin" in d and d["max_margin"] <= bounds.policy_margin for d in diffs):
        rep.near_ties.append({"clip": k, "what": "policy", "blocks": diffs, "bound": bounds.policy_margin})
    else:
        rep.mismatches.append({"clip": k, "what": "policy", "blocks": diffs})
    return False


def _top1_check(rep: AdaFuseGraphReport, k: int, ref_logits: np.ndarray, got_logits: np.ndarray,
                bounds: Bounds) -> None:
    want, got = int(np.argmax(ref_logits)), int(np.argmax(got_logits))
    if want == got:
        rep.top1_agree += 1
        return
    top2 = np.sort(ref_logits)[-2:]
    entry = {"clip": k, "what": "top1", "torch": want, "backend": got, "torch_gap": float(top2[1] - top2[0])}
    (rep.near_ties if entry["torch_gap"] <= 2 * bounds.logits_atol else rep.mismatches).append(entry)


def verify_clip_graph(runner: AdaFuseClipRunner, clips: list[np.ndarray], refs: list[TorchRef],
                      bounds: Bounds, provider: str | None) -> AdaFuseGraphReport:
    rep = AdaFuseGraphReport("model", provider)
    for k, (clip, ref) in enumerate(zip(clips, refs)):
        rep.clips += 1
        res, extra = runner.infer(clip)
        if not _policy_check(rep, k, extra["policy"], ref, runner.blocks, bounds):
            continue
        update_stat(rep, "clip.logits", ref.logits, res.logits.astype(np.float64), bounds.logits_atol, "abs")
        update_stat(rep, "clip.probs", softmax(ref.logits), res.probs.astype(np.float64), bounds.probs_atol, "abs")
        _top1_check(rep, k, ref.logits, res.logits, bounds)
    return rep


def verify_online_graph(runner: AdaFuseOnlineRunner, clips: list[np.ndarray], refs: list[TorchRef],
                        bounds: Bounds, provider: str | None) -> AdaFuseGraphReport:
    rep = AdaFuseGraphReport(runner.graph, provider)
    for k, (clip, ref) in enumerate(zip(clips, refs)):
        rep.clips += 1
        frame_logits, policy = runner.run_clip(clip)  # from a zero state, one frame at a time
        if not _policy_check(rep, k, [p[0] for p in policy], ref, runner.blocks, bounds):
            continue
        fl = frame_logits[0].astype(np.float64)
        update_stat(rep, "frame.logits", ref.frame_logits, fl, bounds.logits_atol, "abs")
        update_stat(rep, "clip.logits (frame mean)", ref.logits, fl.mean(0), bounds.logits_atol, "abs")
        _top1_check(rep, k, ref.logits, fl.mean(0), bounds)
    return rep


def require_adafuse_match(lm: LoadedModel, m: Manifest, ckpt: str) -> None:
    from atfr.models.adafuse_report import describe, is_adafuse

    if not is_adafuse(lm.model):
        raise ATFRError(f"{ckpt} is not an AdaFuse model; {m.root} is an AdaFuse export")
    ada, a = m.raw["adafuse"], describe(lm.model)
    got = (a["num_classes"], a["variant"], a["depth"], a["gated_blocks"])
    want = (m.num_classes, ada.get("variant"), ada.get("depth"), list(ada["policy_blocks"]))
    if got != want:
        raise ATFRError(f"the checkpoint ({got[0]} classes, {got[1]}-R{got[2]}, {len(got[3])} gated blocks) does not "
                        f"match the export ({want[0]} classes, {want[1]}-R{want[2]}, {len(want[3])} gated blocks)")


def verify_adafuse(lm: LoadedModel, outdir: str | Path, clips: list[np.ndarray], providers: str | None = None,
                   logits_atol: float | None = None) -> tuple[list[AdaFuseGraphReport], Bounds]:
    """Torch references once, then the clip graph and every online graph the export has."""
    model = lm.model.eval()
    refs = [torch_reference(model, c) for c in clips]
    bounds = derive_bounds(model, refs, logits_atol)
    runner = AdaFuseClipRunner.load(outdir, "onnxruntime", providers)
    provider = providers or "cpu"
    reports = [verify_clip_graph(runner, clips, refs, bounds, provider)]
    for graph in AdaFuseOnlineRunner.GRAPHS:
        if graph in runner.manifest.graphs:
            on = AdaFuseOnlineRunner.load(outdir, providers, graph=graph)
            reports.append(verify_online_graph(on, clips, refs, bounds, provider))
    return reports, bounds


def format_adafuse_report(rep: AdaFuseGraphReport) -> str:
    name = f"{rep.backend}/{rep.provider}" if rep.provider else rep.backend
    file = f"{rep.graph}.onnx"
    ties = f", {len(rep.near_ties)} near tie(s)" if rep.near_ties else ""
    lines = [f"[{name} {file}, {GRAPH_TITLES.get(rep.graph, rep.graph)}] clips {rep.clips}: policy agree "
             f"{rep.policy_agree}/{rep.clips}, top-1 agree {rep.top1_agree}/{rep.clips}{ties} -> "
             f"{'PASS' if rep.ok else 'FAIL'}"]
    lines += format_stats(rep.stats.values())
    for mm in rep.mismatches[:5]:
        lines.append(f"  mismatch on clip {mm['clip']}: {_describe(mm)}")
    for nt in rep.near_ties[:5]:
        lines.append(f"  near tie on clip {nt['clip']} (not compared further): {_describe(nt)}")
    if rep.clips and not rep.policy_agree and not rep.mismatches:
        lines.append("  no clip compared in full (near ties only): add clips with --clips N or --input")
    return "\n".join(lines)


def _describe(mm: dict[str, Any]) -> str:
    if mm["what"] == "top1":
        return f"top-1 torch {mm['torch']} vs {mm['backend']} (torch top-2 gap {mm['torch_gap']:.2e})"
    parts = []
    for d in mm["blocks"]:
        if "entries" in d:
            parts.append(f"{d['block']} {d['entries']}/{d['of']} policy entries differ "
                         f"(torch margins up to {d['max_margin']:.2e})")
        else:
            parts.append(f"policy shape {d}")
    return "; ".join(parts)
