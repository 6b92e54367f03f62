"""AdaFuse exports on real Triton servers (the nvidia-pytriton wheel's tritonserver, CPU, loopback,
free ports): ``atfr serve`` and the bundled server on an ``atfr triton-repo --flavor python``
repository. A request of 2 clips (raw frames, and float32 clips) answers what ``atfr infer --json``
gives each clip alone; malformed requests get the ATFR one-line answers. Servers and helpers:
tests/test_serve.py; the references and checks: tests/test_adafuse_serving.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from test_serve import (ROOT, infer, one_line_body, raw_infer, start_ready_bundled_server, start_serve,
                        stop_serve)
from test_adafuse_serving import assert_matches, refs  # noqa: F401 - a fixture

http = pytest.importorskip("tritonclient.http")

NAMES = ["probs", "logits", "topk_index", "topk_label", "policy_fractions", "gflops"]


def answers(client, model: str, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    r = infer(client, model, name, x)
    return {n: r.as_numpy(n) for n in NAMES}


def counter(metrics_port: int, name: str, model: str) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return int(sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(f'{name}{{model="{model}"')))


def clips_of(export, frames: np.ndarray) -> np.ndarray:
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.video.preprocess import Preprocessor

    pre = Preprocessor(load_manifest(export).input)  # atfr run's transform, one clip at a time
    return np.stack([pre.pack(pre(f, 1))[0] for f in frames])


@pytest.mark.slow  # a server start, ~10 s
def test_atfr_serve_adafuse_batch_matches_atfr_infer(tiny_adafuse_export, stub_env, refs):
    frames, ref, atol = refs
    # a 0.3 s batcher delay: two requests sent together are merged into one batch
    server = start_serve(tiny_adafuse_export, stub_env, "--max-batch", "4", "--queue-delay-us", "300000")
    try:
        url = server["http"]
        c = http.InferenceServerClient(url)
        try:
            meta = c.get_model_metadata("tiny_adafuse")
            assert [o["name"] for o in meta["outputs"]] == NAMES  # no bprime
            assert_matches(answers(c, "tiny_adafuse_frames", "frames", frames), ref, atol)
            clips = clips_of(tiny_adafuse_export, frames)
            assert_matches(answers(c, "tiny_adafuse", "clip0", clips), ref, atol)

            def one(i: int) -> dict[str, np.ndarray]:  # one clip per request, from two clients at once
                cc = http.InferenceServerClient(url)
                try:
                    return answers(cc, "tiny_adafuse", "clip0", clips[i:i + 1])
                finally:
                    cc.close()
            with ThreadPoolExecutor(2) as ex:
                got = list(ex.map(one, range(2)))
            assert_matches({n: np.concatenate([g[n] for g in got]) for n in NAMES}, ref, atol)
            # the two requests ran as one batch: 3 requests (2 clips, 1, 1) in 2 executions
            assert counter(server["metrics"], "nv_inference_request_success", "tiny_adafuse") == 3
            assert counter(server["metrics"], "nv_inference_exec_count", "tiny_adafuse") == 2
        finally:
            c.close()
        nan = np.zeros((1, 3, 4, 32, 32), np.float32)
        nan[0, 0, 0, 0, 0] = np.nan
        assert one_line_body(raw_infer(url, "tiny_adafuse", "clip0", nan)) == (
            500, "atfr: pathway 0: the clip contains NaN or Inf values")
        assert one_line_body(raw_infer(url, "tiny_adafuse_frames", "frames", np.zeros((1, 4, 7, 40, 3), np.uint8))) == (
            500, "atfr: frames: frames of 7x40 are too small")
        status, err = one_line_body(raw_infer(url, "tiny_adafuse", "clip0", nan[:, :, :2]))
        assert status == 400 and "unexpected shape for input 'clip0'" in err
        status, err = one_line_body(raw_infer(url, "tiny_adafuse", "clip0", nan.astype(np.float64)))
        assert status == 400 and "data-type is 'FP64'" in err
        proc = server["proc"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(8) == 0
    finally:
        stop_serve(server)


@pytest.mark.slow  # a server start, ~10 s
def test_bundled_server_on_adafuse_repo_matches_atfr_infer(tiny_adafuse_export, stub_env, refs, tmp_path):
    frames, ref, atol = refs
    r = subprocess.run([sys.executable, "-m", "atfr.cli", "triton-repo", str(tiny_adafuse_export), "-o",
                        str(tmp_path / "repo"), "--flavor", "python"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    proc, ports = start_ready_bundled_server(tmp_path / "repo", tmp_path / "work", stub_env, tmp_path / "server.log")
    url = f"127.0.0.1:{ports[0]}"
    try:
        c = http.InferenceServerClient(url)
        try:
            assert_matches(answers(c, "tiny_adafuse_frames", "frames", frames), ref, atol)
            assert_matches(answers(c, "tiny_adafuse", "clip0", clips_of(tiny_adafuse_export, frames)), ref, atol)
            nan = np.zeros((1, 3, 4, 32, 32), np.float32)
            nan[0, 1] = np.inf
            from tritonclient.utils import InferenceServerException
            with pytest.raises(InferenceServerException) as e:
                infer(c, "tiny_adafuse", "clip0", nan)
            assert str(e.value) == "[500] in ensemble 'tiny_adafuse', clip0: the clip contains NaN or Inf values"
        finally:
            c.close()
        text = urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/metrics", timeout=10).read().decode()
        assert 'atfr_clips_total{model="tiny_adafuse_report"} 4' in text
        got = [ln for ln in text.splitlines() if ln.startswith('atfr_gflops_total{model="tiny_adafuse_report"}')]
        # Prometheus prints the double sum; the order of additions differs from ours: 1e-9 relative
        assert len(got) == 1 and abs(float(got[0].split()[-1]) - 2 * sum(x["gflops"]["eq5"] for x in ref)) < 1e-9
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                import os
                os.killpg(proc.pid, signal.SIGKILL)
