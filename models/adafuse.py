"""AdaFuse-TSN / AdaFuse-TSM on ResNet-18/34/50/101 (seed 002; official ``ops/batenet.py`` and
``ops/models_gate.py`` ``TSN_Gate``), with the deterministic hard policy (models/adafuse_blocks.py).

``AdaFuseTSN`` holds ``base_model`` (the gated ResNet; its ``fc`` is a Dropout, as TSN_Gate
replaces it) and ``new_fc`` (the classifier), the official top-level names. A clip [N,3,T,H,W]
runs as N*T frames; the clip logits are the mean of the T frame logits (TSN_Gate's consensus).
As a :class:`~atfr.models.base.VideoNet` it has no SGS: ``front`` passes the clip through and
``back`` is the whole network, so the generic runtime paths see a static model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from . import config as C
from .adafuse_blocks import (KEEP, PolicyNet, SharedPolicyFCs, conv1x1, conv3x3, first_max3, fuse, fuse_with,
                             temporal_shift)
from .base import VideoNet


class GatedBlock(nn.Module):
    """BasicBlock (two 3x3) or Bottleneck (1x1, 3x3 with the stride, 1x1), gated after conv1."""

    def __init__(self, inplanes: int, planes: int, stride: int, bottleneck: bool, gated: bool,
                 ada: dict[str, Any], shared: SharedPolicyFCs | None):
        super().__init__()
        self.bottleneck = bottleneck
        out = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = conv1x1(inplanes, planes)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes, stride)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = conv1x1(planes, out)
            self.bn3 = nn.BatchNorm2d(out)
        else:
            self.conv1 = conv3x3(inplanes, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        if stride != 1 or inplanes != out:
            self.downsample0 = conv1x1(inplanes, out, stride)
            self.downsample1 = nn.BatchNorm2d(out)
        else:
            self.downsample0 = self.downsample1 = None
        self.shift_div = ada["shift_div"] if ada["shift"] else 0
        self.policy_net = PolicyNet(inplanes, planes, ada, shared) if gated else None

    def forward(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        identity = x
        if self.shift_div:
            x = temporal_shift(x, t, self.shift_div)  # the shifted input also feeds policy and downsample
        y = self.relu(self.bn1(self.conv1(x)))
        action = None
        if self.policy_net is not None:
            action = self.policy_net(x, t)
            y = fuse(y, action, t)
        return self._tail(y, x, identity), action

    def step(self, x: torch.Tensor, v_prev: torch.Tensor, y_prev: torch.Tensor,
             identity: torch.Tensor | None = None):
        """One frame of a gated block (online): x [N,C,H,W] (the conv1 input: shifted for TSM) and
        the previous frame's pooled input and conv1 output (after BN+ReLU) -> (output, action [N,C],
        pooled input, conv1 output). ``identity``: the unshifted input (TSM), else x."""
        y = self.relu(self.bn1(self.conv1(x)))
        v = self.policy_net.pooled(x)
        action = first_max3(self.policy_net.head(v_prev, v))
        return self._tail(fuse_with(y, y_prev, action), x, x if identity is None else identity), action, v, y

    def plain(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """One frame of an ungated block whose conv1 input x is already shifted (online TSM)."""
        return self._tail(self.relu(self.bn1(self.conv1(x))), x, identity)

    def _tail(self, y: torch.Tensor, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(self.relu(y)))
        if self.downsample0 is not None:
            identity = self.downsample1(self.downsample0(x))
        return self.relu(y + identity)


def stage_gated(ada: dict[str, Any], stage: int, block_offset: int) -> bool:
    """The official ``_make_layer`` rule: enabled_layers (absolute block index), else enabled_stages,
    else enable_from <= stage < disable_from."""
    if ada["enabled_layers"]:
        return block_offset in ada["enabled_layers"]
    if ada["enabled_stages"]:
        return stage in ada["enabled_stages"]
    return ada["enable_from"] <= stage < ada["disable_from"]


BLOCKS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)), 101: (True, (3, 4, 23, 3))}


class GatedResNet(nn.Module):
    """The official BateNet's module tree (stem, shared policy FCs, layer1..4, avgpool, fc)."""

    def __init__(self, depth: int, ada: dict[str, Any], dropout: float):
        super().__init__()
        bottleneck, counts = BLOCKS[depth]
        width = int(ada.get("base_width", 64))  # 64: the official ResNets; thinner for the demo model
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        shared = None
        if ada["shared_policy_net"]:
            self.gate_fc0s = nn.ModuleDict()
            self.gate_fc1s = nn.ModuleDict()
            shared = SharedPolicyFCs(self.gate_fc0s, self.gate_fc1s, ada)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, offset = width, 0
        for stage, n in enumerate(counts):
            planes = width * 2 ** stage
            blocks = nn.ModuleList()
            for k in range(n):
                gated = stage_gated(ada, stage, offset + k if ada["enabled_layers"] else offset)
                blocks.append(GatedBlock(inplanes, planes, 2 if (k == 0 and stage > 0) else 1,
                                         bottleneck, gated, ada, shared))
                inplanes = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{stage + 1}", blocks)
            offset += n
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Dropout(p=dropout)
        self.feature_dim = inplanes

    def blocks(self) -> list[tuple[str, GatedBlock]]:
        return [(f"layer{s}.{i}", b) for s in range(1, 5) for i, b in enumerate(getattr(self, f"layer{s}"))]

    def forward(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        actions = []
        for _, block in self.blocks():
            x, a = block(x, t)
            if a is not None:
                actions.append(a)
        return self.fc(torch.flatten(self.avgpool(x), 1)), actions


@dataclass
class AdaFuseOutput:
    logits: torch.Tensor  # [N, K]: mean of the frame logits
    frame_logits: torch.Tensor  # [N, T, K]
    policy: list[torch.Tensor]  # per gated block, [N, T, C] int32: 0 skip, 1 reuse, 2 keep


class AdaFuseTSN(VideoNet):
    """AdaFuse-TSN (``shift`` off) or AdaFuse-TSM (``shift`` on), official ``TSN_Gate`` names."""

    family = "adafuse"

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        self.ada = dict(cfg["ADAFUSE"])
        self.depth = int(cfg["RESNET"]["DEPTH"])
        self.base_model = GatedResNet(self.depth, self.ada, float(cfg["MODEL"]["DROPOUT_RATE"]))
        self.new_fc = nn.Linear(self.base_model.feature_dim, int(cfg["MODEL"]["NUM_CLASSES"]))
        self.input_spec = C.input_spec(cfg)

    def gated_blocks(self) -> list[tuple[str, GatedBlock]]:
        return [(n, b) for n, b in self.base_model.blocks() if b.policy_net is not None]

    def run(self, x: torch.Tensor) -> AdaFuseOutput:
        """x [N,3,T,H,W] (normalised) -> logits, frame logits and the policy."""
        n, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
        feat, actions = self.base_model(frames, t)
        frame_logits = self.new_fc(feat).reshape(n, t, -1)
        return AdaFuseOutput(frame_logits.mean(dim=1), frame_logits,
                             [a.reshape(n, t, -1) for a in actions])

    def front(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(xs)

    def back(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.run(xs[0]).logits


@dataclass
class BlockShapes:
    """Per-frame shapes [C,H,W] at one input size: every block's input, and every gated block's
    conv1 input and output (what the online graphs keep as state)."""

    block_in: list[tuple[int, ...]]
    conv1_in: list[tuple[int, ...]]
    conv1_out: list[tuple[int, ...]]


def block_shapes(cfg: dict[str, Any], size: int) -> BlockShapes:
    """One pass of a weightless twin on the meta device (no memory, no compute) with hooks."""
    with torch.device("meta"):
        twin = AdaFuseTSN(cfg).eval()
    got = BlockShapes([], [], [])
    hooks = [b.register_forward_pre_hook(lambda m, a: got.block_in.append(tuple(a[0].shape[1:])))
             for _, b in twin.base_model.blocks()]

    def conv1_seen(m: nn.Module, i: tuple, o: torch.Tensor) -> None:  # None: a hook's result replaces o
        got.conv1_in.append(tuple(i[0].shape[1:]))
        got.conv1_out.append(tuple(o.shape[1:]))
    hooks += [b.conv1.register_forward_hook(conv1_seen) for _, b in twin.gated_blocks()]
    try:
        with torch.no_grad():
            twin.run(torch.zeros((1, 3, 1, size, size), device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return got


def all_keep(policy: list[torch.Tensor]) -> bool:
    return all(bool((p == KEEP).all()) for p in policy)
