"""Model configs: the official yacs-style YAML (its keys) and our compact format.

Internally every builder reads one nested dict with the official keys (``MODEL.ARCH``,
``RESNET.DEPTH``, ``TEMPORAL_SAMPLING.NUM_BINS`` ...). Official dumps are merged over the
defaults below; our own compact config (``{"arch": "x3d", "variant": "S", ...}``) is expanded
into the same keys by :func:`from_compact`.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from atfr.errors import ATFRError
from atfr.spec import InputSpec, SGSSpec

# Only the keys the builders read, with the official defaults (sgs/config/defaults.py).
DEFAULTS: dict[str, Any] = {
    "MODEL": {
        "ARCH": "3dresnet",
        "NUM_CLASSES": 400,
        "DROPOUT_RATE": 0.5,
        "TEMPORAL_LAYER_STAGE": "none",
        "HEAD_ACT": "softmax",
    },
    "RESNET": {
        "DEPTH": 50,
        "NUM_GROUPS": 1,
        "WIDTH_PER_GROUP": 64,
        "WIDTH_PER_GROUP_SLOW": 64,
        "WIDTH_PER_GROUP_FAST": 8,
        "TRANS_FUNC": "bottleneck_transform",
        "STRIDE_1X1": False,
        "INPLACE_RELU": True,
        "NUM_BLOCK_TEMP_KERNEL": [[3], [4], [6], [3]],
        "SPATIAL_STRIDES": [[1], [2], [2], [2]],
        "SPATIAL_DILATIONS": [[1], [1], [1], [1]],
    },
    "SLOWFAST": {"ALPHA": 8, "BETA_INV": 8, "FUSION_CONV_CHANNEL_RATIO": 2, "FUSION_KERNEL_SZ": 5},
    "X3D": {
        "WIDTH_FACTOR": 1.0,
        "DEPTH_FACTOR": 1.0,
        "BOTTLENECK_FACTOR": 1.0,
        "DIM_C1": 12,
        "DIM_C5": 2048,
        "SCALE_RES2": False,
        "BN_LIN5": False,
        "CHANNELWISE_3x3x3": True,
    },
    "NONLOCAL": {"LOCATION": [[[]], [[]], [[]], [[]]]},
    # Ours (no official counterpart): see models/r2plus1d.py and models/tsn.py.
    "R2PLUS1D": {"MID_CHANNELS": "out", "TEMPORAL_STRIDES": [1, 2, 2, 2]},
    "TSN": {"TEMPORAL_POOL": False},
    "TEMPORAL_SAMPLING": {
        "NUM_BINS": [-1],
        "DISTANCE_TYPE": "L2",
        "LATENT_DIMENSION": 3,
        "KERNEL_TYPE": "linear",
        "USE_RELU": True,
        "DROP_ZERO_BINS": True,
        "PATHWAYS": [0, 1],
    },
    "DATA": {
        "NUM_FRAMES": 8,
        "SAMPLING_RATE": 8,
        "TARGET_FPS": 30,
        "TEST_CROP_SIZE": 256,
        "TRAIN_CROP_SIZE": 224,
        "INPUT_CHANNEL_NUM": [3, 3],
        "MEAN": [0.45, 0.45, 0.45],
        "STD": [0.225, 0.225, 0.225],
        "TRAIN_JITTER_SCALES": [256, 320],
    },
    "TEST": {"NUM_ENSEMBLE_VIEWS": 10, "NUM_SPATIAL_CROPS": 3},
}

KNOWN_ARCHS = ("3dresnet", "slowfast", "x3d", "r2plus1d", "i3d_3x1x1", "i3d_3x3x3", "tsn", "tam", "adafuse")
# Old names that keep working (configs and checkpoints written with them): name -> canonical.
ARCH_ALIASES = {"i3d": "i3d_3x1x1"}
# Single-pathway ResNet-50-style archs (NUM_BLOCK_TEMP_KERNEL etc. filled by from_compact).
RESNET_ARCHS = ("3dresnet", "slowfast", "r2plus1d", "i3d_3x1x1", "i3d_3x3x3", "tsn", "tam")


def canonical_arch(name: Any) -> str:
    """``MODEL.ARCH`` lower-cased with aliases resolved (``i3d`` -> ``i3d_3x1x1``)."""
    a = str(name).lower()
    return ARCH_ALIASES.get(a, a)
STAGES = ("none", "conv1", "res2", "res3", "res4", "res5")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_official_yaml(text: str, source: str = "config") -> dict[str, Any]:
    """Parse an official cfg dump (yacs YAML) and fill defaults for keys the dump omits."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "invalid YAML"
        raise ATFRError(f"{source}: not a valid YAML config ({first})") from None
    if not isinstance(raw, dict) or "MODEL" not in raw:
        raise ATFRError(f"{source}: not an ATFR/PySlowFast config (no MODEL section)")
    cfg = _merge(DEFAULTS, raw)
    validate(cfg, source)
    return cfg


