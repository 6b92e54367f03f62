"""Shared fixtures: the golden folder and small exported models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden"
GOLDEN_MODELS = ("r3d18_atfr", "slowfast_atfr_4x16_r50_w16")
GOLDEN_CLIPS = ("a_noise", "b_static", "c_translate", "d_scenecut")

# Keep ONNX Runtime and torch to the CI machine's 2 cores, and deterministic.
os.environ.setdefault("ATFR_ORT_THREADS", "2")

TINY_CFG = {"arch": "3dresnet", "depth": 18, "width_per_group_slow": 8, "width_per_group_fast": 4,
            "num_frames": 8, "crop_size": 32, "num_classes": 5, "sgs_stage": "res2"}


def golden_dir() -> Path:
    if not GOLDEN.exists():
        pytest.skip(f"golden files not found at {GOLDEN} (they live in ../shared/golden beside the repo)")
    return GOLDEN


@pytest.fixture(scope="session")
def golden() -> Path:
    return golden_dir()


def normalize_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 [T,H,W,3] -> float32 [1,3,T,H,W], in the official op order (x/255 - mean) / std."""
    x = frames.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.45)) / np.float32(0.225)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)[None])


def slow_indices(t: int, alpha: int) -> np.ndarray:
    """torch.linspace(0, T-1, T//alpha).long() (fp32 linspace, truncation)."""
    import torch
    return torch.linspace(0, t - 1, t // alpha).long().numpy()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch
    from atfr.models.checkpoint import save_checkpoint
    from atfr.models.config import from_compact
    from atfr.models.zoo import build_model

    torch.manual_seed(0)
    cfg = from_compact(TINY_CFG)
    model = build_model(cfg).eval()
    # Non-trivial BN statistics so SGS sees varied embeddings.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm3d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    save_checkpoint(path, model, cfg, [f"class{i}" for i in range(5)], {"note": "test model"})
    return path


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory) -> Path:
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp("tiny_export") / "export"
    export_model(load_checkpoint(tiny_checkpoint), out, ExportOptions(name="tiny"))
    return out


@pytest.fixture(scope="session")
def golden_exports(tmp_path_factory, golden) -> dict[str, Path]:
    """Both golden models exported at the golden clip size (112 px)."""
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint

    out = {}
    for name in GOLDEN_MODELS:
        d = tmp_path_factory.mktemp("golden_export") / name
        export_model(load_checkpoint(golden / name / "checkpoint.pyth"), d, ExportOptions(size=112, name=name))
        out[name] = d
    return out


@pytest.fixture(scope="session")
def binding_stubs(tmp_path_factory) -> dict[str, Path]:
    """Stub libnvinfer/libnvinfer_plugin/libnvonnxparser (.so.10, .so.11) and libcuda.so.1, built once
    (tests/real_bindings.py) for importing NVIDIA's real binding wheels without TensorRT or a GPU."""
    import subprocess

    import real_bindings

    try:
        return real_bindings.build_stubs(tmp_path_factory.mktemp("binding_stubs"))
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot build the stub libraries: {e}")


@pytest.fixture(scope="session")
def binding_surfaces(binding_stubs):
    """The API of every installed binding version (tests/real_bindings.py Surfaces), dumped once."""
    import real_bindings

    return real_bindings.Surfaces(binding_stubs)


@pytest.fixture(scope="session")
def tiny_adafuse_export(tmp_path_factory) -> Path:
    """The tiny AdaFuse-TSN of tests/adafuse_helpers.py exported (clip + online graphs, ~10 s)."""
    from adafuse_helpers import tiny_adafuse_model
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import LoadedModel

    model, cfg = tiny_adafuse_model()
    out = tmp_path_factory.mktemp("tiny_adafuse") / "export"
    export_model(LoadedModel(model, cfg, [f"class{i}" for i in range(5)], "atfr", {"note": "test model"}), out,
                 ExportOptions(name="tiny_adafuse"))
    return out


@pytest.fixture(scope="session")
def tiny_adafuse_tsm_export(tmp_path_factory) -> Path:
    """Its AdaFuse-TSM twin (the same weights, ``shift`` on): clip graph and the delayed online graphs."""
    from adafuse_helpers import tiny_adafuse_model
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import LoadedModel

    model, cfg = tiny_adafuse_model(shift=True)
    out = tmp_path_factory.mktemp("tiny_adafuse_tsm") / "export"
    export_model(LoadedModel(model, cfg, [f"class{i}" for i in range(5)], "atfr", {"note": "test model"}), out,
                 ExportOptions(name="tiny_tsm"))
    return out


@pytest.fixture(scope="session")
def stub_env(tmp_path_factory) -> Path | None:
    """The Triton Python-backend stub's environment (tests/test_serve.py, tests/test_adafuse_serve.py):
    None: this interpreter already suits the stub (numpy < 2); else an overlay env's prefix."""
    if os.environ.get("ATFR_TRITON_PYTHON_ENV"):
        return Path(os.environ["ATFR_TRITON_PYTHON_ENV"])
    if int(np.__version__.split(".")[0]) < 2:
        return None
    from atfr.errors import DependencyError
    from atfr.runtime.serving.triton_env import make_overlay_env

    try:
        return make_overlay_env(tmp_path_factory.mktemp("triton_stub_env") / "env")
    except DependencyError as e:
        pytest.skip(f"no numpy<2 environment for Triton's Python backend stub: {e}")
