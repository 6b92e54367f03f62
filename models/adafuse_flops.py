"""AdaFuse GFLOPs: static counts and the policy-dependent counts, official and Eq. 5.

Two conventions meet here:

* ours (models/flops.py): multiply-adds of conv and linear layers only, per clip. ``static`` is the
  same network without the policy nets: the TSN (or TSM) twin.
* the official one (``ops/net_flops_table.py``, thop 0.0.31): conv and linear multiply-adds plus a
  conv bias term, 2 per element for every BatchNorm (the policy nets' BatchNorm1d too), and
  (kernel + 1) per output of the final adaptive average pool; ReLU, max pools and the policy nets'
  functional pooling are free. The official ``base_model_gflops`` is that count for one frame of
  the gated network with every block's own policy FCs. The paper's TSN figures (32.9 G for R50 at
  8 x 224^2) are that convention on the plain ResNet, the ``static_official`` figure below.

The policy-dependent count per frame (official ``compute_gflops_by_mask``): base minus, per block,
the saved fraction of its conv1 times conv1's flops and the skipped fraction times conv2's flops.
conv1 must compute a channel at frame t when it is kept at t or reused at t+1; the official loop
uses frame T-2's mask for the last frame (an off-by-one: ``t`` keeps the loop's last value).
``official`` reproduces that; ``eq5`` is the paper's Eq. 5 with the last frame's own mask (no
frame after it reuses anything). Both are reported per clip (T x the per-frame figure); the
arithmetic is torch-free in runtime/adafuse_gflops.py (the runtime counts exported clips too).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from atfr.runtime.adafuse_gflops import policy_gflops

from .adafuse import AdaFuseTSN


def _thop_ops(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return out.numel() * (m.in_channels // m.groups * k + (1 if m.bias is not None else 0))
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return 2 * inp[0].numel()
    if isinstance(m, nn.Linear):
        return m.in_features * out.numel()
    if isinstance(m, nn.AdaptiveAvgPool2d):
        kernel = (inp[0].shape[2] // 1) * (inp[0].shape[3] // 1)  # output size 1x1
        return (kernel + 1) * out.numel()
    return 0


class _Counter:
    def __init__(self, model: nn.Module, fn):
        self.total = 0
        self.handles = []
        for mod in model.modules():
            if next(mod.children(), None) is not None:  # leaves only, as thop
                continue
            self.handles.append(mod.register_forward_hook(self._hook(fn)))

    def _hook(self, fn):
        def hook(m, inp, out):
            self.total += int(fn(m, inp, out))
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _meta_twin(model: AdaFuseTSN) -> AdaFuseTSN:
    """The same architecture on the meta device (shapes only): no weights copied, no arithmetic."""
    with torch.device("meta"):
        return AdaFuseTSN(model.cfg).eval()


def _count(model: AdaFuseTSN, size: int, frames: int, fn, with_policy: bool) -> int:
    m = _meta_twin(model)
    if not with_policy:
        for _, b in m.base_model.blocks():
            b.policy_net = None
    c = _Counter(m, fn)
    try:
        with torch.no_grad():
            m.run(torch.zeros((1, 3, frames, size, size), device="meta"))
    finally:
        c.close()
    return c.total


def block_conv_flops(model: AdaFuseTSN, size: int) -> list[tuple[int, int]]:
    """Per gated block, one frame: (conv1, conv2) flops as the official ``count_conv2d_flops``."""
    m = _meta_twin(model)
    seen: dict[int, int] = {}
    handles = []
    for _, b in m.gated_blocks():
        for conv in (b.conv1, b.conv2):
            handles.append(conv.register_forward_hook(
                lambda mod, inp, out: seen.__setitem__(id(mod), _thop_ops(mod, inp, out))))
    try:
        with torch.no_grad():
            m.run(torch.zeros((1, 3, 1, size, size), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return [(seen[id(b.conv1)], seen[id(b.conv2)]) for _, b in m.gated_blocks()]


def static_report(model: AdaFuseTSN, frames: int | None = None, size: int | None = None) -> dict[str, float]:
    """Per-clip GFLOPs that do not depend on the policy (see the module docstring)."""
    t = int(frames or model.input_spec.num_frames)
    s = int(size or model.input_spec.crop_size)

    return {
        "static": _count(model, s, t, _mac_fn, with_policy=False) / 1e9,
        "policy_nets": (_count(model, s, t, _mac_fn, True) - _count(model, s, t, _mac_fn, False)) / 1e9,
        "static_official": _count(model, s, t, _thop_ops, with_policy=False) / 1e9,
        "dense_official": _count(model, s, t, _thop_ops, with_policy=True) / 1e9,
    }


def _mac_fn(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, nn.Conv2d):
        return out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    return 0


class AdaFuseCounter:
    """The per-clip ``official`` and ``eq5`` GFLOPs of policies at one input size."""

    def __init__(self, model: AdaFuseTSN, size: int | None = None):
        s = int(size or model.input_spec.crop_size)
        self.base_per_frame = _count(model, s, 1, _thop_ops, with_policy=True) / 1e9
        self.convs = block_conv_flops(model, s)

    def __call__(self, policy: Sequence[Any]) -> dict[str, float]:
        return {"official": policy_gflops(policy, self.base_per_frame, self.convs, official=True),
                "eq5": policy_gflops(policy, self.base_per_frame, self.convs, official=False)}
