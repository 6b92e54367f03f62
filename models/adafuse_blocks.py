"""AdaFuse's gated ResNet (Meng et al., seed 002), written to load the official checkpoints.

Module and parameter names follow the official ``ops/batenet.py`` so that its ``state_dict``
loads strictly with names unchanged: ``conv1/bn1``, ``layer1..4`` (lists of blocks), blocks with
``conv1..3``, ``bn1..3``, ``downsample0`` / ``downsample1`` and a ``policy_net`` holding
``gate_fc0``, ``gate_bn``, ``gate_fc1``. With ``shared_policy_net`` the two FCs are shared by
every block whose (input, output) sizes match: they live in ``gate_fc0s`` / ``gate_fc1s``
(ModuleDicts keyed ``"<in>_<out>"``) and are also registered under each block, exactly as the
official module tree does, so the state dict lists them under both names.

Per block and frame the policy net reads the block input (after the TSM shift when enabled),
globally pooled, for the previous and the current frame (zeros before the first), and gives one
of three actions per channel of the block's first conv output: 0 skip (zero), 1 reuse (the same
channel of the previous frame's conv1 output after BN+ReLU) and 2 keep. The official code samples
the action with Gumbel noise even at evaluation; here it is the noise-free hard policy, the first
maximum of the log-probabilities (:func:`first_max3`: the tie-break of torch.argmax and ONNX
ArgMax, written with comparisons so that every backend breaks ties alike).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

SKIP, REUSE, KEEP = 0, 1, 2
ACTIONS = 3


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def previous_frame(x: torch.Tensor, t: int) -> torch.Tensor:
    """[N*T, ...] -> the previous frame of each frame, zeros for each clip's first frame."""
    x5 = x.reshape((-1, t) + tuple(x.shape[1:]))
    prev = torch.cat([torch.zeros_like(x5[:, :1]), x5[:, :-1]], dim=1)
    return prev.reshape(x.shape)


def temporal_shift(x: torch.Tensor, t: int, fold_div: int) -> torch.Tensor:
    """TSM's shift (official ``shift``): the first C//div channels take the next frame's, the next
    C//div the previous frame's (zeros beyond the clip), the rest stay."""
    nt, c, h, w = x.shape
    x5 = x.reshape(nt // t, t, c, h, w)
    fold = c // fold_div
    z = torch.zeros_like(x5[:, :1, :fold])
    left = torch.cat([x5[:, 1:, :fold], z], dim=1)
    right = torch.cat([z, x5[:, :-1, fold:2 * fold]], dim=1)
    return torch.cat([left, right, x5[:, :, 2 * fold:]], dim=2).reshape(nt, c, h, w)


def hidden_size(ada: dict[str, Any], out_planes: int) -> int:
    if ada["relative_hidden_size"] > 0:
        return int(ada["relative_hidden_size"] * out_planes)
    if ada["hidden_quota"] > 0:
        return ada["hidden_quota"] // out_planes
    return ada["gate_hidden_dim"]


class SharedPolicyFCs:
    """The official shared policy FCs: one (fc0, fc1) pair per "<in>_<out>" size key."""

    def __init__(self, fc0s: nn.ModuleDict, fc1s: nn.ModuleDict, ada: dict[str, Any]):
        self.fc0s, self.fc1s, self.ada = fc0s, fc1s, ada

    def get(self, in_planes: int, out_planes: int) -> tuple[nn.Linear, nn.Linear]:
        in_dim, out_dim = 2 * in_planes, ACTIONS * out_planes
        key = f"{in_dim}_{out_dim}"
        if key not in self.fc0s:
            hidden = hidden_size(self.ada, out_planes)
            self.fc0s[key] = nn.Linear(in_dim, hidden)
            self.fc1s[key] = nn.Linear(hidden, out_dim)
        return self.fc0s[key], self.fc1s[key]


class PolicyNet(nn.Module):
    """pooled (previous, current) block input -> fc0 -> [BN] -> [ReLU] -> fc1 -> log-probs [NT,C,3]."""

    def __init__(self, in_planes: int, out_planes: int, ada: dict[str, Any],
                 shared: SharedPolicyFCs | None):
        super().__init__()
        self.channels = out_planes
        self.reduce = ada["gate_reduce_type"]
        hidden = hidden_size(ada, out_planes)
        fc0, fc1 = shared.get(in_planes, out_planes) if shared is not None else \
            (nn.Linear(2 * in_planes, hidden), nn.Linear(hidden, ACTIONS * out_planes))
        self.gate_fc0 = fc0
        self.gate_bn = nn.BatchNorm1d(hidden) if ada["gate_bn_between_fcs"] else None
        self.gate_relu = nn.ReLU() if ada["gate_relu_between_fcs"] else None
        self.gate_fc1 = fc1

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The block input pooled per frame: [NT, C_in] (the online graph's pooled state)."""
        pool = F.adaptive_avg_pool2d if self.reduce == "avg" else F.adaptive_max_pool2d
        return torch.flatten(pool(x, (1, 1)), 1)

    def log_probs(self, x: torch.Tensor, t: int) -> torch.Tensor:
        v = self.pooled(x)
        return self.head(previous_frame(v, t), v)

    def head(self, v_prev: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Pooled previous and current frame -> log-probabilities [NT, C, 3]."""
        h = self.gate_fc0(torch.cat([v_prev, v], dim=-1))
        if self.gate_bn is not None:  # BatchNorm1d over [NT, hidden, 1], as the official code
            h = self.gate_bn(h.unsqueeze(-1)).squeeze(-1)
        if self.gate_relu is not None:
            h = self.gate_relu(h)
        z = self.gate_fc1(h).reshape(v.shape[0], self.channels, ACTIONS)
        return torch.log(F.softmax(z, dim=2).clamp(min=1e-8))

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Actions [NT, C] (int32): first maximum of the log-probabilities."""
        return first_max3(self.log_probs(x, t))


def first_max3(lp: torch.Tensor) -> torch.Tensor:
    """Index (int32) of the first maximum over the last axis (size 3), as torch.argmax and ONNX
    ArgMax (select_last_index=0) define it, spelled with comparisons and integer Where so that
    every backend (ONNX Runtime, TensorRT) breaks ties the same way: 0 if lp0 >= lp1 and
    lp0 >= lp2, else 1 if lp1 >= lp2, else 2."""
    a, b, c = lp[..., 0], lp[..., 1], lp[..., 2]
    zero = torch.zeros_like(a, dtype=torch.int32)
    idx = torch.where(b >= c, zero + 1, zero + 2)
    return torch.where(a >= b, torch.where(a >= c, zero, idx), idx)


def fuse(y: torch.Tensor, action: torch.Tensor, t: int) -> torch.Tensor:
    """keep -> y, reuse -> previous frame's y, skip -> 0; the official one-hot arithmetic."""
    return fuse_with(y, previous_frame(y, t), action)


def fuse_with(y: torch.Tensor, y_prev: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    keep = (action == KEEP).to(y.dtype)[:, :, None, None]
    reuse = (action == REUSE).to(y.dtype)[:, :, None, None]
    return y * keep + y_prev * reuse
