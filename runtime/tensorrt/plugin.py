"""Loading the SGS plugin library from an explicit path (never a search path).

Two flavours exist (see plugins/sgs/README.md): ``libatfr_sgs.so`` registers its creator when
loaded (``ctypes.CDLL``), ``libatfr_sgs_vc.so`` exports ``getCreators`` for
``IPluginRegistry.load_library``. Only one may be loaded per process. Written against the
TensorRT 10.3-11.x Python API.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from atfr.errors import ATFRError, DependencyError
from atfr.fileio import sha256_file

PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE = "SGS", "1", "atfr"


_LOADED_PLUGINS: dict[str, tuple[str, Any]] = {}  # realpath -> (variant, handle)


def plugin_variant(path: str | os.PathLike, variant: str = "auto") -> str:
    """'static' (REGISTER_TENSORRT_PLUGIN, loaded with ctypes.CDLL) or 'dynamic' (getCreators,
    IPluginRegistry.load_library). 'auto': libatfr_sgs_vc.so -> dynamic, anything else -> static."""
    if variant in ("static", "dynamic"):
        return variant
    if variant != "auto":
        raise ATFRError(f"unknown plugin variant {variant!r} (auto, static, dynamic)")
    return "dynamic" if Path(path).stem.split(".")[0].endswith("_vc") else "static"


def load_plugin_library(trt: Any, path: str | os.PathLike, namespace: str = PLUGIN_NAMESPACE, variant: str = "auto",
                        flag: str = "--plugin") -> str:
    """Load the SGS plugin from an explicit path (never a search path); return its sha256.

    Only one flavour may be loaded per process: loading a library whose creators are already
    registered fails in TensorRT (IPluginRegistry::loadLibrary), and so would mixing the static
    and the getCreators variants.
    """
    p = Path(path)
    if not p.is_file():
        raise DependencyError(f"SGS plugin library not found: {p} (pass {flag} PATH to libatfr_sgs.so built "
                              "from plugins/sgs)")
    real = os.path.realpath(p)
    kind = plugin_variant(p, variant)
    if real in _LOADED_PLUGINS:
        return sha256_file(real)
    if _LOADED_PLUGINS:
        other = next(iter(_LOADED_PLUGINS))
        raise ATFRError(f"an SGS plugin library is already loaded in this process ({other}); TensorRT cannot "
                        f"register a second one ({real}): use one library per process")
    try:
        if kind == "static":
            handle: Any = ctypes.CDLL(real, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
        else:
            handle = trt.get_plugin_registry().load_library(real)
            if handle is None:
                raise OSError("IPluginRegistry.load_library returned nothing (missing getCreators export, or "
                              "its plugins are already registered)")
    except OSError as e:
        raise DependencyError(f"cannot load SGS plugin library {real}: {str(e).splitlines()[0][:200]} "
                              "(built for another TensorRT/CUDA version or architecture?)") from None
    _LOADED_PLUGINS[real] = (kind, handle)
    reg = trt.get_plugin_registry()
    creator = None
    try:
        creator = reg.get_creator(PLUGIN_NAME, PLUGIN_VERSION, namespace)
    except Exception:  # noqa: BLE001 - older bindings: fall through to the list below
        creator = None
    if creator is None:
        names = []
        for attr in ("all_creators", "plugin_creator_list"):
            for c in getattr(reg, attr, None) or []:
                names.append((getattr(c, "name", ""), getattr(c, "plugin_version", ""),
                              getattr(c, "plugin_namespace", "")))
        if (PLUGIN_NAME, PLUGIN_VERSION, namespace) not in names:
            raise DependencyError(f"{real} loaded but did not register plugin {PLUGIN_NAME} v{PLUGIN_VERSION} in "
                                  f"namespace {namespace!r} (wrong library or variant? try the other of "
                                  "libatfr_sgs.so / libatfr_sgs_vc.so)")
    return sha256_file(real)


