"""Serving on a real Triton server (the tritonserver 2.51 of the nvidia-pytriton wheel, CPU,
127.0.0.1 only, free ports): ``atfr serve`` (PyTriton) and the bundled server on an ``atfr
triton-repo --flavor python`` repository. Results equal ``Pipeline.infer`` clip for clip under
concurrent requests with mixed B'; malformed requests get one clear error and the server keeps
serving; SIGTERM/SIGINT stop it cleanly with no process left behind.

The servers' Python-backend stub needs numpy < 2 (runtime/serving/triton_env.py). Where this venv has
numpy 2 (other packages need it), the tests build a small overlay environment: a venv whose own
site-packages hold numpy<2 and nvidia-pytriton and that sees this venv's packages after them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install 'atfr-deploy[serve]')")
http = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install 'atfr-deploy[serve]')")

ROOT = Path(__file__).resolve().parents[1]
# Server tests are marked slow: each server takes ~5-10 s to start (the whole file: about 80 s).


# -- environment for the server's Python-backend stub -----------------------------------------

@pytest.fixture(scope="session")
def stub_env(tmp_path_factory) -> Path | None:
    """None: this interpreter already suits the stub (numpy < 2); else an overlay env's prefix."""
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


def _python(env: Path | None) -> str:
    return str(env / "bin" / "python3") if env else sys.executable


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def session_processes(sid: int) -> list[int]:
    """PIDs in session ``sid`` (servers start in a session of their own: tritonserver and its
    Python-backend stubs stay in it unless something leaks out)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(p.name))
    return out


def wait_session_empty(sid: int, timeout: float = 15.0) -> list[str]:
    """Command lines of what is still in the session after ``timeout`` (helpers such as
    multiprocessing's resource tracker exit a moment after their parent)."""
    t0 = time.monotonic()
    while session_processes(sid) and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    left = []
    for pid in session_processes(sid):
        try:
            left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return left


# -- clips with mixed B' ------------------------------------------------------------------------

def make_clips(n: int) -> np.ndarray:
    """Pre-processed clips [n,3,8,32,32]: noise, a static clip and blends in between spread B'."""
    rng = np.random.default_rng(7)
    noise = rng.standard_normal((n, 3, 8, 32, 32)).astype(np.float32)
    static = np.repeat(rng.standard_normal((n, 3, 1, 32, 32)), 8, axis=2).astype(np.float32)
    mix = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None, None, None, None]
    return np.ascontiguousarray(mix * noise + (1 - mix) * static)


def make_frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    still = rng.integers(0, 256, (n, 1, 48, 64, 3), dtype=np.uint8).repeat(8, axis=1)
    moving = rng.integers(0, 256, (n, 8, 48, 64, 3), dtype=np.uint8)
    return np.where(np.arange(n)[:, None, None, None, None] % 2 == 0, still, moving).astype(np.uint8)


@pytest.fixture(scope="module")
def reference(tiny_export):
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.video.preprocess import Preprocessor

    pl = Pipeline.load(tiny_export)
    clips = make_clips(12)
    frames = make_frames(4)
    pre = Preprocessor(pl.manifest.input)
    ref_clips = [pl.infer([clips[i:i + 1]])[0] for i in range(len(clips))]
    # frames: the transform 'atfr run' applies (Preprocessor, centre crop, pack), one clip at a time
    ref_frames = [pl.infer([x[None] for x in pre.pack(pre(frames[i], 1))])[0] for i in range(len(frames))]
    assert len({r.bprime for r in ref_clips}) >= 3, "the test clips must cover several B'"
    return clips, frames, ref_clips, ref_frames, pl.manifest


def infer(client, model: str, name: str, x: np.ndarray):
    dtype = {np.float32: "FP32", np.uint8: "UINT8", np.float64: "FP64"}[x.dtype.type]
    i = http.InferInput(name, list(x.shape), dtype)
    i.set_data_from_numpy(x)
    return client.infer(model, [i])


