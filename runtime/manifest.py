"""The export manifest (``atfr.json``): what the graphs are and how to feed them. Torch-free.

Tensor names are fixed by convention so every tool can connect the pieces:

* front inputs ``clip{p}`` [N,3,T_p,H,W] (p = pathway; SlowFast: 0 = slow, 1 = fast);
* front outputs ``feat{p}`` (pre-ReLU output of the SGS stage) and ``dist{p}`` [N,T_p] for
  pathways with SGS;
* SGS (plugin node or fallback) reads ``feat{p}``, ``dist{p}`` and writes ``sgs{p}``
  [N,C,B',H,W] plus ``bprime{p}`` (int32 scalar);
* back inputs ``sgs{p}`` (SGS pathways) or ``feat{p}`` (pass-through); output ``logits``.

Integrity: ``checksums`` holds the SHA-256 of every graph file, and ``manifest_sha256`` the
SHA-256 of the manifest's own canonical JSON (every other field; sorted keys, no whitespace), so
a hand-edited ``atfr.json`` (an input shape, a label list) is refused with one line instead of
half-used. Every writer goes through ``write_manifest``. Manifests written before the field
existed load as before. The digest is no signature (anyone can recompute it), so every path the
manifest names must also stay inside the export folder (runtime/export_paths.py), checked on load
before any of those files is read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atfr.errors import ATFRError
from atfr.fileio import sha256_file, write_json_atomic
from atfr.spec import InputSpec, SGSSpec

from .export_paths import check_manifest_paths, inside

FORMAT = "atfr-export"
VERSION = 1
MANIFEST_NAME = "atfr.json"
CHECKSUM_KEY = "manifest_sha256"


def manifest_digest(d: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every field except ``manifest_sha256`` itself."""
    body = {k: v for k, v in d.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(path: str | Path, d: dict[str, Any]) -> None:
    """Write ``atfr.json`` atomically with a fresh ``manifest_sha256`` (the only way to write one)."""
    d = dict(d)
    d.pop(CHECKSUM_KEY, None)
    d[CHECKSUM_KEY] = manifest_digest(d)
    write_json_atomic(path, d)


@dataclass
class TensorSpec:
    name: str
    shape: list[Any]  # ints or symbolic names ("N", "T1")
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(d["name"], list(d["shape"]), d.get("dtype", "float32"))


@dataclass
class GraphSpec:
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GraphSpec":
        return cls(d["file"], [TensorSpec.from_dict(t) for t in d["inputs"]],
                   [TensorSpec.from_dict(t) for t in d["outputs"]])


@dataclass
class SGSLayer:
    """An SGS layer as exported: its spec plus the T it sees and B it bins into."""

    spec: SGSSpec
    frames: int  # T entering SGS
    bins: int  # B (upper bound of B')
    channels: int
    height: int
    width: int

    @property
    def pathway(self) -> int:
        return self.spec.pathway


@dataclass
class Manifest:
    root: Path
    name: str
    arch: str
    num_classes: int
    labels: list[str]
    input: InputSpec
    num_pathways: int
    sgs: list[SGSLayer]
    graphs: dict[str, GraphSpec]
    split_shapes: list[list[int]]  # per pathway: [C,T,H,W] of feat{p} (batch excluded)
    opset: int
    bprime_stats: dict[str, Any] = field(default_factory=dict)
    gflops: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def sgs_for(self, pathway: int) -> SGSLayer | None:
        for s in self.sgs:
            if s.pathway == pathway:
                return s
        return None

    def back_input_name(self, pathway: int) -> str:
        return f"sgs{pathway}" if self.sgs_for(pathway) else f"feat{pathway}"

    def path(self, graph: str) -> Path:
        if graph not in self.graphs:
            raise ATFRError(f"{self.root}: the export has no '{graph}' graph")
        return inside(self.root, self.graphs[graph].file, f"graphs.{graph}.file")

    def label(self, i: int) -> str:
        return self.labels[i] if 0 <= i < len(self.labels) else str(i)

    def clip_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        """Front input shapes [N,3,T_p,S,S] per pathway."""
        s = self.input.crop_size
        t = self.input.num_frames
        if self.num_pathways == 2:
            return [(batch, 3, t // self.input.slowfast_alpha, s, s), (batch, 3, t, s, s)]
        return [(batch, 3, t, s, s)]

    def verify_checksums(self) -> None:
        for fname, digest in self.raw.get("checksums", {}).items():
            p = inside(self.root, fname, "checksums key")
            if not p.exists():
                raise ATFRError(f"{self.root}: {fname} is missing from the export; re-run 'atfr export'")
            if not p.is_file():  # a FIFO or device would block or never end the hash
                raise ATFRError(f"{self.root}: {fname} is not a regular file; re-run 'atfr export'")
            if sha256_file(p) != digest:
                raise ATFRError(f"{self.root}: {fname} does not match its checksum in {MANIFEST_NAME} "
                                "(modified or corrupt); re-run 'atfr export --force'")


def load_manifest(outdir: str | Path, check: bool = False) -> Manifest:
    root = Path(outdir)
    if not root.exists():
        raise ATFRError(f"{root} does not exist")
    mpath = inside(root, MANIFEST_NAME, "the manifest")
    if not mpath.exists():
        raise ATFRError(f"{root} is not an atfr export (no {MANIFEST_NAME}); create one with 'atfr export'")
    if not mpath.is_file():
        raise ATFRError(f"{mpath} is not a regular file")
    try:
        d = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ATFRError(f"{mpath}: corrupt manifest ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ATFRError(f"{mpath}: not an atfr export manifest")
    if int(d.get("version", 0)) > VERSION:
        raise ATFRError(f"{mpath}: manifest version {d['version']} is newer than this atfr-deploy ({VERSION})")
    if CHECKSUM_KEY in d and d[CHECKSUM_KEY] != manifest_digest(d):
        raise ATFRError(f"{mpath} was edited after export (its content no longer matches {CHECKSUM_KEY}); "
                        f"re-export with 'atfr export --force', or delete the {CHECKSUM_KEY} field to use it "
                        "as edited")
    check_manifest_paths(root, d)  # before any file the manifest names is read (runtime/export_paths.py)
    try:
        m = Manifest(
            root=root,
            name=d["model"]["name"],
            arch=d["model"]["arch"],
            num_classes=int(d["model"]["num_classes"]),
            labels=list(d["model"].get("labels", [])),
            input=InputSpec.from_dict(d["input"]),
            num_pathways=int(d["num_pathways"]),
            sgs=[SGSLayer(SGSSpec.from_dict(s["spec"]), int(s["frames"]), int(s["bins"]), int(s["channels"]),
                          int(s["height"]), int(s["width"])) for s in d["sgs"]],
            graphs={k: GraphSpec.from_dict(v) for k, v in d["graphs"].items()},
            split_shapes=[list(map(int, s)) for s in d["split_shapes"]],
            opset=int(d["opset"]),
            bprime_stats=dict(d.get("bprime_stats", {})),
            gflops=dict(d.get("gflops", {})),
            raw=d,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ATFRError(f"{mpath}: incomplete manifest ({type(e).__name__}: {e})") from None
    if check:
        m.verify_checksums()
    return m


def fp16_front_is_fp32(manifest_raw: dict[str, Any]) -> bool:
    """Whether the export's fp16 graphs keep the whole front fp32 (``atfr export --fp16``'s
    default, ``--fp16-front fp32``). Exports written before the flag was recorded: False."""
    entry = (manifest_raw.get("precision") or {}).get("fp16") or {}
    return bool(entry.get("front_fp32", False))


def int8_front_mode(manifest_raw: dict[str, Any]) -> str | None:
    """How an export's INT8 graphs treat the front: 'int8' (front_int8 + back_int8) or 'float'
    (back_int8 only; the front keeps the fp16 policy). None: not calibrated. Exports calibrated
    before the mode was recorded quantized both graphs."""
    entry = (manifest_raw.get("precision") or {}).get("int8")
    if not entry:
        return None
    return str(entry.get("front", "int8"))
