"""AdaFuse-TSN online with gathered convolutions: each frame computes only what its policy needs.

Per gated block and frame t (batch 1), with a = the policy of t and a' = the policy of t-1:

* conv1 (BatchNorm folded in) computes the channels kept at t, from the block input x_t;
* a channel reused at t takes y_{t-1}, the conv1 output of t-1, when t-1 kept it (it was computed
  then); otherwise it is computed now from the cached block input x_{t-1}. Each needed conv1 channel
  is computed once per frame: the paper's Eq. 5 count, shifted by one frame for reused channels;
* conv2 reads only the channels not skipped: its weights are gathered on the input axis, in the
  order the kept / cached / recomputed channels are concatenated (a sum over input channels does
  not depend on their order).

The state per gated block: the previous frame's pooled block input, block input, conv1 output
(valid where it was kept) and policy; before the first frame zeros and "all kept" (see
``zero_state``). Equal to the dense online graph (models/adafuse_online.py)
up to summation order: same policy, logits within the float bound.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adafuse import AdaFuseTSN, GatedBlock, block_shapes
from .adafuse_blocks import KEEP, REUSE, first_max3
from .adafuse_online import AdaFuseOnline


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (conv.weight * scale[:, None, None, None]).detach(), (bn.bias - bn.running_mean * scale).detach()


def _where_index(mask: torch.Tensor) -> torch.Tensor:
    """Channel indices [k] of a [C] boolean mask (ONNX NonZero)."""
    return torch.nonzero(mask).reshape(-1)


class GatheredStep(nn.Module):
    def __init__(self, block: GatedBlock):
        super().__init__()
        self.block = block
        w1, b1 = _fold_bn(block.conv1, block.bn1)
        self.register_buffer("w1", w1)
        self.register_buffer("b1", b1)

    def _conv1(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """conv1+BN+ReLU for the channels idx (possibly none). A convolution with no output channel
        is not allowed, so one extra channel (index 0) is computed and dropped."""
        c = self.block.conv1
        one = torch.cat([idx, torch.zeros(1, dtype=idx.dtype)])
        y = F.conv2d(x, self.w1.index_select(0, one), self.b1.index_select(0, one), c.stride, c.padding)
        return F.relu(y[:, :-1])

    def forward(self, x, v_prev, x_prev, y_prev, a_prev, identity=None):
        """identity: the unshifted block input (online TSM; x is then the shifted one), else x."""
        b = self.block
        v = b.policy_net.pooled(x)
        a = first_max3(b.policy_net.head(v_prev, v))  # [1, C]
        keep, reuse = (a[0] == KEEP), (a[0] == REUSE)
        was_kept = (a_prev[0] == KEEP)
        k = _where_index(keep)
        rc = _where_index((reuse.to(torch.int32) * was_kept.to(torch.int32)) == 1)  # computed at t-1
        rn = _where_index((reuse.to(torch.int32) * (1 - was_kept.to(torch.int32))) == 1)  # compute now
        y_k = self._conv1(x, k)
        z = torch.cat([y_k, y_prev.index_select(1, rc), self._conv1(x_prev, rn)], dim=1)
        order = torch.cat([k, rc, rn])
        # One zero input channel more (weights of channel 0), so that conv2 has an input channel
        # even when every channel is skipped; it adds exact zeros.
        z = torch.cat([z, torch.zeros_like(y_prev[:, :1])], dim=1)
        w2 = b.conv2.weight.index_select(1, torch.cat([order, torch.zeros(1, dtype=order.dtype)]))
        y = b.bn2(F.conv2d(z, w2, None, b.conv2.stride, b.conv2.padding))
        if b.bottleneck:
            y = b.bn3(b.conv3(b.relu(y)))
        identity = b.downsample1(b.downsample0(x)) if b.downsample0 is not None else \
            (x if identity is None else identity)
        out = b.relu(y + identity)
        # The new conv1 state: this frame's kept channels in place, zeros elsewhere.
        y_new = torch.zeros_like(y_prev).index_copy(1, k, y_k)
        return out, a, v, x, y_new


class AdaFuseOnlineGathered(nn.Module):
    """frame [1,3,S,S] + state (per gated block: pool, xin, conv1, act) -> logits, policy..., new state..."""

    def __init__(self, model: AdaFuseTSN):
        super().__init__()
        AdaFuseOnline(model)  # the same causality check (no TSM)
        self.model = model
        self.steps = nn.ModuleList([GatheredStep(b) for _, b in model.gated_blocks()])

    def state_shapes(self, size: int) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        dense = dict(AdaFuseOnline(self.model).state_shapes(size))
        conv1_in = block_shapes(self.model.cfg, size).conv1_in
        out = []
        for i, (_, b) in enumerate(self.model.gated_blocks()):
            out += [(f"pool{i}", dense[f"pool{i}"], torch.float32),
                    (f"xin{i}", conv1_in[i], torch.float32),
                    (f"conv1_{i}", dense[f"conv1_{i}"], torch.float32),
                    (f"act{i}", (b.conv1.out_channels,), torch.int32)]
        return out

    def zero_state(self, size: int) -> list[torch.Tensor]:
        """Before the first frame: zeros, with the policy state 'all kept' so that a channel
        reused at the first frame reads the zero conv1 state (the clip graph's zero padding)
        instead of recomputing conv1 of a zero input (which is ReLU(bias), not zero)."""
        return [torch.full((1, *s), KEEP, dtype=d) if n.startswith("act") else torch.zeros((1, *s), dtype=d)
                for n, s, d in self.state_shapes(size)]

    def forward(self, frame: torch.Tensor, *state: torch.Tensor):
        bm = self.model.base_model
        x = bm.maxpool(bm.relu(bm.bn1(bm.conv1(frame))))
        policies, new_state, g = [], [], 0
        for _, block in bm.blocks():
            if block.policy_net is None:
                x, _ = block(x, 1)
                continue
            v_prev, x_prev, y_prev, a_prev = state[4 * g: 4 * g + 4]
            x, a, v, x_in, y_new = self.steps[g](x, v_prev, x_prev, y_prev, a_prev)
            policies.append(a)
            new_state += [v, x_in, y_new, a]
            g += 1
        logits = self.model.new_fc(bm.fc(torch.flatten(bm.avgpool(x), 1)))
        return (logits, *policies, *new_state)