# ONNX Runtime in the same process type on the same CPU runs the same graphs: the only difference
# from the reference is the batch composition (the server batches up to 8 clips, the reference
# runs each clip alone), which can change ORT's blocking and so the float32 summation order.
# Bound: reductions of <= 432 terms (3x3x3 conv over 16 channels) with eps 6e-8 relative error
# each, ~1e-5 relative per layer after a few layers, times ~2B = 16 from SGS on logits of
# magnitude ~1: 2e-4. B' and the top-k order are exact (asserted exactly).
LOGIT_ATOL = 2e-4


def check_concurrent(client_factory, model_clips, model_frames, reference) -> list[tuple[int, ...]]:
    clips, frames, ref_clips, ref_frames, m = reference
    jobs = [("clips", i, clips[i:i + 2]) for i in range(0, len(clips), 2)]
    jobs += [("frames", i, frames[i:i + 1]) for i in range(len(frames))]

    def run(job):
        kind, i, x = job
        c = client_factory()
        try:
            if kind == "clips":
                return job, infer(c, model_clips, "clip0", x)
            return job, infer(c, model_frames, "frames", x)
        finally:
            c.close()

    seen = []
    with ThreadPoolExecutor(8) as ex:
        for (kind, i, x), r in ex.map(run, jobs):
            refs = ref_clips[i:i + len(x)] if kind == "clips" else ref_frames[i:i + 1]
            bp, lg = r.as_numpy("bprime"), r.as_numpy("logits")
            labels = r.as_numpy("topk_label")
            for j, ref in enumerate(refs):
                assert tuple(int(b) for b in bp[j]) == ref.bprime, (kind, i + j)
                np.testing.assert_allclose(lg[j], ref.logits, rtol=0, atol=LOGIT_ATOL)
                np.testing.assert_allclose(r.as_numpy("probs")[j], ref.probs, rtol=0, atol=LOGIT_ATOL)
                assert [int(v) for v in r.as_numpy("topk_index")[j]] == ref.top(5)
                assert [v.decode() for v in labels[j]] == [m.label(k) for k in ref.top(5)]
                seen.append(ref.bprime)
    assert len(set(seen)) >= 3
    return seen


def error_of(fn) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as ei:
        fn()
    return str(ei.value)


