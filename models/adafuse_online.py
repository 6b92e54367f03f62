"""AdaFuse online: one frame plus the state in, the frame's logits, policy and the new state out.

AdaFuse-TSN is causal: a block's policy reads the pooled block input of the current and the
previous frame, and "reuse" takes the previous frame's conv1 output (after BN+ReLU). So the state
is, per gated block, the previous frame's pooled block input [N, C_in] and its conv1 output
[N, C_mid, H, W]; zeros before the first frame, exactly as the clip graph pads. Run over the frames
of a clip from a zero state it equals the clip model frame by frame (same policy, same frame
logits up to summation order); the clip prediction is the mean of the frame logits (TSN_Gate).

TSM's shift reads the next frame's channels, so AdaFuse-TSM's per-frame form runs one frame late
per block: models/adafuse_online_tsm.py.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from atfr.errors import ATFRError

from .adafuse import AdaFuseTSN, block_shapes


class AdaFuseOnline(nn.Module):
    def __init__(self, model: AdaFuseTSN):
        super().__init__()
        if model.ada["shift"]:
            raise ATFRError("AdaFuseOnline: AdaFuse-TSM's shift reads the next frame; its online form is "
                            "models/adafuse_online_tsm.AdaFuseOnlineTSM")
        self.model = model

    def state_shapes(self, size: int) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape without the batch) of every state tensor, in input order."""
        shapes = block_shapes(self.model.cfg, size)
        out: list[tuple[str, tuple[int, ...]]] = []
        for i, (cin, y) in enumerate(zip(shapes.conv1_in, shapes.conv1_out)):
            out += [(f"pool{i}", (cin[0],)), (f"conv1_{i}", y)]
        return out

    def zero_state(self, batch: int, size: int) -> list[torch.Tensor]:
        return [torch.zeros((batch, *s)) for _, s in self.state_shapes(size)]

    def forward(self, frame: torch.Tensor, *state: torch.Tensor):
        """frame [N,3,S,S] (normalised) -> (logits [N,K], policy per gated block [N,C], new state...)."""
        bm = self.model.base_model
        x = bm.maxpool(bm.relu(bm.bn1(bm.conv1(frame))))
        policies, new_state = [], []
        g = 0
        for _, block in bm.blocks():
            if block.policy_net is None:
                x, _ = block(x, 1)
                continue
            x, action, v, y = block.step(x, state[2 * g], state[2 * g + 1])
            policies.append(action)
            new_state += [v, y]
            g += 1
        logits = self.model.new_fc(bm.fc(torch.flatten(bm.avgpool(x), 1)))
        return (logits, *policies, *new_state)


def run_online(online: AdaFuseOnline, clip: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """clip [N,3,T,S,S] frame by frame from a zero state -> (frame logits [N,T,K], policy per block [N,T,C])."""
    n, _, t, s, _ = clip.shape
    state = online.zero_state(n, s)
    logits, pols = [], []
    g = len(state) // 2
    for k in range(t):
        out = online(clip[:, :, k], *state)
        logits.append(out[0])
        pols.append(out[1:1 + g])
        state = list(out[1 + g:])
    return torch.stack(logits, 1), [torch.stack([p[i] for p in pols], 1) for i in range(g)]
