"""The hand-written test fakes of ``tensorrt`` and ``cuda.bindings`` against the real bindings (issue 23).

tests/test_tensorrt_backend.py, test_trt_compat.py and test_trt_cuda.py drive the builder, the engine
runner and the CUDA wrapper with ``types.SimpleNamespace`` stand-ins. A fake only confirms what its
author believed, so every attribute, method and enum member a fake defines must exist in the real
module of each version it stands in for (a 10.x fake against 10.3 and 10.16, an 11.x fake against
11.4, the CUDA fake against cuda-python 12.6 and 13.0), and each fake method must accept an argument
count one of the real pybind overloads accepts.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import pytest

import trt_conformance as tc
from real_bindings import Surfaces

TRT_FOR_FAKE = {"10.3.0": ("10.3", "10.16"), "11.4.0": ("11.4",)}


def _arity(fn: Any) -> tuple[int, int] | None:
    """(required, total) positional parameters of a fake callable, self excluded; None: *args."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    ps = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in ps):
        return None
    pos = [p for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return sum(p.default is p.empty for p in pos), len(pos)


def _real_arity(name: str, doc: str, method: bool) -> list[tuple[int, int]]:
    out = []
    for s in tc.parse_signatures(name, doc):
        ps = [p for p in s.params if not p.star]
        if method and ps and ps[0].name in ("self", "arg0"):
            ps = ps[1:]
        out.append((sum(not p.has_default for p in ps), len(ps)))
    return out


def compare(fake: Any, surf: tc.Surface, real: str, where: str, problems: list[str]) -> None:
    """Every public attribute of ``fake`` must exist on ``real`` ('' = the module; 'Cls'; 'Cls.Nested')."""
    attrs = vars(fake) if isinstance(fake, (types.SimpleNamespace, types.ModuleType)) else {
        k: v for k, v in vars(fake).items() if not k.startswith("__") or k == "__init__"}
    for name, value in attrs.items():
        if name.startswith("_") and name != "__init__" or name in ("__version__",):
            continue
        entry = surf.entry(name) if not real else surf.member(real, name)
        qual = f"{real}.{name}" if real else name
        if entry is None:
            if real and (surf.entry(real.split(".")[0]) or {}).get("kind") == "enum" and name in ("name", "value"):
                continue
            problems.append(f"{surf.label}: fake {where}.{name} has no counterpart {qual}")
            continue
        if isinstance(value, (types.SimpleNamespace, type)) and entry["kind"] in ("class", "enum"):
            compare(value, surf, qual, f"{where}.{name}", problems)
        elif callable(value) and entry["kind"] in ("function", "method"):
            mine = _arity(value)
            method = entry["kind"] == "method"
            if method and mine is not None and not isinstance(fake, types.SimpleNamespace):
                mine = (max(mine[0] - 1, 0), mine[1] - 1)  # a fake class's method: drop self
            theirs = _real_arity(name, entry.get("doc", ""), method)
            if mine is not None and theirs and not any(lo <= mine[1] and mine[0] <= hi for lo, hi in theirs):
                problems.append(f"{surf.label}: fake {where}.{name} takes {mine} positional arguments (required, "
                                f"total); the real {qual} takes one of {theirs}")


def trt_fakes(version: str) -> list[tuple[str, Any, str]]:
    """(where, fake, real class or '' for the module) for each fake of ``version``'s tensorrt."""
    import test_tensorrt_backend as tb
    import test_trt_compat as tcm

    ft = tb._fake_builder_trt(version, {})
    b = ft.Builder(None)
    out = [("_fake_builder_trt", ft, ""), ("_fake_builder_trt Network", type(b.create_network(0)), "INetworkDefinition"),
           ("_fake_builder_trt Config", type(b.create_builder_config()), "IBuilderConfig"),
           ("_fake_builder_trt Profile", type(b.create_optimization_profile()), "IOptimizationProfile"),
           ("_flags_trt", tcm._flags_trt(version), "")]
    # the engine-runner fakes are version-neutral: checked against every version
    out += [("_fake_trt", tb._fake_trt(), ""), ("_FakeEngine", tb._FakeEngine, "ICudaEngine"),
            ("_FakeContext", tb._FakeContext, "IExecutionContext")]
    # the AdaFuse tests' network over the exported ONNX graph, and its runtime (tests/test_adafuse_trt.py)
    import test_adafuse_trt as ta

    fa = ta._fake_trt(version, {})
    out += [("test_adafuse_trt._fake_trt", fa, ""), ("test_adafuse_trt Builder", fa.Builder, "Builder"),
            ("_OnnxNetwork", ta._OnnxNetwork, "INetworkDefinition"), ("_OnnxParser", ta._OnnxParser, "OnnxParser"),
            ("_FakeTensor", ta._FakeTensor, "ITensor"), ("_OrtRuntime", ta._OrtRuntime, "Runtime")]
    if version.startswith("10"):  # ILayer.precision / set_output_type: weakly typed 10.x only
        out.append(("_FakeLayer", ta._FakeLayer, "ILayer"))
    return out


def check_trt_fakes(surfaces: Surfaces, fakes_for=trt_fakes) -> list[str]:
    problems: list[str] = []
    for version, keys in TRT_FOR_FAKE.items():
        for key in keys:
            surf = surfaces.trt(key)["trt"]
            for where, fake, real in fakes_for(version):
                compare(fake, surf, real, where, problems)
    return problems


def test_tensorrt_fakes_match_the_real_bindings(binding_surfaces: Surfaces) -> None:
    problems = check_trt_fakes(binding_surfaces)
    assert not problems, "\n".join(problems)


def test_a_fake_method_the_bindings_lack_is_caught(binding_surfaces: Surfaces, monkeypatch) -> None:
    import test_tensorrt_backend as tb

    monkeypatch.setattr(tb._FakeContext, "execute_async_v4", lambda self, stream: True, raising=False)
    monkeypatch.setattr(tb._FakeContext, "set_input_shape", lambda self, n: True)
    problems = check_trt_fakes(binding_surfaces)
    for key in ("10.3", "10.16", "11.4"):
        assert any(p.startswith(f"TensorRT {key}: fake _FakeContext.execute_async_v4") for p in problems), problems
        assert any(p.startswith(f"TensorRT {key}: fake _FakeContext.set_input_shape takes") for p in problems), problems


@pytest.mark.parametrize("key", ["cuda-12.6", "cuda-13.0"])
def test_cuda_fake_matches_the_real_bindings(binding_surfaces: Surfaces, key: str, monkeypatch) -> None:
    import test_trt_cuda as tcu

    rt = tcu._fake_cuda(monkeypatch, key.split("-")[1], 12060)
    problems: list[str] = []
    compare(rt, binding_surfaces.cuda(key)["rt"], "", "_fake_cuda rt", problems)
    assert not problems, "\n".join(problems)
