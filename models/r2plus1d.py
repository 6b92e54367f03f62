"""R(2+1)D-50 with SGS after res2, as in the ATFR paper (not checkpoint-compatible with anything
official; names follow PySlowFast conventions).

ResNet-50 layout (widths 64/256/512/1024/2048, bottleneck inner 64..512) where every block's
3x3x3 conv is factorised (Tran et al., CVPR 2018) into a spatial 1x3x3 conv ``b_xy`` to M
channels and a temporal 3x1x1 conv ``b`` back to the inner width, with BN+ReLU in between. The
stem's [3,7,7] conv is factorised the same way (``conv_xy`` then ``conv``).

Two config keys (``R2PLUS1D.*``; compact ``r2plus1d_mid``, ``temporal_strides``) choose between
the two R(2+1)D-50s in the literature:

* ``MID_CHANNELS: out`` (default): M = the conv's output width, i.e. no channel expansion (seed
  003's re-implementation: "we simply set the output channels to the original output channel
  size"), and ``TEMPORAL_STRIDES: [1, 2, 2, 2]``: Tran et al.'s 2x2x2 downsampling in conv3_1,
  conv4_1 and conv5_1 (temporal stride 2 in the first block's temporal conv and projection).
  This is the only variant we found that reproduces the ATFR paper's R(2+1)D figures: 99.4
  GFLOPs at 32x256^2 (Table 7: 101.8, -2.4 %); the same rules on an 18-layer basic-block
  R(2+1)D give 45.9 at 32x224^2 (Table 4: 46.5, -1.3 %; Table 4's GFLOPs are at the 224^2
  validation crop, as its SlowFast-R18 30.9 vs Table 7's 40.4 = (256/224)^2 shows).
* ``MID_CHANNELS: param_matched``: Tran et al.'s M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))
  (t=3, d=3: M = floor(2.25 N)), which keeps the parameter count of the full conv, and no
  temporal striding: 335.3 GFLOPs at 32x256^2, 3.3x the paper. This was the zoo's first
  default; checkpoints written before the keys existed (no ``R2PLUS1D`` section in their cfg)
  still build this way, so they keep loading.

The temporal resolution changes at SGS and at the strided res3..res5 entries; every T' >= 1
stays >= 1 (kernel 3, padding 1, stride 2: T -> floor((T - 1) / 2) + 1).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from typing import Any

from atfr.errors import ATFRError

from .i3d import InflatedResNet
from .resnet_blocks import _bn3d

MID_POLICIES = ("out", "param_matched")
# What a cfg without an R2PLUS1D section means (checkpoints written before the keys existed).
LEGACY = {"MID_CHANNELS": "param_matched", "TEMPORAL_STRIDES": [1, 1, 1, 1]}


def r2plus1d_options(cfg: dict[str, Any]) -> tuple[str, list[int]]:
    sec = cfg.get("R2PLUS1D")
    sec = LEGACY if sec is None else {**LEGACY, **sec}
    mid = str(sec["MID_CHANNELS"])
    if mid not in MID_POLICIES:
        raise ATFRError(f"config: R2PLUS1D.MID_CHANNELS={mid!r} is not one of {', '.join(MID_POLICIES)}")
    strides = [int(v) for v in sec["TEMPORAL_STRIDES"]]
    if len(strides) != 4 or any(v not in (1, 2) for v in strides):
        raise ATFRError(f"config: R2PLUS1D.TEMPORAL_STRIDES={strides} must be 4 values of 1 or 2 (res2..res5)")
    return mid, strides


def mid_channels(t: int, d: int, n_in: int, n_out: int) -> int:
    """Tran et al.'s M_i: the (2+1)D pair has the parameter count of the t x d x d conv."""
    return (t * d * d * n_in * n_out) // (d * d * n_in + t * n_out)


class R2Plus1DStem(nn.Module):
    """conv_xy [1,7,7] stride [1,2,2] -> BN -> ReLU -> conv [kt,1,1] -> BN -> ReLU -> maxpool [1,3,3]/2."""

    def __init__(self, dim_in: int, dim_out: int, kt: int, mid_policy: str = "param_matched"):
        super().__init__()
        mid = mid_channels(kt, 7, dim_in, dim_out) if mid_policy == "param_matched" else dim_out
        self.conv_xy = nn.Conv3d(dim_in, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn_xy = _bn3d(mid)
        self.relu_xy = nn.ReLU()
        self.conv = nn.Conv3d(mid, dim_out, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn = _bn3d(dim_out)
        self.relu = nn.ReLU()
        self.pool_layer = nn.MaxPool3d([1, 3, 3], stride=[1, 2, 2], padding=[0, 1, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_xy(self.bn_xy(self.conv_xy(x)))
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class R2Plus1DModelStem(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, kt: int, mid_policy: str = "param_matched"):
        super().__init__()
        self.pathway0_stem = R2Plus1DStem(dim_in, dim_out, kt, mid_policy)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.pathway0_stem(xs[0])]


class R2Plus1DTransform(nn.Module):
    """a 1x1x1 -> BN -> ReLU -> b_xy 1x3x3 (stride) -> BN -> ReLU -> b kt x1x1 (temporal stride) -> BN
    -> ReLU -> c 1x1x1 -> BN."""

    def __init__(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int, num_groups: int = 1,
                 temporal_stride: int = 1, mid_policy: str = "param_matched"):
        super().__init__()
        mid = mid_channels(kt, 3, dim_inner, dim_inner) if mid_policy == "param_matched" else dim_inner
        self.a = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.a_bn = _bn3d(dim_inner)
        self.a_relu = nn.ReLU()
        self.b_xy = nn.Conv3d(dim_inner, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                              groups=num_groups, bias=False)
        self.b_xy_bn = _bn3d(mid)
        self.b_xy_relu = nn.ReLU()
        self.b = nn.Conv3d(mid, dim_inner, (kt, 1, 1), stride=(temporal_stride, 1, 1), padding=(kt // 2, 0, 0),
                           bias=False)
        self.b_bn = _bn3d(dim_inner)
        self.b_relu = nn.ReLU()
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn3d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_xy_relu(self.b_xy_bn(self.b_xy(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class R2Plus1D(InflatedResNet):
    """R(2+1)D-50: every bottleneck's 3x3x3 factorised; stem [3,7,7] factorised; no temporal pool."""

    temporal_kernels = ([3], [3], [3], [3], [3])
    pool1_t = 1

    def __init__(self, cfg: dict[str, Any]):
        self.mid_policy, self.temporal_strides = r2plus1d_options(cfg)
        super().__init__(cfg)

    def _temporal_strides(self, cfg: dict[str, Any]) -> list[int]:
        return list(self.temporal_strides)

    def _make_stem(self, dim_in: int, dim_out: int, kt: int) -> nn.Module:
        return R2Plus1DModelStem(dim_in, dim_out, kt, self.mid_policy)

    def _make_transform(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int,
                        num_groups: int, temporal_stride: int = 1) -> nn.Module:
        return R2Plus1DTransform(dim_in, dim_out, kt, stride, dim_inner, num_groups, temporal_stride,
                                 self.mid_policy)
