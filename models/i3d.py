"""Two I3D-ResNet-50s, named by where they inflate, with SGS after res2 (the ATFR placement).

``i3d_3x1x1`` (alias ``i3d``, the name it had first): PySlowFast's "i3d" (the Non-local paper's
I3D-R50; the ATFR paper's Table 7 I3D, 148.4 GFLOPs at 32x256^2): stem [5,7,7]; temporal
kernels 3x1x1 on the *first* (1x1) conv of alternating blocks ([[3]], [[3,1]], [[3,1]], [[1,3]],
cycled over the blocks); the 3x3 conv stays 1x3x3; a [2,1,1] temporal max pool after res2.

``i3d_3x3x3``: seed 003's I3D-ResNet50 (Chen et al., supplementary §5: "we convert all 2D
convolutional layer into 3D convolutions and set kernel size in temporal domain to 3 ... convert
3x3 convolution in bottleneck block into 3x3x3"): stem [3,7,7] stride [1,2,2], every block's
3x3 conv is 3x3x3, the 1x1 convs stay 1x1x1, no temporal striding or pooling (their Table 1
row, 335.3 GFLOPs at 32x256^2, is the model without temporal stride).

Neither is checkpoint-compatible with an official ATFR release (the official code builds only
the 3DResNet and SlowFast); names follow PySlowFast's ``ResNet`` (``s1.pathway0_stem``,
``s{2..5}.pathway0_res{i}.branch2.{a,b,c}``, ``pathway0_pool``, ``head.projection``). SGS sits at
the end of res2 (before any temporal pool), on the last block's pre-ReLU sum.

:class:`InflatedResNet` is the single-pathway ResNet skeleton shared with R(2+1)D, TSN and TAM.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from atfr.errors import ATFRError

from . import config as C
from .base import VideoNet
from .resnet_blocks import BottleneckTransform, ResBlock, ResNetAdaptHead, ResStage, VideoModelStem, _bn3d
from .sgs import TSLayer

STAGE_DEPTH = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_NAMES = ("res2", "res3", "res4", "res5")
I3D_TEMPORAL_KERNELS = ([5], [3], [3, 1], [3, 1], [1, 3])


class InflatedResNet(VideoNet):
    """Single-pathway ResNet (stem, res2..res5, adaptive head) with SGS at the configured stage.

    Subclasses supply the stem, the block transform, the per-stage temporal kernel lists and an
    optional temporal pool after res2. Static models (stage none/conv1) split after res2.
    """

    num_pathways = 1
    temporal_kernels: tuple[list[int], ...] = I3D_TEMPORAL_KERNELS
    pool1_t: int = 1  # temporal stride of the pool after res2

    def _temporal_strides(self, cfg: dict[str, Any]) -> list[int]:
        """Temporal stride of the first block of res2..res5 (1 = none)."""
        return [1, 1, 1, 1]

    def _temporal_pool(self, cfg: dict[str, Any], stage: int) -> nn.Module | None:
        """A temporal pool after res{stage} (3..5 here; res2's is ``pool1_t``), or None."""
        return None

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        self.input_spec = C.input_spec(cfg)
        r = cfg["RESNET"]
        depth = int(r["DEPTH"])
        if depth not in STAGE_DEPTH:
            raise ATFRError(f"config: RESNET.DEPTH={depth} is not supported (18, 50, 101)")
        depths = STAGE_DEPTH[depth]
        g, w = int(r["NUM_GROUPS"]), int(r["WIDTH_PER_GROUP"])
        dims = [w, w * 4, w * 8, w * 16, w * 32]
        inners = [g * w * 2 ** i for i in range(4)]
        self.sgs_stage = C.sgs_stage(cfg)
        nbins = int(cfg["TEMPORAL_SAMPLING"]["NUM_BINS"][0])
        self.s1 = self._make_stem(int(cfg["DATA"]["INPUT_CHANNEL_NUM"][0]), w, self.temporal_kernels[0][0])
        n_temp = r["NUM_BLOCK_TEMP_KERNEL"]
        strides = r["SPATIAL_STRIDES"]
        t_strides = self._temporal_strides(cfg)
        for idx, name in enumerate(STAGE_NAMES):
            n = depths[idx]
            nt = min(int(n_temp[idx][0]), n) if idx < len(n_temp) else n
            # PySlowFast ResStage: (kernel list * blocks)[:n_temp] + [1] * rest.
            kts = (list(self.temporal_kernels[idx + 1]) * n)[:nt] + [1] * (n - nt)
            stride = int(strides[idx][0]) if idx < len(strides) else (1 if idx == 0 else 2)
            blocks = []
            for i in range(n):
                din = dims[idx] if i == 0 else dims[idx + 1]
                s = stride if i == 0 else 1
                ts = int(t_strides[idx]) if i == 0 else 1
                tr = self._make_transform(din, dims[idx + 1], kts[i], s, inners[idx], g, ts)
                blocks.append(ResBlock(din, dims[idx + 1], tr, s, temporal_stride=ts))
            sgs = None
            if self.sgs_stage == name:
                sgs = {0: C.make_sgs_spec(cfg, f"s{idx + 2}.ts_layer", 0, dims[idx + 1], nbins)}
            self.add_module(f"s{idx + 2}", ResStage([blocks], sgs))
            if idx == 0 and self.pool1_t > 1:
                # ceil_mode keeps B' = 1 (or any odd B') valid after SGS; identical for even T.
                self.pathway0_pool = nn.MaxPool3d([self.pool1_t, 1, 1], stride=[self.pool1_t, 1, 1],
                                                  ceil_mode=True)
            pool = self._temporal_pool(cfg, idx + 2)
            if pool is not None:
                self.add_module(f"s{idx + 2}_tpool", pool)  # no parameters: state dicts unchanged
        self.head = ResNetAdaptHead([dims[-1]], int(cfg["MODEL"]["NUM_CLASSES"]),
                                    float(cfg["MODEL"]["DROPOUT_RATE"]))
        self._split = int(self.sgs_stage[3]) if self.sgs_stage else 2

    # -- per-architecture pieces ----------------------------------------------------------------
    def _make_stem(self, dim_in: int, dim_out: int, kt: int) -> nn.Module:
        return VideoModelStem([dim_in], [dim_out], [[kt, 7, 7]], [[1, 2, 2]], [[kt // 2, 3, 3]])

    def _make_transform(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int,
                        num_groups: int, temporal_stride: int = 1) -> nn.Module:
        return BottleneckTransform(dim_in, dim_out, kt, stride, dim_inner, num_groups)

    # -- VideoNet contract ----------------------------------------------------------------------
    def ts_layer_map(self) -> dict[int, TSLayer]:
        return getattr(self, f"s{self._split}").ts_layers()

    def _after_stage(self, s: int, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if s == 2 and hasattr(self, "pathway0_pool"):
            xs = [self.pathway0_pool(xs[0])]
        pool = getattr(self, f"s{s}_tpool", None)
        return [pool(xs[0])] if pool is not None else xs

    def front(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = self.s1(list(xs))
        for s in range(2, self._split):
            xs = self._after_stage(s, getattr(self, f"s{s}")(xs))
        return getattr(self, f"s{self._split}").forward_pre(xs)

    def back(self, xs: list[torch.Tensor]) -> torch.Tensor:
        xs = self._after_stage(self._split, getattr(self, f"s{self._split}").finish(list(xs)))
        for s in range(self._split + 1, 6):
            xs = self._after_stage(s, getattr(self, f"s{s}")(xs))
        return self.head(xs)


class I3D(InflatedResNet):
    """``i3d_3x1x1``: PySlowFast "i3d" kernels and the [2,1,1] temporal max pool after res2."""

    temporal_kernels = I3D_TEMPORAL_KERNELS
    pool1_t = 2


class Bottleneck3x3x3Transform(nn.Module):
    """a 1x1x1 -> BN -> ReLU -> b kt x3x3 (spatial stride) -> BN -> ReLU -> c 1x1x1 -> BN."""

    def __init__(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int, num_groups: int = 1):
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.a_bn = _bn3d(dim_inner)
        self.a_relu = nn.ReLU()
        self.b = nn.Conv3d(dim_inner, dim_inner, [kt, 3, 3], stride=[1, stride, stride],
                           padding=[kt // 2, 1, 1], groups=num_groups, bias=False)
        self.b_bn = _bn3d(dim_inner)
        self.b_relu = nn.ReLU()
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn3d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class I3DFull(InflatedResNet):
    """``i3d_3x3x3``: seed 003's fully inflated I3D-R50 (stem 3x7x7, every 3x3 -> 3x3x3)."""

    temporal_kernels = ([3], [3], [3], [3], [3])
    pool1_t = 1

    def _make_transform(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int,
                        num_groups: int, temporal_stride: int = 1) -> nn.Module:
        return Bottleneck3x3x3Transform(dim_in, dim_out, kt, stride, dim_inner, num_groups)
