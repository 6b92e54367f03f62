"""What ``atfr info`` and ``atfr infer`` report for an AdaFuse model (JSON-friendly dicts)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .adafuse import AdaFuseTSN
from atfr.runtime.adafuse_gflops import clip_report

from .adafuse_flops import AdaFuseCounter, static_report


def is_adafuse(model: Any) -> bool:
    return isinstance(model, AdaFuseTSN)


def describe(model: AdaFuseTSN) -> dict[str, Any]:
    ada = model.ada
    return {
        "arch": "adafuse",
        "class": type(model).__name__,
        "num_classes": int(model.new_fc.out_features),
        "variant": "TSM" if ada["shift"] else "TSN",
        "depth": model.depth,
        "gated_blocks": [n for n, _ in model.gated_blocks()],
        "shared_policy_net": bool(ada["shared_policy_net"]),
        "shift_div": int(ada["shift_div"]) if ada["shift"] else None,
        "policy": "hard: first maximum of the policy log-probabilities (0 skip, 1 reuse, 2 keep)",
    }


def info_fields(model: AdaFuseTSN) -> dict[str, Any]:
    """Architecture, parameters (unique tensors: shared policy FCs once) and static GFLOPs per clip."""
    spec = model.input_spec
    policy_params = {id(p) for _, b in model.gated_blocks() for p in b.policy_net.parameters()}
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "architecture": describe(model),
        "parameters": int(n_params),
        "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "parameters_policy_nets": int(sum(p.numel() for p in model.parameters() if id(p) in policy_params)),
        "input_shapes": [[1, 3, int(spec.num_frames), int(spec.crop_size), int(spec.crop_size)]],
        "gflops": static_report(model),
    }


def info_text(info: dict[str, Any]) -> list[str]:
    a, g = info["architecture"], info["gflops"]
    return [
        f"AdaFuse       {a['variant']}-R{a['depth']}, {len(a['gated_blocks'])} gated blocks "
        f"({a['gated_blocks'][0] if a['gated_blocks'] else '-'} .. {a['gated_blocks'][-1] if a['gated_blocks'] else '-'})"
        f", policy FCs {'shared' if a['shared_policy_net'] else 'per block'} "
        f"({info['parameters_policy_nets'] / 1e6:.2f} M parameters)",
        f"GFLOPs        static ({a['variant']} twin without policy nets, conv+linear MACs) {g['static']:.3f}; "
        f"policy nets {g['policy_nets']:.3f}",
        f"              official convention (thop, as the paper): TSN {g['static_official']:.3f}, "
        f"AdaFuse all-keep {g['dense_official']:.3f}; per clip the policy lowers it (atfr infer --json)",
    ]


def clip_fields(model: AdaFuseTSN, x: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
    """One clip [1,3,T,H,W]: logits and the extra JSON fields (policy per gated block [T][C], gflops)."""
    with torch.inference_mode():
        out = model.run(x)
    policy = [p[0].numpy().astype(np.int64) for p in out.policy]
    counter = AdaFuseCounter(model, int(x.shape[-1]))
    extra = clip_report(policy, counter.base_per_frame, counter.convs, int(x.shape[2]))
    extra["policy_blocks"] = [n for n, _ in model.gated_blocks()]
    return out.logits[0].numpy().astype(np.float32), extra
