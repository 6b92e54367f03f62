"""R(2+1)D-50 with SGS after res2, as in the ATFR paper (not checkpoint-compatible with anything
official; names follow PySlowFast conventions).

ResNet-50 layout (widths 64/256/512/1024/2048, bottleneck inner 64..512) where every block's
3x3x3 conv is factorised (Tran et al., CVPR 2018) into a spatial 1x3x3 conv ``b_xy`` to M
channels and a temporal 3x1x1 conv ``b`` back to the inner width, with BN+ReLU in between and
the standard mid-channel count that keeps the parameter count of the full conv:

    M = floor(t * d^2 * N_in * N_out / (d^2 * N_in + t * N_out))    (t=3, d=3: M = floor(2.25 N))

The stem's [3,7,7] conv is factorised the same way (``conv_xy`` then ``conv``). No temporal
striding: the temporal resolution only changes at SGS.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .i3d import InflatedResNet
from .resnet_blocks import _bn3d


def mid_channels(t: int, d: int, n_in: int, n_out: int) -> int:
    """Tran et al.'s M_i: the (2+1)D pair has the parameter count of the t x d x d conv."""
    return (t * d * d * n_in * n_out) // (d * d * n_in + t * n_out)


class R2Plus1DStem(nn.Module):
    """conv_xy [1,7,7] stride [1,2,2] -> BN -> ReLU -> conv [kt,1,1] -> BN -> ReLU -> maxpool [1,3,3]/2."""

    def __init__(self, dim_in: int, dim_out: int, kt: int):
        super().__init__()
        mid = mid_channels(kt, 7, dim_in, dim_out)
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
    def __init__(self, dim_in: int, dim_out: int, kt: int):
        super().__init__()
        self.pathway0_stem = R2Plus1DStem(dim_in, dim_out, kt)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.pathway0_stem(xs[0])]


class R2Plus1DTransform(nn.Module):
    """a 1x1x1 -> BN -> ReLU -> b_xy 1x3x3 (stride) -> BN -> ReLU -> b kt x1x1 -> BN -> ReLU -> c 1x1x1 -> BN."""

    def __init__(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int, num_groups: int = 1):
        super().__init__()
        mid = mid_channels(kt, 3, dim_inner, dim_inner)
        self.a = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.a_bn = _bn3d(dim_inner)
        self.a_relu = nn.ReLU()
        self.b_xy = nn.Conv3d(dim_inner, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                              groups=num_groups, bias=False)
        self.b_xy_bn = _bn3d(mid)
        self.b_xy_relu = nn.ReLU()
        self.b = nn.Conv3d(mid, dim_inner, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
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

    def _make_stem(self, dim_in: int, dim_out: int, kt: int) -> nn.Module:
        return R2Plus1DModelStem(dim_in, dim_out, kt)

    def _make_transform(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int,
                        num_groups: int) -> nn.Module:
        return R2Plus1DTransform(dim_in, dim_out, kt, stride, dim_inner, num_groups)
