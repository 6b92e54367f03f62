"""TensorRT backend: front.engine + back.engine as GraphRunners behind the usual Pipeline.

Written against the documented TensorRT Python API of 10.3 (JetPack 6.1/6.2) through 11.x and
cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``); NOT executed in this
repository's CI, where TensorRT cannot be installed. Torch-free: numpy, tensorrt, cuda-python.

Design (steady state allocates nothing on the device):

* one CUDA stream for both engines; CUDA events around H2D, compute and D2H;
* device buffers and pinned host buffers allocated once per tensor at the largest shape any
  optimization profile allows (data-dependent outputs: at the upper bound B);
* data-dependent front outputs (``sgs{p}`` with B' bins) go through a ``trt.IOutputAllocator``
  pre-sized to B, so ``reallocate_output_async`` just hands the same buffer back and
  ``notify_shape`` tells the host B';
* the back engine gets ``set_input_shape`` per clip group (T' = B'), the tightest matching
  optimization profile, then ``execute_async_v3``; optionally one CUDA graph per (profile, shapes);
* when the front engine contains SGS (plugin or fallback) it runs one clip at a time (the SGS
  node's B' is the batch maximum, so per-clip exactness needs N=1) and returns ``sgs{p}`` zero-padded
  to the batch's largest B' plus ``bprime{p}`` [N] with each clip's own B'; :func:`split_presampled`
  cuts them back per clip.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atfr.errors import ATFRError, DependencyError
from atfr.fileio import sha256_file

from ..export_paths import inside
from ..manifest import Manifest
from ..pipeline import Pipeline, SGSStep
from .api import import_tensorrt, make_logger
from .compat import check_supported, engine_compat_problem, graph_has_sgs, stale_problem, tightest_profile
from .cuda import Cuda, host_view
from .plugin import load_plugin_library

PLUGIN_ENV = "ATFR_SGS_PLUGIN"


# -- output allocator -------------------------------------------------------------------------------

def make_output_allocator(trt: Any, cuda: Cuda):
    """A trt.IOutputAllocator over buffers reserved up front; grows (and counts it) only if TensorRT
    asks for more than the reserved upper bound, which a correct engine never does."""

    class OutputAllocator(trt.IOutputAllocator):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, list[int]] = {}  # name -> [device ptr, capacity bytes]
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.reallocations = 0
            self.error: str | None = None

        def reset(self) -> None:
            """Forget the previous run's shapes and error before each enqueue: a run whose engine
            never calls notify_shape must fail, not silently reuse the last clip's B'."""
            self.shapes.clear()
            self.error = None

        def reserve(self, name: str, nbytes: int) -> int:
            self.buffers[name] = [cuda.malloc(nbytes), int(nbytes)]
            return self.buffers[name][0]

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream=None):
            try:
                buf = self.buffers.get(tensor_name)
                if buf is None or int(size) > buf[1]:
                    new = max(int(size), 1)
                    ptr = cuda.malloc(new)
                    if buf is not None:
                        cuda.free(buf[0])
                    self.buffers[tensor_name] = buf = [ptr, new]
                    self.reallocations += 1
                return buf[0]
            except Exception as e:  # noqa: BLE001 - never raise into TensorRT; None = cannot allocate
                self.error = f"{type(e).__name__}: {e}"
                return None

        def reallocate_output(self, tensor_name, memory, size, alignment):  # pre-10.0 signature
            return self.reallocate_output_async(tensor_name, memory, size, alignment, None)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator()


# -- one engine -------------------------------------------------------------------------------------

Profiles = list  # per optimization profile: input name -> (min, opt, max) shapes


@dataclass
class EngineIO:
    """What an engine's IO tensors are: names, dtypes, where they live, the profiles' shapes."""

    input_names: list[str]
    output_names: list[str]
    dtype: dict[str, np.dtype]
    on_host: dict[str, bool]
    profiles: Profiles
    max_batch: int  # the first input's largest first dimension every profile allows
    max_in: dict[str, tuple[int, ...]]  # per input the largest shape any profile allows


def describe_engine(trt: Any, cuda_engine: Any) -> EngineIO:
    names = [cuda_engine.get_tensor_name(i) for i in range(cuda_engine.num_io_tensors)]
    inputs = [n for n in names if cuda_engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    profiles = [{n: tuple(tuple(int(d) for d in s) for s in cuda_engine.get_tensor_profile_shape(n, k)) for n in inputs}
                for k in range(int(cuda_engine.num_optimization_profiles))]
    max_in = {n: tuple(max(p[n][2][i] for p in profiles) for i in range(len(profiles[0][n][2]))) for n in inputs}
    return EngineIO(inputs, [n for n in names if cuda_engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT],
                    {n: np.dtype(trt.nptype(cuda_engine.get_tensor_dtype(n))) for n in names},
                    {n: cuda_engine.get_tensor_location(n) == trt.TensorLocation.HOST for n in names},
                    profiles, min(p[inputs[0]][2][0] for p in profiles), max_in)


def pick_profile(profiles: Profiles, shapes: dict[str, tuple[int, ...]], what: str) -> int:
    """The tightest profile whose (min, max) range holds every dimension of every input."""
    names = sorted(shapes)
    values = [v for n in names for v in shapes[n]]
    ranges = [[(lo, hi) for n in names for lo, hi in zip(prof[n][0], prof[n][2])] for prof in profiles]
    best = tightest_profile(ranges, values)
    if best < 0:
        raise ATFRError(f"{what}: input shapes {shapes} are outside every optimization profile; "
                        "rebuild with 'atfr build --profiles/--max-batch' covering them")
    return best


def output_bound(exec_context: Any, name: str, shape: list[int], upper: dict[int, int], itemsize: int, what: str) -> list[int]:
    """A data-dependent output's shape with each unknown dimension at its bound: the manifest's
    (``upper``: dimension -> size) or else TensorRT's own upper bound in bytes."""
    shp = list(shape)
    for i, d in enumerate(shp):
        if d >= 0:
            continue
        if i in upper:
            shp[i] = int(upper[i])
            continue
        try:
            size = int(exec_context.get_max_output_size(name))
        except AttributeError:
            raise ATFRError(f"{what}: no upper bound for the data-dependent output {name!r}", exit_code=4) from None
        rest = int(np.prod([x for x in shp if x >= 0], dtype=np.int64)) * itemsize
        shp[i] = max(1, -(-size // max(rest, 1)))
    return shp


class EngineBuffers:
    """One engine's buffers, allocated once at the largest shapes any profile allows: per tensor a
    pinned host buffer and its device side (a buffer, the output allocator's reservation for
    data-dependent outputs, or none for host tensors). No allocation per run."""

    def __init__(self, trt: Any, cuda: Cuda, exec_context: Any, io: EngineIO, dds: list[str],
                 shapes: dict[str, tuple[int, ...]], what: str):
        self.cuda, self.dtype, self.on_host, self.dds, self.what = cuda, io.dtype, io.on_host, dds, what
        self.context = exec_context
        self.dev: dict[str, int] = {}
        self.host: dict[str, np.ndarray] = {}
        self._host_ptrs: list[int] = []
        self.allocator = make_output_allocator(trt, cuda) if dds else None
        for n, shp in shapes.items():
            self._allocate(n, shp)

    def _allocate(self, n: str, shp: tuple[int, ...]) -> None:
        cuda = self.cuda
        nbytes = int(np.prod(shp, dtype=np.int64)) * self.dtype[n].itemsize if shp else self.dtype[n].itemsize
        hp = cuda.malloc_host(nbytes)
        self._host_ptrs.append(hp)
        self.host[n] = host_view(hp, nbytes, self.dtype[n])
        if self.on_host[n]:
            ok = self.context.set_tensor_address(n, hp)
        elif n in self.dds:
            assert self.allocator is not None
            self.allocator.reserve(n, nbytes)
            ok = self.context.set_output_allocator(n, self.allocator)
        else:
            self.dev[n] = cuda.malloc(nbytes)
            ok = self.context.set_tensor_address(n, self.dev[n])
        if ok is False:
            raise ATFRError(f"{self.what}: TensorRT refused the buffer for tensor {n!r}", exit_code=4)

    def upload(self, names: list[str], feeds: dict[str, np.ndarray], stream: Any) -> None:
        """Queue the host-to-device copies of the staged inputs."""
        for n in names:
            if not self.on_host[n]:
                self.cuda.memcpy_async(self.dev[n], self.host[n].ctypes.data, feeds[n].size * self.dtype[n].itemsize,
                                       self.cuda.H2D, stream)

    def download(self, names: list[str], stream: Any) -> dict[str, tuple[int, ...]]:
        """Queue each output's device-to-host copy at this run's shape; returns the shapes."""
        cuda, alloc = self.cuda, self.allocator
        if self.dds:
            cuda.sync(stream)  # the data-dependent shapes are known once the front engine has run
            assert alloc is not None
            if alloc.error:
                raise ATFRError(f"{self.what}: output allocation failed ({alloc.error})", exit_code=4)
        out: dict[str, tuple[int, ...]] = {}
        for n in names:
            if n in self.dds:
                assert alloc is not None
                shp = alloc.shapes.get(n)
                if shp is None:
                    raise ATFRError(f"{self.what}: TensorRT did not report the shape of the data-dependent output "
                                    f"{n!r} for this run (IOutputAllocator.notify_shape was not called)", exit_code=4)
                src = alloc.buffers[n][0]
            else:
                shp = tuple(int(d) for d in self.context.get_tensor_shape(n))
                src = self.dev.get(n, 0)
            out[n] = shp
            nbytes = int(np.prod(shp, dtype=np.int64)) * self.dtype[n].itemsize
            if nbytes > self.host[n].nbytes:
                raise ATFRError(f"{self.what}: output {n!r} {shp} exceeds its reserved size", exit_code=4)
            if not self.on_host[n]:
                cuda.memcpy_async(self.host[n].ctypes.data, src, nbytes, cuda.D2H, stream)
        return out

    def close(self) -> None:
        for p in self.dev.values():
            self.cuda.free(p)
        if self.allocator is not None:
            for p, _ in self.allocator.buffers.values():
                self.cuda.free(p)
        for p in self._host_ptrs:
            self.cuda.free_host(p)
        self.dev, self._host_ptrs = {}, []


class TrtEngineRunner:
    """GraphRunner over one deserialized engine: run(feeds) -> outputs (host numpy)."""

    def __init__(self, trt: Any, runtime: Any, cuda: Cuda, stream: Any, path: Path, logger: Any,
                 upper_bounds: dict[str, dict[int, int]] | None = None, cuda_graphs: bool = False,
                 copy_outputs: bool = True):
        self.trt, self.cuda, self.stream, self.path = trt, cuda, stream, path
        self.stream_handle = int(stream)
        self.copy_outputs = copy_outputs
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            err = logger.errors[-1] if getattr(logger, "errors", None) else "no error message"
            raise DependencyError(f"{path}: TensorRT could not deserialize the engine ({' '.join(err.split())[:200]}); "
                                  "rebuild it with 'atfr build'")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ATFRError(f"{path}: cannot create an execution context (out of GPU memory?)", exit_code=4)
        io = describe_engine(trt, self.engine)
        self.input_names, self.output_names, self.dtype, self.on_host = io.input_names, io.output_names, io.dtype, io.on_host
        self.profiles, self.num_profiles, self.max_batch = io.profiles, len(io.profiles), io.max_batch
        self.dds: list[str] = []  # outputs whose shape stays unknown with all input shapes set (found below)
        self.active_profile = -1
        self.current: dict[str, tuple[int, ...]] = {}
        max_out = self._max_output_shapes(upper_bounds or {})
        self._set_profile(0)
        self.current = {}  # shapes set while sizing buffers are not a clip's: set them again on first run
        self.buffers = EngineBuffers(trt, cuda, self.context, io, self.dds, {**io.max_in, **max_out}, path.name)
        self.host, self.allocator = self.buffers.host, self.buffers.allocator  # the same objects, read per run
        self.cuda_graphs = bool(cuda_graphs) and not self.dds
        self.graphs: dict[tuple, Any] = {}
        self.events = [cuda.event() for _ in range(4)]
        self.last_timings: dict[str, float] = {}
        self.runs = 0

    # shapes ----------------------------------------------------------------------------------
    def _set_profile(self, k: int) -> None:
        if k == self.active_profile:
            return
        if not self.context.set_optimization_profile_async(k, self.stream_handle):
            raise ATFRError(f"{self.path.name}: cannot select optimization profile {k}", exit_code=4)
        self.active_profile = k
        self.current = {}

    def _max_output_shapes(self, upper: dict[str, dict[int, int]]) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for k in range(self.num_profiles):
            self._set_profile(k)
            for n in self.input_names:
                self.context.set_input_shape(n, self.profiles[k][n][2])
            for n in self.output_names:
                shp = [int(d) for d in self.context.get_tensor_shape(n)]
                if any(d < 0 for d in shp) and n not in self.dds:
                    self.dds.append(n)  # data-dependent (e.g. sgs{p} with B' bins): IOutputAllocator
                shp = output_bound(self.context, n, shp, upper.get(n, {}), self.dtype[n].itemsize, self.path.name)
                prev = out.get(n)
                out[n] = tuple(shp) if prev is None else tuple(max(a, b) for a, b in zip(prev, shp))
        return out

    # running -----------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = int(feeds[self.input_names[0]].shape[0]) if feeds[self.input_names[0]].ndim else 1
        if n <= self.max_batch:
            return self._run_once(feeds)
        parts = [self._run_once({k: v[i:i + self.max_batch] for k, v in feeds.items()}, copy=True)
                 for i in range(0, n, self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts], 0) for k in self.output_names}

    def _stage_inputs(self, feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """The tightest profile for these shapes; inputs copied into their pinned buffers; shapes set."""
        shapes = {n: tuple(int(d) for d in feeds[n].shape) for n in self.input_names}
        self._set_profile(pick_profile(self.profiles, shapes, self.path.name))
        for n in self.input_names:
            arr = feeds[n]
            if arr.dtype != self.dtype[n]:
                arr = arr.astype(self.dtype[n])
            view = self.host[n][: arr.size].reshape(arr.shape)
            np.copyto(view, arr, casting="no")
            if self.current.get(n) != shapes[n]:
                if not self.context.set_input_shape(n, shapes[n]):
                    raise ATFRError(f"{self.path.name}: TensorRT rejected shape {shapes[n]} for {n!r}")
                self.current[n] = shapes[n]
        return shapes

    def _run_once(self, feeds: dict[str, np.ndarray], copy: bool | None = None) -> dict[str, np.ndarray]:
        cuda, st, ev = self.cuda, self.stream, self.events
        t0 = time.perf_counter()
        shapes = self._stage_inputs(feeds)
        cuda.record(ev[0], st)
        self.buffers.upload(self.input_names, feeds, st)
        cuda.record(ev[1], st)
        te = time.perf_counter()
        self._enqueue((self.active_profile,) + tuple(shapes[n] for n in self.input_names))
        enqueue_ms = (time.perf_counter() - te) * 1e3
        cuda.record(ev[2], st)
        out_shapes = self.buffers.download(self.output_names, st)
        cuda.record(ev[3], st)
        cuda.sync(st)
        copy = self.copy_outputs if copy is None else copy
        outs = {}
        for n in self.output_names:
            v = self.host[n][:int(np.prod(out_shapes[n], dtype=np.int64))].reshape(out_shapes[n])
            outs[n] = v.copy() if copy else v
        self.runs += 1
        self.last_timings = {
            "host_latency": (time.perf_counter() - t0) * 1e3, "enqueue": enqueue_ms,
            "h2d": cuda.elapsed_ms(ev[0], ev[1]), "gpu_compute": cuda.elapsed_ms(ev[1], ev[2]),
            "d2h": cuda.elapsed_ms(ev[2], ev[3]),
        }
        if self.allocator is not None:
            self.last_timings["reallocations"] = float(self.allocator.reallocations)
        return outs

    def _enqueue(self, key: tuple) -> None:
        """execute_async_v3, or the CUDA graph captured for this (profile, shapes)."""
        if self.allocator is not None:
            self.allocator.reset()
        if self.cuda_graphs and key in self.graphs:
            self.cuda.launch(self.graphs[key], self.stream)
            return
        if not self.context.execute_async_v3(self.stream_handle):
            raise ATFRError(f"{self.path.name}: execute_async_v3 failed (see the TensorRT log)", exit_code=4)
        if self.cuda_graphs:
            self._capture(key)

    def _capture(self, key: tuple) -> None:
        """Capture the enqueue just made valid for these shapes (TensorRT needs one plain enqueue after a
        shape change before capture). On any failure, CUDA graphs are switched off for this engine."""
        cuda = self.cuda
        try:
            cuda.begin_capture(self.stream)
            try:
                ok = self.context.execute_async_v3(self.stream_handle)
            finally:
                graph = cuda.end_capture(self.stream)
            if not ok:
                raise ATFRError("enqueue failed during capture")
            self.graphs[key] = cuda.instantiate(graph)
        except ATFRError as e:
            self.cuda_graphs = False
            print(f"WARNING ⚠️ {self.path.name}: CUDA graph capture failed ({e}); running without graphs",
                  file=sys.stderr)

    def close(self) -> None:
        self.buffers.close()


class SampledFrontRunner:
    """A front engine that contains SGS, run clip by clip (each clip gets its own B').

    Output contract: ``sgs{p}`` [N,C,max B',H,W] zero-padded, ``bprime{p}`` [N] int32 (each clip's
    B'), pass-through ``feat{p}`` [N,...]; see :func:`split_presampled`.
    """

    def __init__(self, engine: TrtEngineRunner, manifest: Manifest):
        self.engine = engine
        self.m = manifest
        self.input_names = engine.input_names
        self.sgs_paths = [l.pathway for l in manifest.sgs]
        self.output_names = [f"sgs{p}" for p in self.sgs_paths] + [f"bprime{p}" for p in self.sgs_paths] + \
            [n for n in engine.output_names if n.startswith("feat")]
        self.last_timings: dict[str, float] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = int(feeds[self.input_names[0]].shape[0])
        per: list[dict[str, np.ndarray]] = []
        tot: dict[str, float] = {}
        for i in range(n):
            o = self.engine._run_once({k: v[i:i + 1] for k, v in feeds.items()}, copy=True)
            for p in self.sgs_paths:
                bins = o[f"sgs{p}"].shape[2]
                if f"bprime{p}" in o and int(np.asarray(o[f"bprime{p}"]).reshape(-1)[0]) != bins:
                    raise ATFRError(f"SGS reported B'={int(np.asarray(o[f'bprime{p}']).reshape(-1)[0])} but sgs{p} has "
                                    f"{bins} bins (plugin bug?)", exit_code=4)
            per.append(o)
            for k, v in self.engine.last_timings.items():
                tot[k] = v if k == "reallocations" else tot.get(k, 0.0) + v
        self.last_timings = tot
        out: dict[str, np.ndarray] = {}
        for p in self.sgs_paths:
            arrs = [o[f"sgs{p}"] for o in per]
            bmax = max(a.shape[2] for a in arrs)
            pad = np.zeros((n, arrs[0].shape[1], bmax) + arrs[0].shape[3:], arrs[0].dtype)
            for i, a in enumerate(arrs):
                pad[i, :, : a.shape[2]] = a[0]
            out[f"sgs{p}"] = pad
            out[f"bprime{p}"] = np.array([a.shape[2] for a in arrs], np.int32)
        for name in self.output_names:
            if name.startswith("feat"):
                out[name] = np.concatenate([o[name] for o in per], 0)
        return out


def split_presampled(manifest: Manifest, front_out: dict[str, np.ndarray]
                     ) -> list[tuple[dict[str, np.ndarray], tuple[int, ...]]]:
    """Per clip (back feeds for N=1, B' per SGS layer) from a front that already ran SGS.

    ``bprime{p}`` may be [N] (per clip, as SampledFrontRunner returns) or 0-D (one B' for the
    batch, as the raw SGS node gives).
    """
    m = manifest
    first = f"sgs{m.sgs[0].pathway}" if m.sgs else "feat0"
    n = int(front_out[first].shape[0])
    results = []
    for i in range(n):
        feeds: dict[str, np.ndarray] = {}
        bp: list[int] = []
        for p in range(m.num_pathways):
            if m.sgs_for(p) is not None:
                s = front_out[f"sgs{p}"]
                b = np.asarray(front_out.get(f"bprime{p}", s.shape[2])).reshape(-1)
                bi = int(b[i] if b.size > 1 else b[0])
                if not 1 <= bi <= s.shape[2]:
                    raise ATFRError(f"SGS returned B'={bi} for clip {i} (sgs{p} has {s.shape[2]} bins)")
                x = np.ascontiguousarray(s[i:i + 1, :, :bi])
                if not np.isfinite(x).all():
                    raise ATFRError("SGS output is NaN/Inf (non-finite features from the front engine)")
                feeds[f"sgs{p}"] = x
                bp.append(bi)
            else:
                feeds[f"feat{p}"] = front_out[f"feat{p}"][i:i + 1]
        results.append((feeds, tuple(bp)))
    return results


class TrtPipeline(Pipeline):
    """Pipeline whose front engine may already contain SGS.

    Equivalent to the hook proposed for pipeline.py: when the front output carries sgs{p}, run_sgs
    splits it per clip instead of running an SGS step.
    """

    def run_sgs(self, front_out):  # type: ignore[override]
        if self.manifest.sgs and all(f"sgs{l.pathway}" in front_out for l in self.manifest.sgs):
            return split_presampled(self.manifest, front_out)
        return super().run_sgs(front_out)

    def timings(self) -> dict[str, dict[str, float]]:
        """Last run's timings per stage (ms, trtexec vocabulary: host_latency, enqueue, h2d, gpu_compute, d2h)."""
        return {"front": dict(getattr(self.front, "last_timings", {})),
                "back": dict(getattr(self.back, "last_timings", {}))}

    def close(self) -> None:
        for r in (self.front, self.back):
            eng = getattr(r, "engine", r)
            if hasattr(eng, "close"):
                eng.close()


# -- loading ------------------------------------------------------------------------------------------

def read_sidecar(engine: Path, outdir: str) -> dict[str, Any]:
    side = engine.with_name(engine.name + ".json")
    if not engine.exists():
        raise ATFRError(f"{engine} is missing: build the engines with 'atfr build {outdir}'")
    if not side.exists():
        raise ATFRError(f"{side.name} is missing (engine not built by 'atfr build'?): rebuild with "
                        f"'atfr build {outdir} --force'")
    try:
        d = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ATFRError(f"{side}: unreadable engine metadata ({e}); rebuild with 'atfr build {outdir} --force'") from None
    if d.get("format") != "atfr-engine":
        raise ATFRError(f"{side}: not atfr engine metadata")
    if int(d.get("engine_bytes", -1)) != engine.stat().st_size:
        raise ATFRError(f"{engine.name} does not match {side.name} (replaced or truncated): rebuild with "
                        f"'atfr build {outdir} --force'")
    return d


def load_trt_pipeline(manifest: Manifest, engine_dir: str | os.PathLike | None = None, plugin: str | None = None,
                      cuda_graphs: bool = False, plugin_variant: str = "auto", copy_outputs: bool = True,
                      verbose: bool = False) -> Pipeline:
    """Load front.engine/back.engine for ``manifest`` (built by 'atfr build') as a Pipeline."""
    m = manifest
    edir = Path(engine_dir) if engine_dir else m.root
    outdir = str(m.root)
    if not engine_dir:  # engines read from the export folder follow its path rule (runtime/export_paths.py)
        for r in ("front", "back"):
            inside(m.root, f"{r}.engine", "engine")
            inside(m.root, f"{r}.engine.json", "engine metadata")
    sides = {r: read_sidecar(edir / f"{r}.engine", outdir) for r in ("front", "back")}
    trt = import_tensorrt()
    check_supported(trt.__version__, "host")
    cuda = Cuda.get()
    gpu = cuda.device_info()
    needs_plugin = any(s.get("plugin") for s in sides.values())
    plugin = plugin or os.environ.get(PLUGIN_ENV) or None
    plugin_hash = None
    if needs_plugin:
        if not plugin:
            raise DependencyError(f"front.engine contains the SGS plugin: pass --plugin PATH (the libatfr_sgs.so it "
                                  f"was built with) or set {PLUGIN_ENV}")
        if not Path(plugin).is_file():
            raise DependencyError(f"SGS plugin library not found: {plugin} (check --plugin / {PLUGIN_ENV})")
        plugin_hash = sha256_file(plugin)
    checks = m.raw.get("checksums", {})
    for role, side in sides.items():
        problem = engine_compat_problem(side, trt.__version__, gpu["gpu_name"], gpu["compute_capability"],
                                        plugin_hash if side.get("plugin") else None, outdir)
        if problem:
            raise DependencyError(f"{role}.engine: {problem}")
        stale = stale_problem(side, checks.get(side.get("onnx_file", "")), outdir)
        if stale:
            raise ATFRError(stale)
    logger = make_logger(trt, verbose)
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    if needs_plugin:
        plug = sides["front"].get("plugin") or sides["back"].get("plugin")
        load_plugin_library(trt, plugin, plug.get("namespace", "atfr"),
                            plugin_variant if plugin_variant != "auto" else plug.get("variant", "auto"))
    runtime = trt.Runtime(logger)
    stream = cuda.stream()
    upper = {f"sgs{l.pathway}": {2: l.bins} for l in m.sgs}
    front_eng = TrtEngineRunner(trt, runtime, cuda, stream, edir / "front.engine", logger, upper, False, copy_outputs)
    back_eng = TrtEngineRunner(trt, runtime, cuda, stream, edir / "back.engine", logger, None, cuda_graphs,
                               copy_outputs=True)
    if m.sgs and graph_has_sgs(front_eng.output_names):
        front: Any = SampledFrontRunner(front_eng, m)
        step = None
    else:
        front = front_eng
        step = SGSStep(m, "numpy") if m.sgs else None
    pipe = TrtPipeline(m, front, back_eng, step, backend="tensorrt")
    pipe.engine_info = {r: {k: s.get(k) for k in ("tensorrt_version", "gpu_name", "precision", "engine_precision", "sgs", "graph",
                                                  "tprime_profiles")} for r, s in sides.items()}  # type: ignore[attr-defined]
    return pipe
