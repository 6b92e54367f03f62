#!/usr/bin/env python
"""AdaFuse-TSN online on ONNX Runtime (CPU): dense masks vs gathered convolutions, per frame.

Builds AdaFuse-TSN-R18 or -R50 from the official ``zz_eval.sh`` TSN flags (ResNet-18: the same line
with ``--arch batenet18``), fills it with seeded random weights (atfr.models.adafuse_weights: the
policy nets then pick skip / reuse / keep about a third each), exports it at SIZE x SIZE and runs,
interleaved round-robin on the same seeded frames, the dense online graph (``online.onnx``: every
channel computed, then selected) and the gathered one (``online_gathered.onnx``: conv1 computes the
channels the policy needs, conv2 reads the non-skipped ones), plus the clip graph per clip (T frames
at once). Reports median ms per frame, counted GFLOPs per frame (official convention: the dense
network and Eq. 5 under the policy the frames got) and the realized/counted ratio of the savings.
With ``--tsm`` the AdaFuse-TSM twin (the same flags with ``--shift``, the same weights) joins the
rounds: its online graphs run one frame behind per block (models/adafuse_online_tsm.py) and carry
each block's previous input, which is what the comparison with the TSN online graph prices.

    python benchmarks/adafuse_online_speed.py [--depth 18] [--size 224] [--frames 8] [--rounds 5]
        [--threads N] [--work DIR] [--tsm]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ZZ_TSN = ("python -u main_gate.py something RGB --arch batenet{depth} --num_segments {frames} --npb --ada_reso_skip "
          "--init_tau 0.67 --gsmx --gate_history --hidden_quota 196608 --shared_policy_net --gbn --grelu "
          "--reso_list {size}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=18, choices=(18, 50))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--tsm", action="store_true", help="also time the AdaFuse-TSM twin's online graphs")
    a = ap.parse_args()

    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.adafuse_config import from_official_text
    from atfr.models.adafuse_weights import randomize
    from atfr.models.checkpoint import LoadedModel
    from atfr.models.zoo import build_model
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner
    from atfr.runtime.adafuse_gflops import policy_gflops

    work = a.work or Path(tempfile.mkdtemp(prefix="adafuse-speed-"))
    cfg = from_official_text(ZZ_TSN.format(depth=a.depth, frames=a.frames, size=a.size))
    model = build_model(cfg).eval()
    randomize(model, a.depth)
    out = work / f"adafuse_tsn_r{a.depth}_{a.size}"
    t0 = time.perf_counter()
    export_model(LoadedModel(model, cfg, [], "atfr", {"source": str(out)}), out, ExportOptions(force=True))
    print(f"exported {out} in {time.perf_counter() - t0:.1f} s")

    runners = {"online dense": AdaFuseOnlineRunner.load(out, threads=a.threads, graph="online"),
               "online gathered": AdaFuseOnlineRunner.load(out, threads=a.threads, graph="online_gathered")}
    if a.tsm:
        tsm_cfg = from_official_text(ZZ_TSN.format(depth=a.depth, frames=a.frames, size=a.size) + " --shift")
        tsm = build_model(tsm_cfg).eval()
        tsm.load_state_dict(model.state_dict())
        tsm_out = work / f"adafuse_tsm_r{a.depth}_{a.size}"
        export_model(LoadedModel(tsm, tsm_cfg, [], "atfr", {"source": str(tsm_out)}), tsm_out, ExportOptions(force=True))
        runners["TSM online dense"] = AdaFuseOnlineRunner.load(tsm_out, threads=a.threads, graph="online")
        runners["TSM online gathered"] = AdaFuseOnlineRunner.load(tsm_out, threads=a.threads, graph="online_gathered")
    clip_graph = AdaFuseClipRunner.load(out, threads=a.threads)
    x = torch.randn((1, 3, a.frames, a.size, a.size), generator=torch.Generator().manual_seed(0)).numpy()
    times: dict[str, list[float]] = {k: [] for k in runners} | {"clip graph (per frame)": []}
    policy = None
    for _ in range(a.rounds):
        for name, runner in runners.items():
            runner.reset(1)
            for t in range(a.frames):
                s = time.perf_counter()
                _, pol = runner.step(x[:, :, t])
                times[name].append((time.perf_counter() - s) * 1e3)
        s = time.perf_counter()
        res, extra = clip_graph.infer(x)
        times["clip graph (per frame)"].append((time.perf_counter() - s) * 1e3 / a.frames)
        policy = extra["policy"]
    base = clip_graph.base_per_frame
    counted = policy_gflops([np.asarray(p) for p in policy], base, clip_graph.convs, official=False) / a.frames
    fr = extra["policy_fractions"]
    print(f"AdaFuse-TSN-R{a.depth}, {a.frames} x {a.size}^2, ORT threads {a.threads or 'default'}, "
          f"{a.rounds} rounds; policy skip {fr['skip']:.1%} reuse {fr['reuse']:.1%} keep {fr['keep']:.1%}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  {k:24s} {v:8.2f} ms/frame")
    saved_counted = 1 - counted / base
    saved_real = 1 - med["online gathered"] / med["online dense"]
    print(f"  GFLOPs/frame: dense {base:.3f}, Eq. 5 under this policy {counted:.3f} (counted saving {saved_counted:.1%})")
    print(f"  realized saving of gathered vs dense online: {saved_real:.1%}; realized/counted {saved_real / saved_counted:.2f}")


if __name__ == "__main__":
    main()
