"""Seed 003's 2D baselines on ResNet-50: TSN and TAM, as single-pathway video models.

Chen et al. (seed 003, supplementary §5) build both on torchvision's ResNet-50 applied to every
frame; we express the same network with 3D tensors [N,C,T,H,W] and kernels of temporal size 1,
so it slots into the shared skeleton (:class:`~atfr.models.i3d.InflatedResNet`), the export and
the SGS split unchanged:

* **TSN** (``tsn``): a 2D ResNet-50 per frame (stem 1x7x7, bottlenecks 1x1 / 1x3x3 with the
  stride on the 3x3 as torchvision's v1.5 / 1x1), average consensus over frames. Global average
  pooling over (T,H,W) followed by the linear classifier equals averaging the per-frame logits
  (both are linear; dropout is the identity at inference).
* **TAM** (``tam``): TSN plus Fan et al.'s temporal aggregation module (NeurIPS 2019, "More Is
  Less", seed 003 ref. [2]) "inserted at the non-identity path of every residual block": on the
  block input, three depthwise 1x1 convolutions weight the previous, current and next frame per
  channel, their sum (zero beyond the clip ends) goes through a ReLU, then the bottleneck's a/b/c.
  That is exactly one depthwise convolution with a 3x1x1 kernel (taps = previous, current,
  next) and no bias: the "3D-depthwise convolution" seed 003 names as TAM's throughput
  bottleneck. It is stored that way (``branch2.tam``, weight [C,1,3,1,1]).

``TSN.TEMPORAL_POOL`` (compact ``temporal_pool``) adds Chen et al.'s temporal pooling: a max pool
of kernel 3, stride 2, padding 1 over time after res2, res3 and res4 (their ``TemporalPooling``
"along with the last three spatial poolings"). Seed 003's Table 1 "TSN-ResNet50-tp" is TSN with
it (73.9 GFLOPs at 32x256^2); its TAM-ResNet50 (171.5) is without.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .i3d import InflatedResNet
from .resnet_blocks import BottleneckTransform


def temporal_pool_enabled(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("TSN", {}).get("TEMPORAL_POOL", False))


class TSN(InflatedResNet):
    """TSN-ResNet: 2D ResNet per frame (temporal kernels 1), average consensus."""

    temporal_kernels = ([1], [1], [1], [1], [1])
    pool1_t = 1

    def _temporal_pool(self, cfg: dict[str, Any], stage: int) -> nn.Module | None:
        if stage < 5 and temporal_pool_enabled(cfg):
            # T -> floor((T - 1) / 2) + 1: keeps B' = 1 valid after SGS.
            return nn.MaxPool3d((3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
        return None

    def _make_transform(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int,
                        num_groups: int, temporal_stride: int = 1) -> nn.Module:
        return BottleneckTransform(dim_in, dim_out, 1, stride, dim_inner, num_groups)


class TAMBottleneckTransform(BottleneckTransform):
    """tam (depthwise 3x1x1 over the block input) -> ReLU -> the 2D bottleneck a, b, c."""

    def __init__(self, dim_in: int, dim_out: int, stride: int, dim_inner: int, num_groups: int = 1):
        super().__init__(dim_in, dim_out, 1, stride, dim_inner, num_groups)
        self.tam = nn.Conv3d(dim_in, dim_in, (3, 1, 1), padding=(1, 0, 0), groups=dim_in, bias=False)
        self.tam_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.tam_relu(self.tam(x)))


class TAM(TSN):
    """TAM-ResNet: TSN with a temporal aggregation module in every bottleneck's residual branch."""

    def _make_transform(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int,
                        num_groups: int, temporal_stride: int = 1) -> nn.Module:
        return TAMBottleneckTransform(dim_in, dim_out, stride, dim_inner, num_groups)
