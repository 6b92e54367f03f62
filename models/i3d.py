"""I3D-R50 (ResNet-50 inflated, PySlowFast "i3d" style) with SGS after res2, as in the ATFR paper.

Not checkpoint-compatible with any official ATFR release (the official code builds only the
3DResNet and SlowFast); names follow PySlowFast's ``ResNet`` (``s1.pathway0_stem``,
``s{2..5}.pathway0_res{i}.branch2.{a,b,c}``, ``pathway0_pool``, ``head.projection``).

PySlowFast "i3d": stem [5,7,7]; temporal kernels per stage [[3]], [[3,1]], [[3,1]], [[1,3]]
(cycled over the blocks, then 1 after NUM_BLOCK_TEMP_KERNEL blocks); a [2,1,1] temporal max pool
after res2. SGS sits at the end of res2 (before that pool), on the last block's pre-ReLU sum.

:class:`InflatedResNet` is the single-pathway ResNet skeleton shared with R(2+1)D.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from atfr.errors import ATFRError

from . import config as C
from .base import VideoNet
from .resnet_blocks import BottleneckTransform, ResBlock, ResNetAdaptHead, ResStage, VideoModelStem
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
                tr = self._make_transform(din, dims[idx + 1], kts[i], s, inners[idx], g)
                blocks.append(ResBlock(din, dims[idx + 1], tr, s))
            sgs = None
            if self.sgs_stage == name:
                sgs = {0: C.make_sgs_spec(cfg, f"s{idx + 2}.ts_layer", 0, dims[idx + 1], nbins)}
            self.add_module(f"s{idx + 2}", ResStage([blocks], sgs))
            if idx == 0 and self.pool1_t > 1:
                # ceil_mode keeps B' = 1 (or any odd B') valid after SGS; identical for even T.
                self.pathway0_pool = nn.MaxPool3d([self.pool1_t, 1, 1], stride=[self.pool1_t, 1, 1],
                                                  ceil_mode=True)
        self.head = ResNetAdaptHead([dims[-1]], int(cfg["MODEL"]["NUM_CLASSES"]),
                                    float(cfg["MODEL"]["DROPOUT_RATE"]))
        self._split = int(self.sgs_stage[3]) if self.sgs_stage else 2

    # -- per-architecture pieces ----------------------------------------------------------------
    def _make_stem(self, dim_in: int, dim_out: int, kt: int) -> nn.Module:
        return VideoModelStem([dim_in], [dim_out], [[kt, 7, 7]], [[1, 2, 2]], [[kt // 2, 3, 3]])

    def _make_transform(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int,
                        num_groups: int) -> nn.Module:
        return BottleneckTransform(dim_in, dim_out, kt, stride, dim_inner, num_groups)

    # -- VideoNet contract ----------------------------------------------------------------------
    def ts_layer_map(self) -> dict[int, TSLayer]:
        return getattr(self, f"s{self._split}").ts_layers()

    def _after_stage(self, s: int, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if s == 2 and hasattr(self, "pathway0_pool"):
            return [self.pathway0_pool(xs[0])]
        return xs

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
    """I3D-R50: PySlowFast "i3d" kernels and the [2,1,1] temporal max pool after res2."""

    temporal_kernels = I3D_TEMPORAL_KERNELS
    pool1_t = 2
