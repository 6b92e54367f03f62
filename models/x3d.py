"""PySlowFast X3D (S/M/L/XL) with an optional SGS layer, in the ``VideoNet`` split contract.

Module names equal PySlowFast's ``slowfast/models/video_model_builder.X3D`` so its state-dict
keys carry over: ``s1.pathway0_stem.{conv_xy,conv,bn}``, ``s{2..5}.pathway0_res{i}.branch2.
{a,a_bn,b,b_bn,se.fc1,se.fc2,c,c_bn}`` (+ ``branch1``/``branch1_bn`` on the first block) and
``head.{conv_5,conv_5_bn,lin_5,projection}``.

Two deliberate differences from PySlowFast, neither of which changes a parameter name:

* PySlowFast's ``ResBlock`` applies its own ReLU; here blocks return the pre-activation sum and
  ``ResStage`` applies the ReLU, so SGS can read the pre-ReLU tensor (the official ATFR contract).
  ReLU has no parameters, so the numbers are identical for a static model.
* The head pools with ``AdaptiveAvgPool3d(1)`` instead of ``AvgPool3d(pool_size, stride=1)``:
  after SGS the temporal length varies per clip. At the training crop size both give a 1x1x1 map.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from atfr.errors import ATFRError

from . import config as C
from .base import VideoNet
from .resnet_blocks import ResBlock, ResStage, _bn3d
from .sgs import Swish, TSLayer

STAGE_NAMES = ("res2", "res3", "res4", "res5")

# PySlowFast configs/Kinetics/X3D_{S,M,L}.yaml (XL is not in PySlowFast; see X3D_VARIANTS doc).
# factors: WIDTH_FACTOR, DEPTH_FACTOR, BOTTLENECK_FACTOR; frames/crop: the single-view test input.
X3D_VARIANTS: dict[str, dict[str, Any]] = {
    "S": {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 2.2, "BOTTLENECK_FACTOR": 2.25, "num_frames": 13, "crop_size": 160},
    "M": {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 2.2, "BOTTLENECK_FACTOR": 2.25, "num_frames": 16, "crop_size": 224},
    "L": {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 5.0, "BOTTLENECK_FACTOR": 2.25, "num_frames": 16, "crop_size": 312},
    # XL: the X3D paper expands L in width; 2.9 reproduces its 11.09 M parameters (tested).
    "XL": {"WIDTH_FACTOR": 2.9, "DEPTH_FACTOR": 5.0, "BOTTLENECK_FACTOR": 2.25, "num_frames": 16, "crop_size": 356},
}
# (blocks before depth scaling, width before width scaling, spatial stride) of res2..res5.
_BLOCK_BASIS_BLOCKS = (1, 2, 5, 3)
_TEMPORAL_KERNEL = (5, 3, 3, 3, 3)  # PySlowFast _TEMPORAL_KERNEL_BASIS["x3d"]
_SE_RATIO = 0.0625


def round_width(width: float, multiplier: float, min_depth: int = 8, divisor: int = 8) -> int:
    """PySlowFast ``round_width``: scale and round to a multiple of ``divisor`` (>= 90 %)."""
    if not multiplier:
        return int(width)
    width *= multiplier
    new = max(min_depth, int(width + divisor / 2) // divisor * divisor)
    if new < 0.9 * width:
        new += divisor
    return int(new)


def round_repeats(repeats: int, multiplier: float) -> int:
    return repeats if not multiplier else int(math.ceil(multiplier * repeats))


def x3d_factors(cfg: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """(variant, {WIDTH_FACTOR, DEPTH_FACTOR, BOTTLENECK_FACTOR}) for a config.

    The variant preset supplies each factor unless the config holds a value that differs from the
    official yacs default (1.0): merged configs cannot tell "left at default" from "set to 1.0",
    and no official X3D config uses 1.0, so a non-default value must have been set on purpose
    (e.g. an official X3D_L.yaml dump without our VARIANT key).
    """
    x = cfg.get("X3D", {})
    variant = str(x.get("VARIANT", "S")).upper()
    if variant not in X3D_VARIANTS:
        raise ATFRError(f"config: X3D.VARIANT={variant!r} is not supported ({', '.join(X3D_VARIANTS)})")
    preset = X3D_VARIANTS[variant]
    out = {}
    for key in ("WIDTH_FACTOR", "DEPTH_FACTOR", "BOTTLENECK_FACTOR"):
        v = float(x.get(key, C.DEFAULTS["X3D"][key]))
        out[key] = v if v != float(C.DEFAULTS["X3D"][key]) else float(preset[key])
    return variant, out


class X3DStem(nn.Module):
    """conv_xy [1,3,3] stride [1,2,2] -> depthwise conv [kt,1,1] -> BN -> ReLU (no pooling)."""

    def __init__(self, dim_in: int, dim_out: int, kt: int):
        super().__init__()
        self.conv_xy = nn.Conv3d(dim_in, dim_out, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.conv = nn.Conv3d(dim_out, dim_out, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False, groups=dim_out)
        self.bn = _bn3d(dim_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.conv_xy(x))))


class X3DModelStem(nn.Module):
    """Holds ``pathway0_stem`` so keys read ``s1.pathway0_stem.*`` as in PySlowFast."""

    def __init__(self, dim_in: int, dim_out: int, kt: int):
        super().__init__()
        self.pathway0_stem = X3DStem(dim_in, dim_out, kt)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.pathway0_stem(xs[0])]


class SE(nn.Module):
    """Squeeze-excitation with 1x1x1 convs (PySlowFast ``SE``; fc width rounded to 8)."""

    def __init__(self, dim_in: int, ratio: float):
        super().__init__()
        dim_fc = round_width(dim_in, ratio)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc1 = nn.Conv3d(dim_in, dim_fc, 1, bias=True)
        self.fc1_act = nn.ReLU()
        self.fc2 = nn.Conv3d(dim_fc, dim_in, 1, bias=True)
        self.fc2_sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2_sig(self.fc2(self.fc1_act(self.fc1(self.avg_pool(x)))))
        return x * s


class X3DTransform(nn.Module):
    """a 1x1x1 -> BN -> ReLU -> b kt x3x3 channelwise (stride) -> BN -> [SE] -> Swish -> c 1x1x1 -> BN.

    SE on every other block (block_idx 0, 2, ...), as PySlowFast's ``(block_idx + 1) % 2``.
    """

    def __init__(self, dim_in: int, dim_out: int, kt: int, stride: int, dim_inner: int, num_groups: int,
                 block_idx: int, se_ratio: float = _SE_RATIO):
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.a_bn = _bn3d(dim_inner)
        self.a_relu = nn.ReLU()
        self.b = nn.Conv3d(dim_inner, dim_inner, (kt, 3, 3), stride=(1, stride, stride),
                           padding=(kt // 2, 1, 1), groups=num_groups, bias=False)
        self.b_bn = _bn3d(dim_inner)
        if se_ratio > 0 and (block_idx + 1) % 2:
            self.se = SE(dim_inner, se_ratio)
        self.b_relu = Swish()
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = _bn3d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_bn(self.b(x))
        if hasattr(self, "se"):
            x = self.se(x)
        x = self.b_relu(x)
        return self.c_bn(self.c(x))


class X3DHead(nn.Module):
    """conv_5 1x1x1 -> BN -> ReLU -> global avg pool -> lin_5 1x1x1 [-> BN] -> ReLU -> dropout -> projection.

    Returns logits (PySlowFast's eval head applies softmax afterwards).
    """

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, num_classes: int, dropout_rate: float,
                 bn_lin5: bool):
        super().__init__()
        self.conv_5 = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.conv_5_bn = _bn3d(dim_inner)
        self.conv_5_relu = nn.ReLU()
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.lin_5 = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        if bn_lin5:
            self.lin_5_bn = _bn3d(dim_out)
        self.lin_5_relu = nn.ReLU()
        if dropout_rate > 0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(dim_out, num_classes, bias=True)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x = self.avg_pool(self.conv_5_relu(self.conv_5_bn(self.conv_5(xs[0]))))
        x = self.lin_5(x)
        if hasattr(self, "lin_5_bn"):
            x = self.lin_5_bn(x)
        x = self.lin_5_relu(x).flatten(1)
        if hasattr(self, "dropout"):
            x = self.dropout(x)
        return self.projection(x)


class X3D(VideoNet):
    """X3D with SGS at the end of ``MODEL.TEMPORAL_LAYER_STAGE`` (res2..res5), on the last block's
    pre-ReLU sum. Static models (stage none/conv1) still split after res2."""

    num_pathways = 1

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        self.input_spec = C.input_spec(cfg)
        x = cfg["X3D"]
        self.variant, f = x3d_factors(cfg)
        w_mul, d_mul, b_mul = f["WIDTH_FACTOR"], f["DEPTH_FACTOR"], f["BOTTLENECK_FACTOR"]
        dim_c1 = int(x.get("DIM_C1", 12))
        dim_res2 = round_width(dim_c1, 2.0) if bool(x.get("SCALE_RES2", False)) else dim_c1
        base = [dim_res2]
        for _ in range(3):
            base.append(round_width(base[-1], 2.0))
        channelwise = bool(x.get("CHANNELWISE_3x3x3", True))
        num_groups = int(cfg["RESNET"].get("NUM_GROUPS", 1))
        self.sgs_stage = C.sgs_stage(cfg)
        nbins = int(cfg["TEMPORAL_SAMPLING"]["NUM_BINS"][0])

        dim_in = round_width(dim_c1, w_mul)
        self.s1 = X3DModelStem(int(cfg["DATA"]["INPUT_CHANNEL_NUM"][0]), dim_in, _TEMPORAL_KERNEL[0])
        self.stage_dims: list[int] = []
        self.stage_depths: list[int] = []
        dim_inner = dim_in
        for idx, name in enumerate(STAGE_NAMES):
            dim_out = round_width(base[idx], w_mul)
            dim_inner = int(b_mul * dim_out)
            n_rep = round_repeats(_BLOCK_BASIS_BLOCKS[idx], d_mul)
            blocks = []
            for i in range(n_rep):
                din = dim_in if i == 0 else dim_out
                s = 2 if i == 0 else 1
                tr = X3DTransform(din, dim_out, _TEMPORAL_KERNEL[idx + 1], s, dim_inner,
                                  dim_inner if channelwise else num_groups, block_idx=i)
                blocks.append(ResBlock(din, dim_out, tr, s))
            sgs = None
            if self.sgs_stage == name:
                sgs = {0: C.make_sgs_spec(cfg, f"s{idx + 2}.ts_layer", 0, dim_out, nbins)}
            self.add_module(f"s{idx + 2}", ResStage([blocks], sgs))
            self.stage_dims.append(dim_out)
            self.stage_depths.append(n_rep)
            dim_in = dim_out
        self.head = X3DHead(dim_in, dim_inner, int(x.get("DIM_C5", 2048)), int(cfg["MODEL"]["NUM_CLASSES"]),
                            float(cfg["MODEL"]["DROPOUT_RATE"]), bool(x.get("BN_LIN5", False)))
        self._split = int(self.sgs_stage[3]) if self.sgs_stage else 2

    def ts_layer_map(self) -> dict[int, TSLayer]:
        return getattr(self, f"s{self._split}").ts_layers()

    def front(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = self.s1(list(xs))
        for s in range(2, self._split):
            xs = getattr(self, f"s{s}")(xs)
        return getattr(self, f"s{self._split}").forward_pre(xs)

    def back(self, xs: list[torch.Tensor]) -> torch.Tensor:
        xs = getattr(self, f"s{self._split}").finish(list(xs))
        for s in range(self._split + 1, 6):
            xs = getattr(self, f"s{s}")(xs)
        return self.head(xs)
