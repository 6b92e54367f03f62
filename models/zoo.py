"""Build a model from a config dict (official keys); the one entry point of the zoo.

Architectures (``MODEL.ARCH`` / compact ``arch``): ``3dresnet``, ``slowfast``, ``x3d``,
``r2plus1d``, ``i3d_3x1x1`` (alias ``i3d``: PySlowFast's I3D-R50), ``i3d_3x3x3`` (seed 003's
fully inflated I3D-R50), ``tsn`` and ``tam`` (seed 003's 2D baselines on ResNet-50), ``adafuse`` (AdaFuse-TSN/TSM,
models/adafuse.py).
"""

from __future__ import annotations

from typing import Any

from atfr.errors import ATFRError

from . import config as C
from .base import VideoNet


def build_model(cfg: dict[str, Any]) -> VideoNet:
    C.validate(cfg)
    arch = C.canonical_arch(cfg["MODEL"]["ARCH"])
    if arch == "3dresnet":
        from .resnet3d import ResNet3D
        return ResNet3D(cfg)
    if arch == "slowfast":
        from .resnet3d import SlowFast
        return SlowFast(cfg)
    if arch == "x3d":
        from .x3d import X3D
        return X3D(cfg)
    if arch == "r2plus1d":
        from .r2plus1d import R2Plus1D
        return R2Plus1D(cfg)
    if arch == "i3d_3x1x1":
        from .i3d import I3D
        return I3D(cfg)
    if arch == "i3d_3x3x3":
        from .i3d import I3DFull
        return I3DFull(cfg)
    if arch == "tsn":
        from .tsn import TSN
        return TSN(cfg)
    if arch == "tam":
        from .tsn import TAM
        return TAM(cfg)
    if arch == "adafuse":
        from .adafuse import AdaFuseTSN
        return AdaFuseTSN(cfg)
    raise ATFRError(f"unknown architecture {arch!r}")
