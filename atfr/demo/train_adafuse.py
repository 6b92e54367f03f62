"""Train the built-in AdaFuse demo model: a thin AdaFuse-TSN-R18 on :mod:`atfr.demo.synth`.

The data, input and preprocessing are the ATFR demo's (:mod:`atfr.demo.train`): 8 synthetic
motion classes, 16 frames x 64 px, a fresh training set per epoch (split ``100 + epoch``),
held-out split 1, scalar mean/std 0.45/0.225; the model reads every 2nd frame of the 16 (see
``FRAMES``). The model is AdaFuse-TSN on ResNet-18 with stem width 16 (stages 16/32/64/128
channels) and a policy net on every residual block (per-block FCs, hidden 32, BN + ReLU between
them): 775k parameters (``COMPACT_CONFIG``).

Loss (the paper's Eq. 6): cross-entropy of the clip prediction (mean of the frame logits) plus
``lam`` times the clip's Eq. 5 FLOPs, divided by the static TSN's so that ``lam`` is a fraction
(at ``lam`` = 0.1, skipping every channel of every gated conv would lower the loss by at most
~0.1 x their share of the FLOPs). Training samples the policy with Gumbel-softmax (tau 0.67,
hard one-hot forward, soft gradients; noise from a seeded generator); evaluation and the shipped
model use the deterministic hard policy (first maximum, models/adafuse_blocks.first_max3).

Eq. 5 in the loss, per gated block and frame t, with one-hot (straight-through) masks k/r/s:
conv1 computes a channel when it is kept at t or reused at t+1 (1 - (1-k_t)(1-r_{t+1}), nothing
reuses after the last frame) and conv2 reads the channels not skipped (1 - s_t). The FLOPs are
the official thop convention (models/adafuse_flops.py), as the reported ``eq5`` figure.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from atfr.models.adafuse import AdaFuseTSN
from atfr.models.adafuse_blocks import KEEP, REUSE, SKIP, previous_frame
from atfr.models.adafuse_flops import AdaFuseCounter, static_report
from atfr.models.config import from_compact
from atfr.models.zoo import build_model

from . import synth
from .train import CROP, HELD_OUT_SPLIT, NUM_FRAMES, EpochData, preprocess

# 8 frames at stride 2 from the ATFR demo's 16-frame window: the same clips of a video (T x rate =
# 16 frames), half the cost (TSN samples sparse frames, too). Training and held-out clips are
# generated at 16 frames exactly as for the ATFR model and sampled with ``sample_frames``.
FRAMES, RATE = NUM_FRAMES // 2, 2

COMPACT_CONFIG: dict[str, Any] = {
    "arch": "adafuse",
    "depth": 18,
    "num_classes": len(synth.CLASSES),
    "num_frames": FRAMES,
    "sampling_rate": RATE,
    "crop_size": CROP,
    "short_side": CROP,
    "target_fps": 30,
    "mean": [0.45, 0.45, 0.45],  # the ATFR demo's transform (atfr.demo.train.preprocess)
    "std": [0.225, 0.225, 0.225],
    "dropout": 0.0,
    "adafuse": {"base_width": 16, "gate_history": True, "gate_hidden_dim": 32,
                "gate_bn_between_fcs": True, "gate_relu_between_fcs": True},
}

# The recipe of the committed model (atfr/assets/demo_adafuse.pt).
RECIPE: dict[str, Any] = {"epochs": 24, "n_train_per_class": 100, "n_val_per_class": 40, "batch_size": 16,
                          "lr": 3e-3, "lam": 0.1, "tau": 0.67, "policy_bias": (0.0, 1.0, 2.0)}
SUBSET_PER_CLASS = 4  # the held-out subset the tests re-run (the first 4 clips of every class)


def sample_frames(clips: np.ndarray) -> np.ndarray:
    """uint8 [N,16,H,W,3] -> [N,8,H,W,3]: every RATE-th frame, as the runtime samples a window."""
    return clips[:, :FRAMES * RATE:RATE]


def adafuse_demo_config() -> dict[str, Any]:
    return from_compact(dict(COMPACT_CONFIG))


def gumbel_hard(log_probs: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """One-hot Gumbel-softmax sample over the last axis: hard forward, soft (tau) gradients."""
    u = torch.rand(log_probs.shape, generator=gen).clamp_(1e-10, 1.0 - 1e-7)
    soft = F.softmax((log_probs - torch.log(-torch.log(u))) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def gumbel_forward(model: AdaFuseTSN, x: torch.Tensor, tau: float,
                   gen: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Training forward of AdaFuse-TSN: the model's own layers with Gumbel-sampled one-hot masks
    instead of the hard policy. x [N,3,T,H,W] -> (clip logits [N,K], masks [N,T,C,3] per gated block)."""
    n, c, t, h, w = x.shape
    bm = model.base_model
    z = bm.maxpool(bm.relu(bm.bn1(bm.conv1(x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)))))
    masks = []
    for _, b in bm.blocks():
        y = b.relu(b.bn1(b.conv1(z)))
        if b.policy_net is not None:
            m = gumbel_hard(b.policy_net.log_probs(z, t), tau, gen)  # [NT, C, 3]
            y = y * m[..., KEEP, None, None] + previous_frame(y, t) * m[..., REUSE, None, None]
            masks.append(m.reshape(n, t, -1, 3))
        z = b._tail(y, z, z)
    feat = bm.fc(torch.flatten(bm.avgpool(z), 1))
    return model.new_fc(feat).reshape(n, t, -1).mean(dim=1), masks


