"""Checkpoints: the official ``.pyth`` dict and our self-describing format.

Official: ``{"epoch", "model_state", "optimizer_state", "cfg": <yacs YAML string>}``.
Ours:     ``{"format": "atfr-checkpoint", "version": 1, "cfg": <dict, official keys>,
            "labels": [...], "input": InputSpec dict, "sgs": [SGSSpec dicts],
            "model_state": state_dict, "meta": {...}}``.

Both load with ``torch.load(weights_only=True)`` and strict key matching: every missing and
unexpected key is reported in one error (the official loader silently keeps random init).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atfr.errors import ATFRError
from atfr.fileio import atomic_path, check_writable
from atfr.spec import InputSpec

from . import config as C
from .base import VideoNet
from .zoo import build_model

FORMAT = "atfr-checkpoint"
VERSION = 1


@dataclass
class LoadedModel:
    model: VideoNet
    cfg: dict[str, Any]
    labels: list[str] = field(default_factory=list)
    source_format: str = "official"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_spec(self) -> InputSpec:
        return self.model.input_spec

    def label(self, i: int) -> str:
        return self.labels[i] if 0 <= i < len(self.labels) else str(i)


def read_checkpoint_dict(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ATFRError(f"checkpoint {p} does not exist")
    if p.is_dir():
        raise ATFRError(f"checkpoint {p} is a directory (for an export folder use a runtime command)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except zipfile.BadZipFile:
        raise ATFRError(f"{p}: truncated or corrupt checkpoint (bad zip archive)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "zip archive" in msg or "central directory" in msg or isinstance(e, EOFError):
            raise ATFRError(f"{p}: truncated or corrupt checkpoint ({msg[:120]})") from None
        raise ATFRError(f"{p}: not a PyTorch checkpoint ({msg[:120]})") from None
    except Exception as e:  # pickle.UnpicklingError for a non-torch file, weights_only refusals
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in msg:
            raise ATFRError(f"{p}: checkpoint holds objects that are unsafe to unpickle "
                            "(only tensors and plain containers are loaded)") from None
        raise ATFRError(f"{p}: not a PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ATFRError(f"{p}: not an ATFR checkpoint (top level is {type(obj).__name__}, expected a dict)")
    return obj


def _strip_module(sd: dict[str, Any]) -> dict[str, Any]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _load_state_strict(model: VideoNet, sd: dict[str, Any], source: str) -> None:
    ours = model.state_dict()
    missing = [k for k in ours if k not in sd]
    unexpected = [k for k in sd if k not in ours]
    if missing or unexpected:
        def fmt(keys):
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {fmt(unexpected)}")
        raise ATFRError(f"{source}: checkpoint does not match the config: " + "; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(ours[k].shape)}" for k in ours
           if hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(ours[k].shape)]
    if bad:
        more = f" (+{len(bad) - 2} more)" if len(bad) > 2 else ""
        raise ATFRError(f"{source}: checkpoint does not match the config: shape mismatch "
                        f"{'; '.join(bad[:2])}{more}")
    model.load_state_dict(sd, strict=True)


def load_checkpoint(path: str | Path, config: str | Path | None = None) -> LoadedModel:
    """Load an official ``.pyth`` (cfg embedded or given) or our checkpoint, strictly."""
    d = read_checkpoint_dict(path)
    src = str(path)
    if d.get("format") == FORMAT:
        if int(d.get("version", 0)) > VERSION:
            raise ATFRError(f"{src}: checkpoint format version {d.get('version')} is newer than this "
                            f"atfr-deploy understands ({VERSION}); upgrade atfr-deploy")
        cfg = C.load_config_file(str(config)) if config else d["cfg"]
        C.validate(cfg, src)
        model = build_model(cfg)
        _load_state_strict(model, _strip_module(d["model_state"]), src)
        return LoadedModel(model.eval(), cfg, list(d.get("labels", [])), "atfr", dict(d.get("meta", {})))
    if "model_state" in d:
        if config:
            cfg = C.load_config_file(str(config))
        elif isinstance(d.get("cfg"), str):
            cfg = C.load_official_yaml(d["cfg"], f"{src} (embedded cfg)")
        else:
            raise ATFRError(f"{src}: official checkpoint has no embedded 'cfg'; pass --config CONFIG.yaml")
        model = build_model(cfg)
        _load_state_strict(model, _strip_module(d["model_state"]), src)
        meta = {"epoch": d.get("epoch")}
        return LoadedModel(model.eval(), cfg, [], "official", meta)
    raise ATFRError(f"{src}: not an ATFR checkpoint (no 'model_state'; keys: {', '.join(list(d)[:5])})")


def save_checkpoint(path: str | Path, model: VideoNet, cfg: dict[str, Any], labels: list[str] | None = None,
                    meta: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Write our self-describing checkpoint atomically (refuses to overwrite without force)."""
    p = check_writable(path, force)
    # Only plain JSON types besides tensors: anything else (a TorchVersion, a Path, numpy scalars)
    # would make the file unloadable with torch.load(weights_only=True).
    cfg = json.loads(json.dumps(cfg, default=str))
    meta = json.loads(json.dumps(dict(meta or {}), default=str))
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "cfg": cfg,
        "labels": list(labels or []),
        "input": model.input_spec.to_dict(),
        "sgs": [s.to_dict() for s in model.sgs_specs],
        "model_state": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(p) as tmp:
        tmp.write_bytes(buf.getvalue())
    return p
