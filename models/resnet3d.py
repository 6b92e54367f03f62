"""The official ATFR code's ``ResNet3D`` ("3DResNet", thin widths) and ``SlowFastModel``.

Module names equal the official ones, so official ``model_state`` dicts load strictly.
Temporal kernels and widths follow sgs/models/video_model_builder.py (see
shared/docs/sgs-semantics.md §3).
"""

from __future__ import annotations

from typing import Any

import torch

from atfr.errors import ATFRError

from . import config as C
from .base import VideoNet
from .resnet_blocks import (BottleneckTransform, FuseFastToSlow, ResBlock, ResNetAdaptHead,
                            ResStage, VideoModelStem)

STAGE_DEPTH = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
TEMPORAL_KERNELS = {
    "3dresnet": [[5], [3], [1], [1], [3]],
    "slowfast": [[1, 5], [1, 3], [1, 3], [3, 3], [3, 3]],
}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def _depth(cfg) -> tuple[int, int, int, int]:
    d = int(cfg["RESNET"]["DEPTH"])
    if d not in STAGE_DEPTH:
        raise ATFRError(f"config: RESNET.DEPTH={d} is not supported (18, 50, 101)")
    return STAGE_DEPTH[d]


def _stage(cfg, idx, dim_in, dim_out, dim_inner, temp_kernels, sgs) -> ResStage:
    """One ResStage (idx 0..3 for res2..res5) over 1 or 2 pathways."""
    depth = _depth(cfg)[idx]
    r = cfg["RESNET"]
    n_temp = r["NUM_BLOCK_TEMP_KERNEL"][idx]
    stride = r["SPATIAL_STRIDES"][idx]
    dil = r["SPATIAL_DILATIONS"][idx]
    blocks = []
    for p in range(len(dim_in)):
        kts = ([temp_kernels[p]] * depth)[: n_temp[p]] + [1] * (depth - n_temp[p])
        row = []
        for i in range(depth):
            din = dim_in[p] if i == 0 else dim_out[p]
            s = stride[p] if i == 0 else 1
            tr = BottleneckTransform(din, dim_out[p], kts[i], s, dim_inner[p], int(r["NUM_GROUPS"]),
                                     stride_1x1=bool(r["STRIDE_1X1"]), dilation=dil[p])
            row.append(ResBlock(din, dim_out[p], tr, s))
        blocks.append(row)
    return ResStage(blocks, sgs)


