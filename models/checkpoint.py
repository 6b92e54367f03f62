"""Checkpoints: the official ``.pyth`` dict and our self-describing format.

Official: ``{"epoch", "model_state", "optimizer_state", "cfg": <yacs YAML string>}``; AdaFuse's
official ``*.pth.tar``: ``{"state_dict": ...}`` with DataParallel ``module.`` names (config given).
Ours:     ``{"format": "atfr-checkpoint", "version": 1, "cfg": <dict, official keys>,
            "labels": [...], "input": InputSpec dict, "sgs": [SGSSpec dicts],
            "model_state": state_dict, "meta": {...}}``.

Both load with ``torch.load(weights_only=True)`` and strict key matching: every missing and
unexpected key is reported in one error (the official loader silently keeps random init).

Integrity, before anything is unpickled: a torch checkpoint is a zip file with a CRC-32 per
record, and every record's CRC is checked (torch.load itself does not: flipped bytes inside a
tensor load silently and change the predictions). Ours also records ``state_sha256``, a SHA-256
over the state dict (key, dtype, shape and bytes of each tensor, in key order), which
``load_checkpoint`` checks; checkpoints written before it existed load without it (noted in the
log at ``-v``).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atfr.errors import ATFRError
from atfr.fileio import atomic_path, check_writable
from atfr.log import get_logger
from atfr.spec import InputSpec

from . import config as C
from .base import VideoNet
from .zoo import build_model

FORMAT = "atfr-checkpoint"
VERSION = 1
HASH_KEY = "state_sha256"

log = get_logger(__name__)


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
    verify_zip_records(p)
    try:
        with warnings.catch_warnings():
            # torch warns (3 lines) about pickle protocols before refusing a file; the refusal
            # below is the one line the user needs. Shown at -v through the log.
            warnings.simplefilter("ignore")
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


def verify_zip_records(path: Path) -> None:
    """Check the CRC-32 of every record of a zip-format (torch >= 1.6) checkpoint.

    Legacy (non-zip) files have no CRCs and are left to torch.load. Reads the whole file once
    (about as fast as the load itself)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ATFRError(f"{path}: truncated or corrupt checkpoint ({msg[:120]})") from None
    if bad is not None:
        raise ATFRError(f"{path}: corrupt checkpoint: record {bad!r} fails its CRC check "
                        "(bytes changed on disk or in transfer); restore or re-download it")


def state_sha256(sd: dict[str, Any]) -> str:
    """SHA-256 over a state dict: per key in order, its name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode("utf-8") + b"\0")
        if not isinstance(v, torch.Tensor):
            h.update(repr(v).encode("utf-8") + b"\0")
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode("ascii") + b"\0")
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _check_state_hash(d: dict[str, Any], src: str) -> None:
    want = d.get(HASH_KEY)
    if want is None:
        log.info("warning: %s has no %s (written by an older atfr-deploy): only its zip CRCs were "
                 "checked; re-save it with 'atfr convert' to add one", src, HASH_KEY)
        return
    if not isinstance(d.get("model_state"), dict) or state_sha256(d["model_state"]) != want:
        raise ATFRError(f"{src}: corrupt checkpoint: its weights do not match the {HASH_KEY} recorded "
                        "when it was saved (modified after saving); restore or re-save it")


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
        _check_state_hash(d, src)
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
    if isinstance(d.get("state_dict"), dict):  # AdaFuse's main_gate.py: {"state_dict": DataParallel names}
        if not config:
            raise ATFRError(f"{src}: an official AdaFuse checkpoint carries no config; pass --config FILE "
                            "(the main_gate.py flags, as a command line or its args.txt)")
        cfg = C.load_config_file(str(config))
        model = build_model(cfg)
        _load_state_strict(model, _strip_module(d["state_dict"]), src)
        return LoadedModel(model.eval(), cfg, [], "official", {})
    raise ATFRError(f"{src}: not an ATFR checkpoint (no 'model_state'; keys: {', '.join(list(d)[:5])})")


def save_checkpoint(path: str | Path, model: VideoNet, cfg: dict[str, Any], labels: list[str] | None = None,
                    meta: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Write our self-describing checkpoint atomically (refuses to overwrite without force)."""
    p = check_writable(path, force)
    # Only plain JSON types besides tensors: anything else (a TorchVersion, a Path, numpy scalars)
    # would make the file unloadable with torch.load(weights_only=True).
    cfg = json.loads(json.dumps(cfg, default=str))
    meta = json.loads(json.dumps(dict(meta or {}), default=str))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "cfg": cfg,
        "labels": list(labels or []),
        "input": model.input_spec.to_dict(),
        "sgs": [s.to_dict() for s in model.sgs_specs],
        "model_state": state,
        "meta": meta,
        HASH_KEY: state_sha256(state),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(p) as tmp:
        tmp.write_bytes(buf.getvalue())
    return p
