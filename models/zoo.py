"""Build a model from a config dict (official keys); the one entry point of the zoo."""

from __future__ import annotations

from typing import Any

from atfr.errors import ATFRError

from . import config as C
from .base import VideoNet


def build_model(cfg: dict[str, Any]) -> VideoNet:
    C.validate(cfg)
    arch = str(cfg["MODEL"]["ARCH"]).lower()
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
    if arch == "i3d":
        from .i3d import I3D
        return I3D(cfg)
    raise ATFRError(f"unknown architecture {arch!r}")