def eq5_gflops(masks: list[torch.Tensor], base_per_frame: float, convs: list[tuple[int, int]]) -> torch.Tensor:
    """Differentiable Eq. 5 GFLOPs per clip [N] from one-hot masks [N,T,C,3] (see the docstring)."""
    per_frame = torch.full(masks[0].shape[:2], float(base_per_frame))
    for m, (up, down) in zip(masks, convs):
        keep, reuse, skip = m[..., KEEP], m[..., REUSE], m[..., SKIP]
        reuse_next = torch.cat([reuse[:, 1:], torch.zeros_like(reuse[:, :1])], dim=1)
        saved1 = ((1 - keep) * (1 - reuse_next)).mean(dim=2)
        per_frame = per_frame - saved1 * up / 1e9 - skip.mean(dim=2) * down / 1e9
    return per_frame.sum(dim=1)


@torch.no_grad()
def evaluate_adafuse(model: AdaFuseTSN, clips: np.ndarray, labels: np.ndarray, batch: int = 32) -> dict[str, Any]:
    """Deterministic hard policy (eval mode): predictions, per-clip fractions and Eq. 5 GFLOPs."""
    from atfr.runtime.adafuse_gflops import policy_gflops

    was_training = model.training
    model.eval()
    counter = AdaFuseCounter(model)
    preds, fr, g5 = [], [], []
    try:
        for i in range(0, len(clips), batch):
            out = model.run(preprocess(sample_frames(clips[i:i + batch])))
            preds.append(out.logits.argmax(1).numpy())
            pol = [p.numpy() for p in out.policy]
            for k in range(len(out.logits)):
                flat = np.concatenate([p[k].ravel() for p in pol])
                fr.append([np.mean(flat == a) for a in (SKIP, REUSE, KEEP)])
                g5.append(policy_gflops([p[k] for p in pol], counter.base_per_frame, counter.convs, official=False))
    finally:
        model.train(was_training)
    pred, labels = np.concatenate(preds), np.asarray(labels)
    return {"accuracy": float((pred == labels).mean()), "pred": pred, "fractions": np.asarray(fr),
            "eq5": np.asarray(g5)}


