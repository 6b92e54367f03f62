"""AdaFuse-TSM online: a frame-by-frame graph that equals the clip graph, one frame late per block.

TSM's shift gives frame t of a block the first C/div input channels of frame t+1 and the next C/div
of frame t-1 (zeros beyond the clip). So a block can finish frame t only once its input for t+1
exists: each shifted block runs one frame behind the block before it, and the network's output is
``delay`` = (number of shifted blocks) frames behind the newest input (16 for ResNet-50, 8 for
ResNet-18). Each step still computes every block once, for one frame.

Inputs: ``frame`` [N,3,S,S], ``valid`` [N] (1 = a frame of the stream, 0 = none: the flush after a
stream's last frame, which the clip graph pads with zeros) and the state. Outputs: ``logits`` and
``policy{i}`` of frame s - delay, ``frame_valid`` [N] (0 while the pipeline fills or past the
end), and ``<state>_next``. The state, zeros before the first frame (policy state "all kept"):

* ``valid_reg`` [N, delay+1]: entry j tells whether frame s - j exists;
* per block k: ``xcur{k}``, its input for the frame before its newest (unshifted, the residual
  identity), and ``xf1_{k}``, the second fold (C/div channels) of the input before that;
* per gated block i: the policy state of the dense graph (``pool{i}``, ``conv1_{i}``: the pooled
  shifted input and conv1 output of the previous frame) or of the gathered one (models/
  adafuse_gathered.py: ``pool``, ``xin``, ``conv1``, ``act``), zeroed ("all kept") where that frame
  does not exist, as the clip graph's zero padding;
* ``polq{i}`` [N, q, C] int32: block i decides for frame s - d_i (d_i: shifted blocks up to i);
  its policy waits q = delay - d_i steps to come out with the logits of the same frame.

Run over a clip's T frames plus ``delay`` flush steps from a zero state, the valid outputs equal the
clip graph frame by frame (tests/test_adafuse_online_tsm.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .adafuse import AdaFuseTSN, block_shapes
from .adafuse_blocks import KEEP
from .adafuse_gathered import GatheredStep


class AdaFuseOnlineTSM(nn.Module):
    def __init__(self, model: AdaFuseTSN, gathered: bool = False):
        super().__init__()
        blocks = [b for _, b in model.base_model.blocks()]
        if not all(b.shift_div for b in blocks):
            raise ValueError("AdaFuseOnlineTSM needs a TSM model (a shift in every block)")
        self.model = model
        self.gathered = gathered
        self.delay = len(blocks)
        self.steps = nn.ModuleList([GatheredStep(b) for _, b in model.gated_blocks()]) if gathered else None
        self.names = [n for n, _, _ in self.state_shapes(224)]  # the names do not depend on the size

    # -- state ------------------------------------------------------------------------------------
    def state_shapes(self, size: int) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """(name, shape without the batch, dtype) of every state tensor, in input order."""
        shapes = block_shapes(self.model.cfg, size)
        ins, outs = shapes.block_in, shapes.conv1_out
        f32, i32 = torch.float32, torch.int32
        spec = [("valid_reg", (self.delay + 1,), f32)]
        blocks = [b for _, b in self.model.base_model.blocks()]
        for k, (b, (c, h, w)) in enumerate(zip(blocks, ins)):
            spec += [(f"xcur{k}", (c, h, w), f32), (f"xf1_{k}", (c // b.shift_div, h, w), f32)]
        gated = [k for k, b in enumerate(blocks) if b.policy_net is not None]
        for i, (k, y) in enumerate(zip(gated, outs)):
            cin = ins[k]
            if self.gathered:
                spec += [(f"pool{i}", (cin[0],), f32), (f"xin{i}", cin, f32), (f"conv1_{i}", y, f32),
                         (f"act{i}", (y[0],), i32)]
            else:
                spec += [(f"pool{i}", (cin[0],), f32), (f"conv1_{i}", y, f32)]
            if self.delay - (k + 1) > 0:
                spec.append((f"polq{i}", (self.delay - (k + 1), y[0]), i32))
        return spec

    def zero_state(self, batch: int, size: int) -> list[torch.Tensor]:
        return [torch.full((batch, *s), KEEP, dtype=d) if d == torch.int32 else torch.zeros((batch, *s), dtype=d)
                for _, s, d in self.state_shapes(size)]

    # -- one step ---------------------------------------------------------------------------------
    def forward(self, frame: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
        st = dict(zip(self.names, state))
        reg = torch.cat([valid.to(frame.dtype)[:, None], st["valid_reg"][:, :-1]], dim=1)
        new: dict[str, torch.Tensor] = {"valid_reg": reg}
        bm = self.model.base_model
        x = bm.maxpool(bm.relu(bm.bn1(bm.conv1(frame))))
        policies, g = [], 0
        for k, (_, b) in enumerate(bm.blocks()):
            x_new = x * reg[:, k, None, None, None]  # block k's newest input is frame s-k
            x_cur, xf1 = st[f"xcur{k}"], st[f"xf1_{k}"]
            fold = x_cur.shape[1] // b.shift_div
            xs = torch.cat([x_new[:, :fold], xf1, x_cur[:, 2 * fold:]], dim=1)  # frame s-k-1, shifted
            new[f"xcur{k}"], new[f"xf1_{k}"] = x_new, x_cur[:, fold:2 * fold]
            if b.policy_net is None:
                x = b.plain(xs, x_cur)
                continue
            x, a = self._gated(b, g, xs, x_cur, st, new, reg[:, k + 1])
            q = st.get(f"polq{g}")
            if q is not None:  # this block decided for frame s-k-1; the logits are of frame s-delay
                new[f"polq{g}"] = torch.cat([q[:, 1:], a[:, None]], dim=1)
                a = q[:, 0]
            policies.append(a)
            g += 1
        logits = self.model.new_fc(bm.fc(torch.flatten(bm.avgpool(x), 1)))
        return (logits, *policies, reg[:, self.delay], *[new[n] for n in self.names])

    def _gated(self, b, g: int, xs, x_cur, st, new, exists: torch.Tensor):
        """One gated block; its new policy state is zeroed ("all kept") where the frame it computed
        does not exist (before the stream or after its end), as the clip graph pads."""
        m2, m4 = exists[:, None], exists[:, None, None, None]
        if self.gathered:
            x, a, v, x_in, y = self.steps[g](xs, st[f"pool{g}"], st[f"xin{g}"], st[f"conv1_{g}"], st[f"act{g}"], x_cur)
            new[f"xin{g}"] = x_in * m4
            new[f"act{g}"] = torch.where(m2 > 0, a, torch.full_like(a, KEEP))
        else:
            x, a, v, y = b.step(xs, st[f"pool{g}"], st[f"conv1_{g}"], x_cur)
        new[f"pool{g}"], new[f"conv1_{g}"] = v * m2, y * m4
        return x, a


def run_online_tsm(online: AdaFuseOnlineTSM, clip: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """clip [N,3,T,S,S]: its T frames then ``delay`` flush steps from a zero state -> (frame logits
    [N,T,K], policy per block [N,T,C]) of the valid outputs."""
    n, _, t, s, _ = clip.shape
    state = online.zero_state(n, s)
    g = len(online.model.gated_blocks())
    logits, pols = [], []
    for k in range(t + online.delay):
        frame = clip[:, :, min(k, t - 1)]
        valid = torch.full((n,), 1.0 if k < t else 0.0)
        out = online(frame, valid, *state)
        state = list(out[2 + g:])
        if bool((out[1 + g] > 0.5).all()):  # frame_valid: the output frame is one of the clip's
            logits.append(out[0])
            pols.append(out[1:1 + g])
    return torch.stack(logits, 1), [torch.stack([p[i] for p in pols], 1) for i in range(g)]