class ResNet3D(VideoNet):
    """Single-pathway "3DResNet" of the ATFR paper (stem 8, res2 32, res3 256, res4 512, res5 1024)."""

    num_pathways = 1

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        self.input_spec = C.input_spec(cfg)
        r = cfg["RESNET"]
        g = int(r["NUM_GROUPS"])
        wslow = int(r["WIDTH_PER_GROUP_SLOW"])
        wfast = int(r["WIDTH_PER_GROUP_FAST"])
        inner, inner_fast = g * wslow // 2, g * wfast
        tk = TEMPORAL_KERNELS["3dresnet"]
        self.sgs_stage = C.sgs_stage(cfg)
        nbins = cfg["TEMPORAL_SAMPLING"]["NUM_BINS"]
        # Official quirk: for one pathway NUM_BINS -1 is rewritten to DATA.NUM_FRAMES at build.
        b = int(nbins[0])
        b = int(cfg["DATA"]["NUM_FRAMES"]) if b == -1 else b
        dims = [wfast, wfast * 4, wslow * 4, wslow * 8, wslow * 16]
        inners = [inner_fast, inner * 2, inner * 4, inner * 8]
        self.s1 = VideoModelStem([cfg["DATA"]["INPUT_CHANNEL_NUM"][0]], [wfast], [[tk[0][0], 7, 7]],
                                 [[1, 2, 2]], [[tk[0][0] // 2, 3, 3]])
        for idx, name in enumerate(STAGE_NAMES):
            sgs = None
            if self.sgs_stage == name:
                sgs = {0: C.make_sgs_spec(cfg, f"s{idx + 2}.ts_layer", 0, dims[idx + 1], b)}
            st = _stage(cfg, idx, [dims[idx]], [dims[idx + 1]], [inners[idx]], tk[idx + 1], sgs)
            self.add_module(f"s{idx + 2}", st)
            if idx == 0:
                self.pathway0_pool = torch.nn.MaxPool3d(1, 1, 0)  # identity, kept for naming parity
        self.head = ResNetAdaptHead([dims[-1]], int(cfg["MODEL"]["NUM_CLASSES"]),
                                    float(cfg["MODEL"]["DROPOUT_RATE"]))
        self._split = int(self.sgs_stage[3]) if self.sgs_stage else 2

    def ts_layer_map(self):
        return getattr(self, f"s{self._split}").ts_layers()

    def front(self, xs):
        xs = self.s1(list(xs))
        for s in range(2, self._split):
            xs = self._stage_full(s, xs)
        return getattr(self, f"s{self._split}").forward_pre(xs)

    def back(self, xs):
        xs = getattr(self, f"s{self._split}").finish(list(xs))
        if self._split == 2:
            xs = [self.pathway0_pool(xs[0])]
        for s in range(self._split + 1, 6):
            xs = self._stage_full(s, xs)
        return self.head(xs)

    def _stage_full(self, s, xs):
        xs = getattr(self, f"s{s}")(xs)
        if s == 2:
            xs = [self.pathway0_pool(xs[0])]
        return xs


class SlowFast(VideoNet):
    """SlowFast R50 (4x16, 8x8) with one SGS per pathway at the SGS stage (official naming)."""

    num_pathways = 2

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        self.input_spec = C.input_spec(cfg)
        r, sf = cfg["RESNET"], cfg["SLOWFAST"]
        g = int(r["NUM_GROUPS"])
        w = int(r["WIDTH_PER_GROUP"])
        beta, ratio = int(sf["BETA_INV"]), int(sf["FUSION_CONV_CHANNEL_RATIO"])
        alpha, fk = int(sf["ALPHA"]), int(sf["FUSION_KERNEL_SZ"])
        out_ratio = beta // ratio
        inner = g * w
        tk = TEMPORAL_KERNELS["slowfast"]
        self.sgs_stage = C.sgs_stage(cfg)
        ts = cfg["TEMPORAL_SAMPLING"]
        nbins = list(ts["NUM_BINS"])
        ts_pathways = list(ts.get("PATHWAYS", [0, 1]))
        if self.sgs_stage and len(nbins) != 2:
            raise ATFRError("config: SlowFast needs TEMPORAL_SAMPLING.NUM_BINS for both pathways")
        cin = cfg["DATA"]["INPUT_CHANNEL_NUM"]
        self.s1 = VideoModelStem(cin, [w, w // beta], [[tk[0][0], 7, 7], [tk[0][1], 7, 7]],
                                 [[1, 2, 2]] * 2, [[tk[0][0] // 2, 3, 3], [tk[0][1] // 2, 3, 3]])
        self.s1_fuse = FuseFastToSlow(w // beta, ratio, fk, alpha)
        mult = [1, 4, 8, 16, 32]
        for idx, name in enumerate(STAGE_NAMES):
            din = [w * mult[idx] + w * mult[idx] // out_ratio, w * mult[idx] // beta]
            dout = [w * mult[idx + 1], w * mult[idx + 1] // beta]
            dinner = [inner * (2 ** idx), inner * (2 ** idx) // beta]
            sgs = None
            if self.sgs_stage == name:
                # Only res2 honours TEMPORAL_SAMPLING.PATHWAYS in the official code; other
                # stages use the ResStage default [0, 1].
                pws = ts_pathways if name == "res2" else [0, 1]
                sgs = {p: C.make_sgs_spec(cfg, f"s{idx + 2}.pathway{p}_ts_layer", p, dout[p], int(nbins[p]))
                       for p in pws}
            self.add_module(f"s{idx + 2}", _stage(cfg, idx, din, dout, dinner, tk[idx + 1], sgs))
            if idx < 3:
                self.add_module(f"s{idx + 2}_fuse", FuseFastToSlow(dout[1], ratio, fk, alpha))
            if idx == 0:
                for p in range(2):
                    self.add_module(f"pathway{p}_pool", torch.nn.MaxPool3d(1, 1, 0))
        self.head = ResNetAdaptHead([w * 32, w * 32 // beta], int(cfg["MODEL"]["NUM_CLASSES"]),
                                    float(cfg["MODEL"]["DROPOUT_RATE"]))
        self._split = int(self.sgs_stage[3]) if self.sgs_stage else 2

    def ts_layer_map(self):
        return getattr(self, f"s{self._split}").ts_layers()

    def _after_stage(self, s, xs):
        if s < 5:
            xs = getattr(self, f"s{s}_fuse")(xs)
        if s == 2:
            xs = [self.pathway0_pool(xs[0]), self.pathway1_pool(xs[1])]
        return xs

    def front(self, xs):
        xs = self.s1_fuse(self.s1(list(xs)))
        for s in range(2, self._split):
            xs = self._after_stage(s, getattr(self, f"s{s}")(xs))
        return getattr(self, f"s{self._split}").forward_pre(xs)

    def back(self, xs):
        xs = getattr(self, f"s{self._split}").finish(list(xs))
        xs = self._after_stage(self._split, xs)
        for s in range(self._split + 1, 6):
            xs = self._after_stage(s, getattr(self, f"s{s}")(xs))
        return self.head(xs)