# -- atfr serve (PyTriton) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tiny_export, stub_env):
    http_port, grpc_port, metrics_port = free_ports(3)
    cmd = [_python(stub_env), "-m", "atfr.cli", "serve", str(tiny_export), "--http-port", str(http_port),
           "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--max-batch", "8",
           "--queue-delay-us", "20000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # Triton's own log shares stdout: keep the pipe empty, spot the ready line
        for ln in proc.stdout:
            lines.append(ln)
            if ln.startswith('{"ready"'):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        pytest.fail("atfr serve did not get ready: " + "".join(lines)[-3000:])
    line = [ln for ln in lines if ln.startswith('{"ready"')]
    info = json.loads(line[0])
    assert info["ready"] and info["http"] == f"127.0.0.1:{http_port}"
    yield {"proc": proc, "http": info["http"], "port": http_port, "metrics": metrics_port}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_serve_matches_pipeline_under_concurrency(served, reference):
    c = http.InferenceServerClient(served["http"])
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("tiny") and c.is_model_ready("tiny_frames")
    c.close()
    check_concurrent(lambda: http.InferenceServerClient(served["http"]), "tiny", "tiny_frames", reference)


@pytest.mark.slow
def test_serve_rejects_malformed_requests_and_keeps_serving(served, reference):
    clips = reference[0]
    c = http.InferenceServerClient(served["http"])
    try:
        msg = error_of(lambda: infer(c, "tiny", "clip0", clips[:1, :, :, :16, :16]))
        assert "unexpected shape for input 'clip0'" in msg
        msg = error_of(lambda: infer(c, "tiny", "clip0", clips[:1].astype(np.float64)))
        assert "data-type is 'FP64'" in msg
        nan = clips[:1].copy()
        nan[0, 0, 0, 0, 0] = np.nan
        # PyTriton 0.7 wraps the callable's error in its traceback; our line is in it, once
        msg = error_of(lambda: infer(c, "tiny", "clip0", nan))
        assert msg.count("pathway 0: the clip contains NaN or Inf values") == 1
        big = np.zeros((1, 8, 4100, 40, 3), np.uint8)
        msg = error_of(lambda: infer(c, "tiny_frames", "frames", big))
        assert msg.count("frames: 4100x40 exceeds the limit of 4096 pixels per side") == 1
        msg = error_of(lambda: infer(c, "tiny_frames", "frames", np.zeros((1, 4, 48, 64, 3), np.uint8)))
        assert "unexpected shape for input 'frames'" in msg
        r = infer(c, "tiny", "clip0", clips[:1])  # still serving
        assert tuple(r.as_numpy("bprime")[0]) == reference[2][0].bprime
    finally:
        c.close()


@pytest.mark.slow
def test_serve_stops_cleanly_on_sigterm(served):
    proc = served["proc"]
    assert len(session_processes(proc.pid)) >= 3  # atfr serve, tritonserver, its stubs: the check can see them
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert wait_session_empty(proc.pid) == []
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", served["port"]))


# -- the bundled tritonserver on an atfr triton-repo --flavor python repository ------------------

@pytest.fixture(scope="module")
def repo_server(tiny_export, stub_env, tmp_path_factory):
    from atfr.runtime.serving.triton_env import start_bundled_server

    d = tmp_path_factory.mktemp("triton_repo")
    r = subprocess.run([sys.executable, "-m", "atfr.cli", "triton-repo", str(tiny_export), "-o", str(d / "repo"),
                        "--flavor", "python", "--queue-delay-us", "20000", "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    ports = free_ports(3)
    log = open(d / "server.log", "wb")
    proc = start_bundled_server(d / "repo", d / "work", "127.0.0.1", *ports, python_env=stub_env, log=log)
    url = f"127.0.0.1:{ports[0]}"
    t0 = time.monotonic()
    while True:
        c = http.InferenceServerClient(url)
        try:
            if c.is_server_ready():
                break
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        finally:
            c.close()
        if proc.poll() is not None or time.monotonic() - t0 > 120:
            proc.kill()
            pytest.fail(f"tritonserver did not get ready: {(d / 'server.log').read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    yield {"proc": proc, "http": url, "port": ports[0], "metrics": ports[2]}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_repo_matches_pipeline_under_concurrency_and_counts_bprime(repo_server, reference):
    seen = check_concurrent(lambda: http.InferenceServerClient(repo_server["http"]), "tiny", "tiny_frames",
                            reference)
    from atfr.runtime.serving.service import gflops_per_bprime

    # the B' grouping was exercised across requests: the SGS model ran batches of several requests
    c = http.InferenceServerClient(repo_server["http"])
    stats = c.get_inference_statistics("tiny_sgs")["model_stats"][0]
    c.close()
    assert max(int(b["batch_size"]) for b in stats["batch_stats"]) > 1, stats["batch_stats"]

    text = urllib.request.urlopen(f"http://127.0.0.1:{repo_server['metrics']}/metrics", timeout=10).read().decode()
    m = reference[4]
    layer = m.sgs[0].spec.name
    for bp in set(seen):
        want = f'atfr_bprime_clips_total{{bprime="{bp[0]}",layer="{layer}",model="tiny_sgs"}} {seen.count(bp)}'
        assert want in text, want
    table = gflops_per_bprime(m)
    saved = sum(table[bp][1] - table[bp][0] for bp in seen)
    got = [ln for ln in text.splitlines() if ln.startswith('atfr_gflops_saved_total{model="tiny_sgs"}')]
    # Prometheus prints the double sum; the order of additions differs from ours: 1e-9 relative
    assert len(got) == 1 and abs(float(got[0].split()[-1]) - saved) <= 1e-9 * max(1.0, saved)
    assert f'atfr_clips_total{{model="tiny_sgs"}} {len(seen)}' in text


@pytest.mark.slow
def test_repo_rejects_malformed_requests_with_one_line(repo_server, reference):
    clips = reference[0]
    c = http.InferenceServerClient(repo_server["http"])
    try:
        nan = clips[:1].copy()
        nan[0, 0, 3] = np.inf
        msg = error_of(lambda: infer(c, "tiny", "clip0", nan))
        assert msg == "[500] in ensemble 'tiny', clip0: the clip contains NaN or Inf values"
        msg = error_of(lambda: infer(c, "tiny_frames", "frames", np.zeros((1, 8, 4100, 40, 3), np.uint8)))
        assert msg == "[500] in ensemble 'tiny_frames', frames: 4100x40 exceeds the limit of 4096 pixels per side"
        msg = error_of(lambda: infer(c, "tiny", "clip0", clips[:1].astype(np.float64)))
        assert "data-type is 'FP64'" in msg
        msg = error_of(lambda: infer(c, "tiny", "clip0", clips[:1, :, :4]))
        assert "unexpected shape for input 'clip0'" in msg
        # a NaN clip batched with good ones fails alone: send them together from threads
        def one(x):
            cc = http.InferenceServerClient(repo_server["http"])
            try:
                return infer(cc, "tiny", "clip0", x).as_numpy("bprime")
            except Exception as e:  # noqa: BLE001
                return str(e)
            finally:
                cc.close()
        with ThreadPoolExecutor(4) as ex:
            res = list(ex.map(one, [clips[:1], nan, clips[1:2], clips[2:3]]))
        assert "NaN or Inf" in res[1]
        for k, i in ((0, 0), (2, 1), (3, 2)):
            assert tuple(res[k][0]) == reference[2][i].bprime
    finally:
        c.close()


@pytest.mark.slow
def test_repo_server_stops_cleanly_on_sigint(repo_server):
    proc = repo_server["proc"]
    assert len(session_processes(proc.pid)) >= 5  # tritonserver and a stub per Python-backend model (4)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert wait_session_empty(proc.pid) == []


# -- repository layout for the other flavors (no server: the wheel has no ORT/TRT backends) ------

def test_repo_onnxruntime_flavor_layout_and_refusals(tiny_export, tmp_path):
    out = tmp_path / "repo"
    cli = [sys.executable, "-m", "atfr.cli", "triton-repo", str(tiny_export), "-o", str(out)]
    r = subprocess.run(cli + ["--instances", "2", "--max-batch", "4"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    front = (out / "tiny_front" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in front and "max_batch_size: 4" in front
    assert "instance_group [ { kind: KIND_GPU count: 2 } ]" in front and "dynamic_batching" in front
    assert (out / "tiny_front" / "1" / "model.onnx").read_bytes() == (tiny_export / "front.onnx").read_bytes()
    back = (out / "tiny_back" / "config.pbtxt").read_text()
    assert '{ name: "sgs0" data_type: TYPE_FP32 dims: [ 16, -1, 8, 8 ] }' in back
    ens = (out / "tiny" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ens and ens.index('"tiny_front"') < ens.index('"tiny_sgs"')
    assert 'key: "atfr_back_model" value { string_value: "tiny_back" }' in (out / "tiny_sgs" / "config.pbtxt").read_text()
    assert "nvcr.io/nvidia/tritonserver" in (out / "README.md").read_text()
    r = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().endswith("exists; use --force to replace it")
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cli + ["--force", "--flavor", "tensorrt"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "front.engine does not exist; build the engines first" in r.stderr
    assert (out / "tiny_front" / "1" / "model.onnx").exists()  # the failed run left the old repo alone


# -- the server environment (no server) ---------------------------------------------------------

def test_server_env_puts_this_interpreters_libpython_first():
    import sysconfig

    from atfr.runtime.serving.triton_env import pytriton_libs, server_env

    env = server_env(base={"LD_LIBRARY_PATH": "/usr/lib/x86_64-linux-gnu", "PATH": "/usr/bin"})
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    # the stub must find this interpreter's libpython before the system's (the resource_tracker trap)
    assert parts[:2] == [sysconfig.get_config_var("LIBDIR"), str(pytriton_libs())]
    assert parts[-1] == "/usr/lib/x86_64-linux-gnu"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.exec_prefix) / "bin")


@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="this environment has numpy<2: serve would start")
def test_serve_refuses_numpy2_with_one_line(tiny_export):
    r = subprocess.run([sys.executable, "-m", "atfr.cli", "serve", str(tiny_export), "--http-port", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 4
    assert len(r.stderr.strip().splitlines()) == 1 and "needs numpy < 2" in r.stderr