@dataclass
class AdaFuseTrainResult:
    model: AdaFuseTSN
    cfg: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def train_adafuse_demo(seed: int = 0, epochs: int = 24, n_train_per_class: int = 100, n_val_per_class: int = 40,
                       batch_size: int = 16, lr: float = 3e-3, lam: float = 0.1, tau: float = 0.67,
                       threads: int = 2, log: Callable[[str], None] = print, command: str | None = None,
                       max_steps: int | None = None,
                       policy_bias: tuple[float, float, float] | None = None) -> AdaFuseTrainResult:
    """Train the AdaFuse demo model from scratch (deterministic in ``seed`` and ``threads``).

    ``max_steps`` stops after that many optimizer steps (the determinism test); the held-out
    evaluation and statistics are then skipped. ``policy_bias`` initialises the bias of every policy
    net's last FC to these (skip, reuse, keep) logits, e.g. (0, 1, 2): 9/24/67% at the start instead of
    a uniform third each, so that the young network is not a third zeros in every block."""
    t0 = time.time()
    torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(seed)
    cfg = adafuse_demo_config()
    model = build_model(cfg)
    if policy_bias is not None:
        with torch.no_grad():
            for _, b in model.gated_blocks():
                b.policy_net.gate_fc1.bias.view(-1, 3).copy_(torch.tensor(policy_bias, dtype=torch.float32))
    counter = AdaFuseCounter(model)
    static = static_report(model)
    static_clip = static["static_official"]
    nparam = sum(p.numel() for p in model.parameters())
    log(f"model: AdaFuse-TSN-R18, stem width {COMPACT_CONFIG['adafuse']['base_width']}, "
        f"{len(model.gated_blocks())} gated blocks, {nparam} parameters, input 3x{FRAMES}x{CROP}x{CROP} "
        f"(every {RATE}nd of {NUM_FRAMES} frames); "
        f"static TSN {static['static_official']:.4f} GFLOPs/clip (official convention)")
    steps_per_epoch = int(np.ceil(n_train_per_class * len(synth.CLASSES) / batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps_per_epoch * epochs, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    gen = torch.Generator().manual_seed(seed)  # batch order
    noise = torch.Generator().manual_seed(seed + 1)  # Gumbel noise
    data = EpochData(n_train_per_class, seed, epochs, prefetch=False)
    step = 0
    model.train()
    try:
        for ep in range(epochs):
            te = time.time()
            x_np, y_np = data.get(ep)
            order = torch.randperm(len(y_np), generator=gen).numpy()
            tot, correct, seen, frac = 0.0, 0, 0, np.zeros(3)
            for s in range(steps_per_epoch):
                idx = order[s * batch_size:(s + 1) * batch_size]
                y = torch.from_numpy(y_np[idx])
                logits, masks = gumbel_forward(model, preprocess(sample_frames(x_np[idx])), tau, noise)
                flops = eq5_gflops(masks, counter.base_per_frame, counter.convs) / static_clip
                loss = loss_fn(logits, y) + lam * flops.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                tot += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
                frac += torch.cat([m.detach().reshape(-1, 3) for m in masks]).mean(0).numpy() * len(idx)
                if max_steps is not None and step >= max_steps:
                    break
            f = frac / seen
            log(f"epoch {ep + 1}/{epochs}: loss {tot / seen:.3f} train acc {correct / seen:.3f} sampled "
                f"skip/reuse/keep {f[0]:.2f}/{f[1]:.2f}/{f[2]:.2f} ({time.time() - te:.0f}s)")
            sys.stdout.flush()
            if max_steps is not None and step >= max_steps:
                break
    finally:
        data.close()
    model.eval()
    meta: dict[str, Any] = {"demo": True, "family": "adafuse", "seed": int(seed), "epochs": int(epochs),
                            "steps": step, "lr": lr, "lambda": lam,
                            "policy_bias": list(policy_bias) if policy_bias is not None else None, "gumbel_tau": tau, "batch_size": batch_size,
                            "train_clips_per_class_per_epoch": int(n_train_per_class),
                            "compact_config": COMPACT_CONFIG, "torch": str(torch.__version__)}
    if max_steps is None:
        meta.update(heldout_stats(model, seed, n_val_per_class, static["static_official"], log))
    meta["train_wall_s"] = round(time.time() - t0, 1)
    log(f"training took {meta['train_wall_s']:.0f}s wall")
    meta["command"] = command or "atfr train-demo --family adafuse " + " ".join(
        shlex.quote(a) for a in ["--seed", str(seed), "--epochs", str(epochs)])
    return AdaFuseTrainResult(model, cfg, meta)


def heldout_stats(model: AdaFuseTSN, seed: int, n_val_per_class: int, static_gflops: float,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Held-out accuracy, skip/reuse/keep fractions and Eq. 5 GFLOPs saved vs the static TSN, per class."""
    x, y = synth.make_dataset(n_val_per_class, seed, NUM_FRAMES, CROP, split=HELD_OUT_SPLIT)
    ev = evaluate_adafuse(model, x, y)
    k = min(SUBSET_PER_CLASS, int(n_val_per_class))
    sub = np.concatenate([np.flatnonzero(y == c)[:k] for c in range(len(synth.CLASSES))])
    log(f"held-out accuracy {ev['accuracy']:.4f} on {len(y)} clips ({n_val_per_class} per class, split "
        f"{HELD_OUT_SPLIT}, seed {seed}); static TSN {static_gflops:.4f} GFLOPs/clip")
    log(f"{'class':<18}{'acc':>6}{'skip':>7}{'reuse':>7}{'keep':>7}{'GFLOPs':>9}{'saved':>8}")
    per_class = {}
    for c, name in enumerate(synth.CLASSES):
        sel = y == c
        acc = float((ev["pred"][sel] == c).mean())
        f = ev["fractions"][sel].mean(0)
        g = float(ev["eq5"][sel].mean())
        per_class[name] = {"accuracy": round(acc, 4), "skip": round(float(f[0]), 4), "reuse": round(float(f[1]), 4),
                           "keep": round(float(f[2]), 4), "gflops_eq5": round(g, 5),
                           "gflops_saved_vs_static": round(1 - g / static_gflops, 4)}
        log(f"{name:<18}{acc:>6.3f}{f[0]:>7.3f}{f[1]:>7.3f}{f[2]:>7.3f}{g:>9.4f}{1 - g / static_gflops:>8.1%}")
    f, g = ev["fractions"].mean(0), float(ev["eq5"].mean())
    log(f"{'all':<18}{ev['accuracy']:>6.3f}{f[0]:>7.3f}{f[1]:>7.3f}{f[2]:>7.3f}{g:>9.4f}{1 - g / static_gflops:>8.1%}")
    return {"heldout_split": HELD_OUT_SPLIT, "heldout_clips_per_class": int(n_val_per_class),
            "heldout_accuracy": round(ev["accuracy"], 4),
            "heldout_subset": {"per_class": k, "clips": int(len(sub)),
                               "correct": int((ev["pred"][sub] == y[sub]).sum())},
            "fractions": {"skip": round(float(f[0]), 4), "reuse": round(float(f[1]), 4), "keep": round(float(f[2]), 4)},
            "gflops_eq5": round(g, 5), "gflops_static_tsn": round(static_gflops, 5),
            "gflops_saved_vs_static": round(1 - g / static_gflops, 4),
            "gflops_convention": "official thop convention (models/adafuse_flops.py), per clip, Eq. 5",
            "per_class": per_class}
