"""AdaFuse: the deterministic hard policy against the official evaluation's Gumbel sampling, on the
trained demo model (atfr/assets/demo_adafuse.pt) and its held-out split.

The official code samples ``F.gumbel_softmax(..., hard=True)`` even in eval mode, so one clip can get
other masks and another prediction run to run. atfr deploys the noise-free hard policy (the argmax of
the policy logits). This script measures what that choice changes: accuracy, top-1 agreement with the
hard policy, mask agreement and Eq. 5 GFLOPs, over several seeded sampled runs. A hard Gumbel sample
is argmax(log p + g), whatever the temperature, so tau plays no part here.

    python benchmarks/adafuse_policy_sampling.py [--runs 5] [--per-class 40] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from atfr.demo import synth
from atfr.demo.train import CROP, HELD_OUT_SPLIT, NUM_FRAMES, preprocess
from atfr.demo.train_adafuse import eq5_gflops, evaluate_adafuse, gumbel_forward, sample_frames
from atfr.models.adafuse_flops import AdaFuseCounter
from atfr.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def sampled_run(model, clips: np.ndarray, seed: int, batch: int = 32):
    """One official-style evaluation: Gumbel-sampled one-hot masks. -> (pred [N], masks per block
    [N,T,C] as 0 skip / 1 reuse / 2 keep, Eq. 5 GFLOPs [N])."""
    counter = AdaFuseCounter(model)
    gen = torch.Generator().manual_seed(seed)
    preds, masks, g5 = [], [], []
    for i in range(0, len(clips), batch):
        logits, m = gumbel_forward(model, preprocess(sample_frames(clips[i:i + batch])), 1.0, gen)
        preds.append(logits.argmax(1).numpy())
        masks.append([x.argmax(-1).numpy() for x in m])
        g5.append(eq5_gflops(m, counter.base_per_frame, counter.convs).numpy())
    return (np.concatenate(preds), [np.concatenate(b) for b in zip(*masks)], np.concatenate(g5))


def hard_masks(model, clips: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    out = [[p.numpy() for p in model.run(preprocess(sample_frames(clips[i:i + batch]))).policy]
           for i in range(0, len(clips), batch)]
    return [np.concatenate(b) for b in zip(*out)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "atfr" / "assets" / "demo_adafuse.pt"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="the held-out split's seed (the demo's)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_checkpoint(a.checkpoint).model.eval()
    x, y = synth.make_dataset(a.per_class, a.seed, NUM_FRAMES, CROP, split=HELD_OUT_SPLIT)
    t0 = time.perf_counter()
    with torch.no_grad():
        hard = evaluate_adafuse(model, x, y)
        hm = hard_masks(model, x)
    print(f"{len(y)} held-out clips ({a.per_class} per class, split {HELD_OUT_SPLIT}), {a.checkpoint}")
    print(f"{'policy':<16}{'accuracy':>9}{'top-1 = hard':>13}{'masks = hard':>13}{'GFLOPs/clip':>12}")
    print(f"{'hard (atfr)':<16}{hard['accuracy']:>9.3f}{1.0:>13.3f}{1.0:>13.3f}{hard['eq5'].mean():>12.4f}")
    accs = []
    for r in range(a.runs):
        pred, masks, g5 = sampled_run(model, x, seed=1000 + r)
        agree = np.mean(np.concatenate([(m == h).ravel() for m, h in zip(masks, hm)]))
        accs.append(float((pred == y).mean()))
        print(f"{f'gumbel seed {1000 + r}':<16}{accs[-1]:>9.3f}{(pred == hard['pred']).mean():>13.3f}"
              f"{agree:>13.3f}{g5.mean():>12.4f}")
    print(f"sampled accuracy {np.mean(accs):.3f} +- {np.std(accs):.3f} (mean +- sd over {a.runs} runs) vs hard "
          f"{hard['accuracy']:.3f}; {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