def validate(cfg: dict[str, Any], source: str = "config") -> None:
    arch = canonical_arch(cfg["MODEL"]["ARCH"])
    if arch not in KNOWN_ARCHS:
        raise ATFRError(
            f"{source}: unknown architecture MODEL.ARCH={cfg['MODEL']['ARCH']!r}; "
            f"supported: {', '.join(KNOWN_ARCHS)} (alias: {', '.join(ARCH_ALIASES)})"
        )
    stage = cfg["MODEL"]["TEMPORAL_LAYER_STAGE"]
    if stage not in STAGES:
        raise ATFRError(
            f"{source}: MODEL.TEMPORAL_LAYER_STAGE={stage!r} is not supported "
            f"(one SGS stage at most: {', '.join(STAGES)})"
        )


def sgs_stage(cfg: dict[str, Any]) -> str | None:
    """The stage that ends with SGS, or None. 'conv1' means no SGS in the official code."""
    stage = cfg["MODEL"]["TEMPORAL_LAYER_STAGE"]
    return None if stage in ("none", "conv1") else stage


def sgs_common(cfg: dict[str, Any]) -> dict[str, Any]:
    ts = cfg["TEMPORAL_SAMPLING"]
    return dict(
        latent_dim=int(ts["LATENT_DIMENSION"]),
        distance=str(ts["DISTANCE_TYPE"]),
        kernel=str(ts["KERNEL_TYPE"]),
        drop_bins=bool(ts["DROP_ZERO_BINS"]),
        use_relu=bool(ts["USE_RELU"]),
    )


def make_sgs_spec(cfg: dict[str, Any], name: str, pathway: int, channels: int, num_bins: int) -> SGSSpec:
    try:
        return SGSSpec(name=name, pathway=pathway, channels=channels, num_bins=int(num_bins), **sgs_common(cfg))
    except ValueError as e:
        raise ATFRError(f"config: {e}") from None


def input_spec(cfg: dict[str, Any]) -> InputSpec:
    d = cfg["DATA"]
    arch = cfg["MODEL"]["ARCH"]
    crop = int(d["TEST_CROP_SIZE"])
    short = int(d.get("TEST_SHORT_SIDE", crop))
    return InputSpec(
        num_frames=int(d["NUM_FRAMES"]),
        sampling_rate=int(d["SAMPLING_RATE"]),
        target_fps=float(d.get("TARGET_FPS", 30)),
        crop_size=crop,
        short_side=short,
        mean=tuple(float(v) for v in d["MEAN"]),
        std=tuple(float(v) for v in d["STD"]),
        slowfast_alpha=int(cfg["SLOWFAST"]["ALPHA"]) if arch == "slowfast" else 0,
    )


