"""AdaFuse configs: the official ``main_gate.py`` flags (a command line or its ``args.txt``) and
our compact form, both turned into one nested config dict with ``MODEL.ARCH = "adafuse"``.

The official training script is configured by ~300 argparse flags (``opts.py``); its ``args.txt``
is ``str(args)``, an ``argparse.Namespace(...)`` repr. We read both without executing anything:
a command line is split with :mod:`shlex` (everything before ``main_gate.py`` and after a shell
pipe is dropped) and parsed by a parser that knows only the flags that shape the network; an
``args.txt`` is scanned keyword by keyword and each value read with :func:`ast.literal_eval`.
Flags that change the network in ways this zoo does not build (other policy heads, dense gating,
embedding convs, handcrafted policies ...) are rejected by name when set; flags that only drive
training, data or logging are ignored.

The official script takes the class count from the dataset's class list (``return_dataset``
overrides ``--num_class``), so a command line gets it from the dataset name; ``args.txt`` is
written after that override and carries the real ``num_class``.
"""

from __future__ import annotations

import argparse
import ast
import shlex
from typing import Any

from atfr.errors import ATFRError

# Class counts of the official datasets (lines of data/<dataset>/classInd.txt in the official repo).
DATASET_CLASSES = {"something": 174, "somethingv2": 174, "jester": 27, "minik": 200}
DEPTHS = {"batenet18": 18, "batenet34": 34, "batenet50": 50, "batenet101": 101}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# What our builder reads (ADAFUSE section), with the official defaults.
DEFAULTS: dict[str, Any] = {
    "shift": False,
    "shift_div": 8,
    "gate_history": True,
    "gate_bn_between_fcs": False,
    "gate_relu_between_fcs": False,
    "shared_policy_net": False,
    "hidden_quota": -1,
    "gate_hidden_dim": 16,
    "relative_hidden_size": -1.0,
    "gate_reduce_type": "avg",
    "enabled_stages": [],
    "enabled_layers": [],
    "enable_from": 0,
    "disable_from": 4,
    # Not an official flag: the stem's width (stages: 1x, 2x, 4x, 8x it). 64 builds the official
    # ResNets; the built-in AdaFuse demo model (atfr/demo/train_adafuse.py) is thinner.
    "base_width": 64,
}

# Official flags that change the network and that we do not build: (flag, default it must keep).
UNSUPPORTED: dict[str, Any] = {
    "gate_no_skipping": False, "granularity": 1, "gate_channel_starts": 0, "gate_channel_ends": 64,
    "single_linear": False, "triple_linear": False, "dense_in_block": False, "policy_attention": False,
    "gate_conv_embed_type": "None", "gate_history_conv_type": "None", "gate_all_zero_policy": False,
    "gate_all_one_policy": False, "gate_only_current_policy": False, "gate_random_soft_policy": False,
    "gate_random_hard_policy": False, "gate_threshold": False, "gate_gumbel_use_soft": False,
    "temporal_pool": False, "non_local": False,
}
FLAG_ALIASES = {"gbn": "gate_bn_between_fcs", "grelu": "gate_relu_between_fcs", "gsmx": "gate_gumbel_softmax"}


def _official_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    p.add_argument("dataset", nargs="?")
    p.add_argument("modality", nargs="?")
    p.add_argument("--arch", default="BNInception")
    p.add_argument("--num_segments", type=int, default=3)
    p.add_argument("--num_class", type=int, default=None)
    p.add_argument("--dropout", "--do", type=float, default=0.5)
    p.add_argument("--ada_reso_skip", action="store_true")
    p.add_argument("--reso_list", type=int, nargs="+", default=[224])
    p.add_argument("--shift", action="store_true")
    p.add_argument("--shift_div", type=int, default=8)
    p.add_argument("--shift_place", default="blockres")
    p.add_argument("--gate_history", action="store_true")
    p.add_argument("--gate_bn_between_fcs", "--gbn", action="store_true")
    p.add_argument("--gate_relu_between_fcs", "--grelu", action="store_true")
    p.add_argument("--shared_policy_net", action="store_true")
    p.add_argument("--hidden_quota", type=int, default=-1)
    p.add_argument("--gate_hidden_dim", type=int, default=16)
    p.add_argument("--relative_hidden_size", type=float, default=-1.0)
    p.add_argument("--gate_reduce_type", default="avg")
    p.add_argument("--enabled_stages", type=int, nargs="+", default=[])
    p.add_argument("--enabled_layers", type=int, nargs="+", default=[])
    p.add_argument("--enable_from", type=int, default=0)
    p.add_argument("--disable_from", type=int, default=4)
    for flag, default in UNSUPPORTED.items():
        if isinstance(default, bool):
            p.add_argument("--" + flag, action="store_true")
        else:
            p.add_argument("--" + flag, type=type(default), default=default)
    return p


