"""One rule for every path read from an export folder (or unpacked from an archive). Torch-free.

An export folder may come from someone else, and ``manifest_sha256`` only catches accidents (anyone
can recompute it), so nothing in ``atfr.json`` is trusted to name a file: every such name must be a
relative path without '..' that resolves, after symbolic links, inside the folder. ``load_manifest``
applies the rule to the manifest itself, every ``graphs[*].file`` and every ``checksums`` key before
anything else is read, so every command that loads an export inherits it; the few files a command
opens by a fixed name (engines, caches) go through :func:`inside` as well. The model name becomes a
folder name (``triton-repo``), so it must be one plain path component.

Manifest fields that record where things came from (``source.checkpoint``,
``precision.int8.cache``) are provenance: no command opens them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from atfr.errors import ATFRError


class UnsafeExportError(ATFRError):
    """A path from an export folder that would leave it (exit 2, like all bad input)."""


def _refuse(label: Any, what: str, rel: Any, why: str) -> UnsafeExportError:
    return UnsafeExportError(f"{label}: {what} {rel!r} {why}; refusing to use this export folder "
                             "(its paths must stay inside it)")


def inside(root: str | Path, rel: Any, what: str = "file", label: str | None = None) -> Path:
    """``root / rel``, once ``rel`` is known to stay inside ``root``: a non-empty relative path
    with no '..' part, no backslash or drive, that resolves (after symbolic links) under the
    resolved ``root``. The file need not exist (a missing file is the caller's error). ``label``
    names the folder in the message (default: ``root``)."""
    root = Path(root)
    label = label or str(root)
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise _refuse(label, what, rel, "is not a file name")
    pp = PurePosixPath(rel)
    if pp.is_absolute() or "\\" in rel or PureWindowsPath(rel).drive:
        raise _refuse(label, what, rel, "is an absolute path")
    if ".." in pp.parts:
        raise _refuse(label, what, rel, "has a '..' part")
    full = root / rel
    try:
        real, base = full.resolve(), root.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        raise _refuse(label, what, rel, "is a symbolic link loop") from None
    if not real.is_relative_to(base):
        raise _refuse(label, what, rel, f"resolves to {real}, outside the folder (a symbolic link)")
    return full


def plain_name(label: str | Path, name: Any, what: str) -> str:
    """A name used as one folder or file name (the model name in a Triton repository)."""
    if (not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\x00")
            or PureWindowsPath(name).drive):
        raise _refuse(label, what, name, "is not a plain name (no '/', '\\' or '..')")
    return name


def check_manifest_paths(root: str | Path, d: dict[str, Any], label: str | None = None) -> None:
    """Apply the rule to every field of a parsed ``atfr.json`` that names a file or a folder."""
    label = label or str(root)
    graphs = d.get("graphs")
    if isinstance(graphs, dict):
        for k, g in graphs.items():
            if isinstance(g, dict) and "file" in g:
                inside(root, g["file"], f"graphs.{k}.file", label)
    checks = d.get("checksums", {})
    if not isinstance(checks, dict):
        raise UnsafeExportError(f"{label}: 'checksums' in the manifest is not a mapping of file names")
    for rel in checks:
        inside(root, rel, "checksums key", label)
    model = d.get("model")
    if isinstance(model, dict) and "name" in model:
        plain_name(label, model["name"], "model.name")