def from_compact(c: dict[str, Any]) -> dict[str, Any]:
    """Expand our compact config into official keys.

    Keys: arch, num_classes, num_frames, sampling_rate, crop_size, sgs_stage ('none'|'res2'..),
    and optional depth, variant (X3D S/M/L/XL), width_per_group, width_per_group_fast,
    alpha, beta_inv, fusion_kernel, num_bins, latent_dim, distance, kernel, drop_bins,
    use_relu, mean, std, short_side, x3d (dict of X3D.* overrides), resnet (dict of RESNET.*),
    temporal_pool (tsn/tam: Chen et al.'s temporal max pools after res2..res4), r2plus1d_mid
    ('out' | 'param_matched') and temporal_strides (r2plus1d, res2..res5).
    """
    if not isinstance(c, dict) or "arch" not in c:
        raise ATFRError("config: our compact config needs at least an 'arch' key")
    arch = str(c["arch"]).lower()
    if arch == "adafuse":  # its own keys (models/adafuse_config.py)
        from .adafuse_config import from_compact as adafuse_from_compact
        return adafuse_from_compact(c)
    if canonical_arch(arch) not in KNOWN_ARCHS:
        raise ATFRError(f"config: unknown architecture {c['arch']!r}; supported: {', '.join(KNOWN_ARCHS)} "
                        f"(alias: {', '.join(ARCH_ALIASES)})")
    if arch == "x3d":
        # X3D variants fix their own single-view input (S: 13x160, M: 16x224, ...).
        from .x3d import X3D_VARIANTS
        v = X3D_VARIANTS.get(str(c.get("variant", "S")).upper())
        if v is None:
            raise ATFRError(f"config: unknown X3D variant {c.get('variant')!r} (S, M, L, XL)")
        c = {"num_frames": v["num_frames"], "crop_size": v["crop_size"], **c}
    over: dict[str, Any] = {
        "MODEL": {
            "ARCH": arch,
            "NUM_CLASSES": int(c.get("num_classes", 400)),
            "TEMPORAL_LAYER_STAGE": c.get("sgs_stage", "res2"),
            "DROPOUT_RATE": float(c.get("dropout", 0.5)),
        },
        "DATA": {
            "NUM_FRAMES": int(c.get("num_frames", 16)),
            "SAMPLING_RATE": int(c.get("sampling_rate", 1)),
            "TEST_CROP_SIZE": int(c.get("crop_size", 224)),
            "TEST_SHORT_SIDE": int(c.get("short_side", c.get("crop_size", 224))),
            "MEAN": list(c.get("mean", [0.45] * 3)),
            "STD": list(c.get("std", [0.225] * 3)),
            "TARGET_FPS": float(c.get("target_fps", 30)),
        },
        "TEMPORAL_SAMPLING": {
            "NUM_BINS": c.get("num_bins", [-1, -1] if arch == "slowfast" else [-1]),
            "LATENT_DIMENSION": int(c.get("latent_dim", 8)),
            "DISTANCE_TYPE": c.get("distance", "L2"),
            "KERNEL_TYPE": c.get("kernel", "linear"),
            "DROP_ZERO_BINS": bool(c.get("drop_bins", True)),
            "USE_RELU": bool(c.get("use_relu", True)),
            "PATHWAYS": list(c.get("sgs_pathways", [0, 1])),
        },
        "RESNET": dict(c.get("resnet", {})),
        "X3D": dict(c.get("x3d", {})),
        "SLOWFAST": {},
        "TSN": {},
        "R2PLUS1D": {},
    }
    if "temporal_pool" in c:
        over["TSN"]["TEMPORAL_POOL"] = bool(c["temporal_pool"])
    if "r2plus1d_mid" in c:
        over["R2PLUS1D"]["MID_CHANNELS"] = str(c["r2plus1d_mid"])
    if "temporal_strides" in c:
        over["R2PLUS1D"]["TEMPORAL_STRIDES"] = [int(v) for v in c["temporal_strides"]]
    if isinstance(over["TEMPORAL_SAMPLING"]["NUM_BINS"], int):
        over["TEMPORAL_SAMPLING"]["NUM_BINS"] = [over["TEMPORAL_SAMPLING"]["NUM_BINS"]]
    for key, ours in (("DEPTH", "depth"), ("WIDTH_PER_GROUP", "width_per_group"),
                      ("WIDTH_PER_GROUP_SLOW", "width_per_group_slow"),
                      ("WIDTH_PER_GROUP_FAST", "width_per_group_fast")):
        if ours in c:
            over["RESNET"][key] = int(c[ours])
    for key, ours in (("ALPHA", "alpha"), ("BETA_INV", "beta_inv"), ("FUSION_KERNEL_SZ", "fusion_kernel")):
        if ours in c:
            over["SLOWFAST"][key] = int(c[ours])
    if "variant" in c:
        over["X3D"]["VARIANT"] = str(c["variant"]).upper()
    depth = int(over["RESNET"].get("DEPTH", 50))
    if "NUM_BLOCK_TEMP_KERNEL" not in over["RESNET"] and canonical_arch(arch) in RESNET_ARCHS:
        blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}.get(depth, (3, 4, 6, 3))
        npw = 2 if arch == "slowfast" else 1
        over["RESNET"]["NUM_BLOCK_TEMP_KERNEL"] = [[b] * npw for b in blocks]
        over["RESNET"]["SPATIAL_STRIDES"] = [[s] * npw for s in (1, 2, 2, 2)]
        over["RESNET"]["SPATIAL_DILATIONS"] = [[1] * npw for _ in range(4)]
    if arch == "slowfast":
        over["DATA"]["INPUT_CHANNEL_NUM"] = [3, 3]
        over["NONLOCAL"] = {"LOCATION": [[[], []]] * 4}
    else:
        over["DATA"]["INPUT_CHANNEL_NUM"] = [3]
        over["NONLOCAL"] = {"LOCATION": [[[]]] * 4}
    cfg = _merge(DEFAULTS, over)
    validate(cfg, "config")
    return cfg


def load_config_file(path: str) -> dict[str, Any]:
    """Official YAML dump or our compact YAML/JSON (detected by its 'arch' key)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ATFRError(f"cannot read config {path}: {e.strerror}") from None
    from .adafuse_config import from_official_text, looks_official
    if looks_official(text):  # AdaFuse's main_gate.py flags or its args.txt
        return from_official_text(text, path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ATFRError(f"{path}: not a valid YAML/JSON config") from None
    if isinstance(raw, dict) and "arch" in raw:
        return from_compact(raw)
    return load_official_yaml(text, path)
