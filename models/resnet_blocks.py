"""PySlowFast-style building blocks with the official module names.

Residual blocks return the pre-activation sum (no ReLU); the stage applies ReLU after every
block, so SGS can read the last block's pre-ReLU output exactly as the official ResStage does.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from atfr.spec import SGSSpec

from .sgs import TSLayer


def _bn3d(c: int) -> nn.BatchNorm3d:
    # BN eps/momentum are hard-coded in the official code (the BN.* config keys are ignored).
    return nn.BatchNorm3d(c, eps=1e-5, momentum=0.1)


class BottleneckTransform(nn.Module):
    """a: Tx1x1, b: 1x3x3 (spatial stride unless stride_1x1), c: 1x1x1; BN after each."""

    def __init__(self, dim_in, dim_out, temp_kernel, stride, dim_inner, num_groups=1,
                 stride_1x1=False, dilation=1):
        super().__init__()
        s1, s3 = (stride, 1) if stride_1x1 else (1, stride)
        self.a = nn.Conv3d(dim_in, dim_inner, [temp_kernel, 1, 1], stride=[1, s1, s1],
                           padding=[temp_kernel // 2, 0, 0], bias=False)
        self.a_bn = _bn3d(dim_inner)
        self.a_relu = nn.ReLU()
        self.b = nn.Conv3d(dim_inner, dim_inner, [1, 3, 3], stride=[1, s3, s3],
                           padding=[0, dilation, dilation], groups=num_groups, bias=False,
                           dilation=[1, dilation, dilation])
        self.b_bn = _bn3d(dim_inner)
        self.b_relu = nn.ReLU()
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn3d(dim_out)

    def forward(self, x):
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class ResBlock(nn.Module):
    """branch1 (projection, when shape changes) + branch2 (transform); no ReLU."""

    def __init__(self, dim_in, dim_out, transform: nn.Module, stride=1, temporal_stride=1):
        super().__init__()
        if dim_in != dim_out or stride != 1 or temporal_stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=[temporal_stride, stride, stride], bias=False)
            self.branch1_bn = _bn3d(dim_out)
        self.branch2 = transform

    def forward(self, x):
        f = self.branch2(x)
        if hasattr(self, "branch1"):
            return self.branch1_bn(self.branch1(x)) + f
        return x + f


class ResStage(nn.Module):
    """Blocks ``pathway{p}_res{i}`` per pathway; optional SGS on the last block's pre-ReLU output.

    Single-pathway stages name the SGS layer ``ts_layer``; two-pathway ones ``pathway{p}_ts_layer``
    (official naming).
    """

    def __init__(self, blocks: list[list[nn.Module]], sgs: dict[int, SGSSpec] | None = None):
        super().__init__()
        self.num_pathways = len(blocks)
        self.num_blocks = [len(b) for b in blocks]
        for p, bl in enumerate(blocks):
            for i, m in enumerate(bl):
                self.add_module(f"pathway{p}_res{i}", m)
        self._sgs_pathways = sorted((sgs or {}).keys())
        for p, spec in (sgs or {}).items():
            name = "ts_layer" if self.num_pathways == 1 else f"pathway{p}_ts_layer"
            self.add_module(name, TSLayer(spec))
        self.relu = nn.ReLU()

    def ts_layers(self) -> dict[int, TSLayer]:
        if self.num_pathways == 1:
            return {0: self.ts_layer} if hasattr(self, "ts_layer") else {}
        return {p: getattr(self, f"pathway{p}_ts_layer") for p in self._sgs_pathways}

    def forward_pre(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every block with ReLU in between; the last block's output is returned pre-ReLU."""
        out = []
        for p in range(self.num_pathways):
            x = xs[p]
            for i in range(self.num_blocks[p]):
                if i:
                    x = self.relu(x)
                x = getattr(self, f"pathway{p}_res{i}")(x)
            out.append(x)
        return out

    def finish(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.relu(x) for x in xs]

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = self.forward_pre(xs)
        layers = self.ts_layers()
        xs = [layers[p](x)[0] if p in layers else x for p, x in enumerate(xs)]
        return self.finish(xs)


class ResNetBasicStem(nn.Module):
    """conv [kt,7,7] stride [1,2,2] -> BN -> ReLU -> maxpool [1,3,3] stride [1,2,2]."""

    def __init__(self, dim_in, dim_out, kernel, stride, padding):
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = _bn3d(dim_out)
        self.relu = nn.ReLU()
        self.pool_layer = nn.MaxPool3d([1, 3, 3], stride=[1, 2, 2], padding=[0, 1, 1])

    def forward(self, x):
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class VideoModelStem(nn.Module):
    def __init__(self, dim_in, dim_out, kernel, stride, padding):
        super().__init__()
        self.num_pathways = len(dim_out)
        for p in range(self.num_pathways):
            self.add_module(f"pathway{p}_stem",
                            ResNetBasicStem(dim_in[p], dim_out[p], kernel[p], stride[p], padding[p]))

    def forward(self, xs):
        return [getattr(self, f"pathway{p}_stem")(xs[p]) for p in range(self.num_pathways)]


def pad_pathways(slow: torch.Tensor, fuse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad the shorter of the two in time to the longer (front gets diff//2), as official.

    Under ONNX export the lengths are traced as tensors so the back graph stays valid for every
    T' (the padding becomes a Pad node with computed pads).
    """
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        ts = torch._shape_as_tensor(slow)[2]
        tf = torch._shape_as_tensor(fuse)[2]
        out = torch.maximum(ts, tf)
        return _pad_time(slow, out - ts), _pad_time(fuse, out - tf)
    ts, tf = slow.shape[2], fuse.shape[2]
    out = max(ts, tf)
    return _pad_time(slow, out - ts), _pad_time(fuse, out - tf)


def _pad_time(x: torch.Tensor, diff) -> torch.Tensor:
    if isinstance(diff, int) and diff == 0:
        return x
    front = diff // 2
    return nn.functional.pad(x, [0, 0, 0, 0, front, diff - front])


class FuseFastToSlow(nn.Module):
    def __init__(self, dim_in, ratio, kernel, alpha):
        super().__init__()
        self.conv_f2s = nn.Conv3d(dim_in, dim_in * ratio, [kernel, 1, 1], stride=[alpha, 1, 1],
                                  padding=[kernel // 2, 0, 0], bias=False)
        self.bn = _bn3d(dim_in * ratio)
        self.relu = nn.ReLU()

    def forward(self, xs):
        fuse = self.relu(self.bn(self.conv_f2s(xs[1])))
        slow, fuse = pad_pathways(xs[0], fuse)
        return [torch.cat([slow, fuse], 1), xs[1]]


class ResNetAdaptHead(nn.Module):
    """Per-pathway global average pool over all positions, concat, dropout, projection -> logits.

    The official eval head applies softmax afterwards; we return logits and let callers apply
    softmax (numerically the same as the official Softmax(dim=4) + mean over 1x1x1).
    """

    def __init__(self, dim_in: list[int], num_classes: int, dropout_rate: float):
        super().__init__()
        self.num_pathways = len(dim_in)
        for p in range(self.num_pathways):
            self.add_module(f"pathway{p}_avgpool", nn.AdaptiveAvgPool3d((1, 1, 1)))
        if dropout_rate > 0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(sum(dim_in), num_classes, bias=True)

    def forward(self, xs):
        pooled = [getattr(self, f"pathway{p}_avgpool")(xs[p]) for p in range(self.num_pathways)]
        x = torch.cat(pooled, 1).flatten(1)
        if hasattr(self, "dropout"):
            x = self.dropout(x)
        return self.projection(x)