def parse_command_line(text: str, source: str = "config") -> dict[str, Any]:
    """The official flags from a ``main_gate.py`` command line (as in ``zz_eval.sh``)."""
    lines = [ln for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    calls = [ln for ln in lines if "main_gate.py" in ln]
    if len(calls) > 1:  # e.g. the whole zz_eval.sh: which model is meant is not ours to guess
        raise ATFRError(f"{source}: holds {len(calls)} main_gate.py command lines; keep the one that "
                        "trained this checkpoint")
    line = calls[0] if calls else (lines[0] if lines else "")
    try:
        words = shlex.split(line, comments=True)
    except ValueError as e:
        raise ATFRError(f"{source}: cannot split the command line ({e})") from None
    if "main_gate.py" in " ".join(words):
        words = words[[i for i, w in enumerate(words) if w.endswith("main_gate.py")][0] + 1:]
    for stop in ("|", ";", "&&", ">", "2>&1"):
        if stop in words:
            words = words[:words.index(stop)]
    try:
        ns, _unknown = _official_parser().parse_known_args(words)
    except (argparse.ArgumentError, SystemExit) as e:
        raise ATFRError(f"{source}: bad main_gate.py flags ({e})") from None
    d = vars(ns)
    if d.get("num_class") is None:
        ds = d.get("dataset")
        if ds not in DATASET_CLASSES:
            raise ATFRError(f"{source}: dataset {ds!r} is not one of the official datasets "
                            f"({', '.join(DATASET_CLASSES)}); add --num_class N")
        d["num_class"] = DATASET_CLASSES[ds]
    return d


def _split_top_level(body: str) -> list[str]:
    """Split ``a=1, b=[1, 2], c='x,y'`` at commas outside brackets and quotes."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_namespace(text: str, source: str = "config") -> dict[str, Any]:
    """The official flags from ``args.txt`` (``Namespace(arch='batenet50', ...)``), literals only."""
    t = text.strip()
    if not (t.startswith("Namespace(") and t.endswith(")")):
        raise ATFRError(f"{source}: not an args.txt (expected 'Namespace(...)')")
    d: dict[str, Any] = {}
    for item in _split_top_level(t[len("Namespace("):-1]):
        if item.startswith("**"):  # Python >= 3.9 puts non-identifier names in **{...}
            try:
                extra = ast.literal_eval(item[2:])
            except (ValueError, SyntaxError):
                raise ATFRError(f"{source}: unreadable entry {item[:40]!r}") from None
            d.update(extra if isinstance(extra, dict) else {})
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ATFRError(f"{source}: unreadable entry {item[:40]!r} (expected name=value)")
        try:
            d[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ATFRError(f"{source}: value of {key.strip()!r} is not a literal ({value.strip()[:40]!r})") from None
    if "arch" not in d:
        raise ATFRError(f"{source}: args.txt has no 'arch'")
    if d.get("num_class") is None:
        raise ATFRError(f"{source}: args.txt has no 'num_class'")
    return d


def looks_official(text: str) -> bool:
    t = text.lstrip()
    return t.startswith("Namespace(") or "main_gate.py" in t or t.startswith("--")


def from_official_text(text: str, source: str = "config") -> dict[str, Any]:
    flags = parse_namespace(text, source) if text.lstrip().startswith("Namespace(") \
        else parse_command_line(text, source)
    return from_flags(flags, source)


def from_flags(flags: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Official flag values (dest names) -> our nested config."""
    arch = str(flags.get("arch"))
    if arch not in DEPTHS:
        raise ATFRError(f"{source}: --arch {arch} is not an AdaFuse ResNet (supported: {', '.join(DEPTHS)})")
    if not flags.get("ada_reso_skip", False):
        raise ATFRError(f"{source}: --ada_reso_skip is not set: main_gate.py then builds TSN_Ada, not AdaFuse")
    bad = [f"--{k}" for k, v in UNSUPPORTED.items() if k in flags and flags[k] != v]
    if bad:
        raise ATFRError(f"{source}: AdaFuse option(s) not supported: {', '.join(bad)}")
    if not flags.get("gate_history", False):
        raise ATFRError(f"{source}: only --gate_history models (keep/reuse/skip) are supported")
    compact = {
        "arch": "adafuse", "depth": DEPTHS[arch], "num_classes": int(flags["num_class"]),
        "num_frames": int(flags.get("num_segments", 3)),
        "crop_size": int((flags.get("reso_list") or [224])[0]),
        "dropout": float(flags.get("dropout", 0.5)),
        "adafuse": {k: flags[k] for k in DEFAULTS if k in flags},
    }
    return from_compact(compact, source)


def _as_int_list(v: Any, key: str, source: str) -> list[int]:
    if isinstance(v, int):
        v = [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(i, int) for i in v):
        raise ATFRError(f"{source}: adafuse.{key} must be a list of integers, got {v!r}")
    return [int(i) for i in v]


def from_compact(c: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Our compact form: ``{arch: adafuse, depth: 18|34|50|101, num_classes, num_frames, crop_size,
    adafuse: {shift, enabled_stages, shared_policy_net, hidden_quota, gate_hidden_dim, ...}}``."""
    from . import config as C

    depth = int(c.get("depth", 50))
    if depth not in DEPTHS.values():
        raise ATFRError(f"{source}: AdaFuse depth {depth} not supported (18, 34, 50, 101)")
    ada = dict(DEFAULTS)
    extra = c.get("adafuse", {}) or {}
    if not isinstance(extra, dict):
        raise ATFRError(f"{source}: 'adafuse' must be a mapping")
    unknown = sorted(set(extra) - set(DEFAULTS))
    if unknown:
        raise ATFRError(f"{source}: unknown adafuse option(s): {', '.join(unknown)}")
    ada.update(extra)
    for key in ("enabled_stages", "enabled_layers"):
        ada[key] = _as_int_list(ada[key], key, source)
    if ada["gate_reduce_type"] not in ("avg", "max"):
        raise ATFRError(f"{source}: adafuse.gate_reduce_type must be avg or max")
    if not ada["gate_history"]:
        raise ATFRError(f"{source}: only gate_history models (keep/reuse/skip) are supported")
    for key in ("shift", "gate_bn_between_fcs", "gate_relu_between_fcs", "shared_policy_net"):
        ada[key] = bool(ada[key])
    for key in ("shift_div", "hidden_quota", "gate_hidden_dim", "enable_from", "disable_from", "base_width"):
        ada[key] = int(ada[key])
    ada["relative_hidden_size"] = float(ada["relative_hidden_size"])
    if ada["shift_div"] < 1:
        raise ATFRError(f"{source}: adafuse.shift_div must be >= 1")
    if not 1 <= ada["base_width"] <= 1024:
        raise ATFRError(f"{source}: adafuse.base_width must be in 1..1024")
    frames = int(c.get("num_frames", 8))
    crop = int(c.get("crop_size", 224))
    classes = int(c.get("num_classes", 200))
    if frames < 1 or crop < 32 or classes < 1:
        raise ATFRError(f"{source}: need num_frames >= 1, crop_size >= 32, num_classes >= 1")
    over = {
        "MODEL": {"ARCH": "adafuse", "NUM_CLASSES": classes, "TEMPORAL_LAYER_STAGE": "none",
                  "DROPOUT_RATE": float(c.get("dropout", 0.5))},
        "RESNET": {"DEPTH": depth},
        "DATA": {"NUM_FRAMES": frames, "SAMPLING_RATE": int(c.get("sampling_rate", 1)),
                 "TEST_CROP_SIZE": crop, "TEST_SHORT_SIDE": int(c.get("short_side", crop * 256 // 224)),
                 "MEAN": list(c.get("mean", IMAGENET_MEAN)), "STD": list(c.get("std", IMAGENET_STD)),
                 "TARGET_FPS": float(c.get("target_fps", 30)), "INPUT_CHANNEL_NUM": [3]},
        "ADAFUSE": ada,
    }
    cfg = C._merge(C.DEFAULTS, over)
    C.validate(cfg, source)
    return cfg
