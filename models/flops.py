"""GFLOPs of a ``VideoNet`` in the fvcore/PySlowFast convention, split into front, SGS and back.

Convention (the one published video GFLOPs use): one multiply-add = 1 flop, counted for
Conv{1,2,3}d and Linear only (bias, BN, activations, pooling and elementwise ops are free), per
clip (batch 1). SGS costs its embedding net (two Linear layers over T frames, counted by the
same hooks) plus the aggregation bmm ``K[B',T] @ X[T, C*H*W]`` = B'*T*C*H*W. fvcore's own
``FlopCountAnalysis`` additionally counts BatchNorm (1-2 per element) and adaptive pooling;
PySlowFast's published figures predate that, hence we leave them out.

The split model is run with tensors of the right shapes and forward hooks on the conv/linear
modules count MACs from the output shapes. The back for a given B' is the back fed with tensors
whose SGS pathways have T' = B'. By default everything runs on the ``meta`` device (shapes only,
no arithmetic): a model copy moved to ``meta`` costs no compute, so the full B' table of a
SlowFast R50 takes about a second. ``device="cpu"`` runs real zero tensors instead.

SlowFast: both pathways carry an SGS layer whose B' varies independently, and the back's cost
depends on both (s2_fuse pads the slow pathway to max(T'_slow, ceil(T'_fast/alpha))). So
:func:`gflops_vs_bprime` returns the full 2-D table, flattened: one row per (B'_slow, B'_fast)
with B'_slow in 1..T_slow and B'_fast in 1..T_fast, slow-major.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Sequence

import torch
import torch.nn as nn

from .base import VideoNet

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _module_macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    k = 1
    for v in m.kernel_size:  # type: ignore[union-attr]
        k *= int(v)
    return out.numel() * (m.in_channels // m.groups) * k  # type: ignore[union-attr]


class MacCounter:
    """Context manager: forward hooks on every Conv/Linear of ``model``; ``.macs`` accumulates."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.macs = 0
        self._handles: list[Any] = []

    def _hook(self, m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        self.macs += _module_macs(m, out)

    def __enter__(self) -> "MacCounter":
        self._handles = [m.register_forward_hook(self._hook) for m in self.model.modules()
                         if isinstance(m, _COUNTED)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def take(self) -> int:
        """Return the MACs counted so far and reset to 0."""
        v, self.macs = self.macs, 0
        return v


def default_input_shapes(model: VideoNet) -> list[tuple[int, int, int, int, int]]:
    """[1,3,T,S,S] per pathway from ``model.input_spec``; SlowFast slow = T // alpha first."""
    spec = model.input_spec
    t, s = int(spec.num_frames), int(spec.crop_size)
    if spec.slowfast_alpha:
        return [(1, 3, t // spec.slowfast_alpha, s, s), (1, 3, t, s, s)]
    return [(1, 3, t, s, s)]


def _norm_shapes(model: VideoNet, input_shapes: Sequence[Sequence[int]] | None) -> list[tuple[int, ...]]:
    if input_shapes is None:
        return list(default_input_shapes(model))
    if input_shapes and isinstance(input_shapes[0], int):  # a single shape given bare
        shapes = [tuple(int(v) for v in input_shapes)]  # type: ignore[union-attr]
    else:
        shapes = [tuple(int(v) for v in s) for s in input_shapes]
    out = []
    for s in shapes:
        if len(s) == 4:
            s = (1,) + s
        if len(s) != 5:
            raise ValueError(f"input shape {s} is not [C,T,H,W] or [N,C,T,H,W]")
        out.append((1,) + s[1:])  # GFLOPs are per clip
    return out


def _strip_uncounted(model: nn.Module) -> None:
    """Swap BatchNorm for Identity in the private copy: it keeps shapes and is not counted, and
    on ``meta`` its Python-level decomposition dominates the run time (~3x faster without)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())


class _Analysis:
    """Front, SGS embedding and per-B' back MACs of one model and input, computed lazily."""

    def __init__(self, model: VideoNet, input_shapes: Sequence[Sequence[int]] | None, device: str):
        self.shapes = _norm_shapes(model, input_shapes)
        self.device = torch.device(device)
        # Count on a private copy so hooks, eval mode and the meta move never touch the caller's
        # model (train/eval state, parameters, running stats all stay as they were).
        m = copy.deepcopy(model)
        _strip_uncounted(m)
        self.model: VideoNet = m.to(self.device).eval()  # type: ignore[assignment]
        self.layers = sorted(self.model.ts_layer_map().items())
        self._back_cache: dict[tuple[int, ...], int] = {}
        with torch.no_grad(), MacCounter(self.model) as mc:
            xs = [torch.zeros(s, device=self.device) for s in self.shapes]
            self.feats = self.model.front(xs)
            self.front_macs = mc.take()
            self.embed_macs = 0
            for p, ts in self.layers:
                ts.embed(self.feats[p])
                self.embed_macs += mc.take()
        # Per SGS layer: (T, B, C*H*W) of its input.
        self.t_in = [int(self.feats[p].shape[2]) for p, _ in self.layers]
        self.num_bins = [ts.spec.bins_for(t) for (_, ts), t in zip(self.layers, self.t_in)]
        self.chw = [int(self.feats[p].shape[1] * self.feats[p].shape[3] * self.feats[p].shape[4])
                    for p, _ in self.layers]

    def aggregate_macs(self, bprime: Sequence[int]) -> int:
        return sum(b * t * chw for b, t, chw in zip(bprime, self.t_in, self.chw))

    def back_macs(self, tprime: Sequence[int]) -> int:
        """Back MACs when the SGS pathways carry tprime frames (static: their full T)."""
        key = tuple(int(v) for v in tprime)
        if key not in self._back_cache:
            xs = list(self.feats)
            for (p, _), t in zip(self.layers, key):
                n, c, _, h, w = xs[p].shape
                xs[p] = torch.zeros((n, c, t, h, w), device=self.device)
            with torch.no_grad(), MacCounter(self.model) as mc:
                self.model.back(xs)
                self._back_cache[key] = mc.take()
        return self._back_cache[key]

    def check_bprime(self, bprime: Sequence[int]) -> list[int]:
        bp = [int(v) for v in bprime]
        if len(bp) != len(self.layers):
            raise ValueError(f"need one B' per SGS layer ({len(self.layers)}), got {bp}")
        for b, bmax, (_, ts) in zip(bp, self.num_bins, self.layers):
            if not 1 <= b <= bmax:
                raise ValueError(f"B'={b} for {ts.spec.name} is outside 1..{bmax}")
        return bp

    def row(self, bprime: Sequence[int]) -> dict[str, Any]:
        bp = self.check_bprime(bprime)
        sgs = self.embed_macs + self.aggregate_macs(bp)
        back = self.back_macs(bp)
        return {
            "bprime": bp,
            "front": self.front_macs / 1e9,
            "sgs": sgs / 1e9,
            "back": back / 1e9,
            "total": (self.front_macs + sgs + back) / 1e9,
        }

    @property
    def static_macs(self) -> int:
        return self.front_macs + self.back_macs(self.t_in)


def count_gflops(model: VideoNet, input_shapes: Sequence[Sequence[int]] | None = None,
                 bprime: Sequence[int] | int | None = None, device: str = "meta") -> dict[str, Any]:
    """GFLOPs of ``model`` for one clip.

    input_shapes: one [C,T,H,W] or [N,C,T,H,W] per pathway (N is ignored: per clip); default
    from ``model.input_spec``. bprime: B' per SGS layer (in ts_layer_map order; an int for
    single-SGS models); default B (no bin dropped).

    Returns ``front``, ``sgs`` (embedding + aggregation at ``bprime``), ``sgs_embed``, ``back``
    (at ``bprime``), ``total`` = front + sgs + back, and ``static``: the same network without SGS
    at full temporal resolution (front + back(T)). Also ``bprime``, ``num_bins``, ``layers``
    (SGS layer names) and ``input_shapes``. Static models: sgs = 0, total = static.
    """
    a = _Analysis(model, input_shapes, device)
    if bprime is None:
        bp = list(a.num_bins)
    else:
        bp = [bprime] if isinstance(bprime, int) else list(bprime)
    row = a.row(bp)
    return {
        **row,
        "sgs_embed": a.embed_macs / 1e9,
        "static": a.static_macs / 1e9,
        "num_bins": list(a.num_bins),
        "layers": [ts.spec.name for _, ts in a.layers],
        "input_shapes": [list(s) for s in a.shapes],
    }


def gflops_vs_bprime(model: VideoNet, input_shapes: Sequence[Sequence[int]] | None = None,
                     device: str = "meta") -> list[dict[str, Any]]:
    """One row per B' combination: {bprime, front, sgs, back, total, static, ratio}.

    One SGS layer: B' = 1..B. Several (SlowFast): the full product of 1..B_p per layer, in
    ts_layer_map order, first layer slowest-varying (see the module doc). Static models: one row
    with bprime [] (total = static).
    """
    return flops_report(model, input_shapes, device)["table"]


def flops_report(model: VideoNet, input_shapes: Sequence[Sequence[int]] | None = None,
                 device: str = "meta") -> dict[str, Any]:
    """:func:`count_gflops` at B' = B (``summary``) and :func:`gflops_vs_bprime` (``table``) from
    one analysis (the front runs once)."""
    a = _Analysis(model, input_shapes, device)
    static = a.static_macs / 1e9
    summary = {
        **a.row(a.num_bins),
        "sgs_embed": a.embed_macs / 1e9,
        "static": static,
        "num_bins": list(a.num_bins),
        "layers": [ts.spec.name for _, ts in a.layers],
        "input_shapes": [list(s) for s in a.shapes],
    }
    table = []
    for bp in itertools.product(*[range(1, b + 1) for b in a.num_bins]):
        r = a.row(list(bp))
        r["static"] = static
        r["ratio"] = r["total"] / static if static else 0.0
        table.append(r)
    return {"summary": summary, "table": table}
