"""Train the built-in demo model: a 3DResNet-18 with SGS at res2 on :mod:`atfr.demo.synth`.

The architecture is thin before SGS and wide after it (stem 2, res2 8 channels; res3-res5 64,
128, 256). ATFR saves only after SGS (a clip costs front + B'/B x back), so the back must carry
most of the GFLOPs for few bins to be worth anything: here 61% of the static model's 0.064
GFLOPs. The first demo model (stem 4, res2 16, res3-res5 32/64/128) spent 83% in the front,
mostly the 5x7x7 stem convolution at 32x32, and saved 8-12%.

Everything is derived from one seed: ``torch.manual_seed(seed)`` for the weights and the batch
order, and :func:`atfr.demo.synth.make_dataset` for the clips (a fresh training set per epoch,
split ``100 + epoch``; the held-out set is split 1 and never trained on).

Three phases: the convolutions first learn motion with SGS bypassed (a static 3D ResNet over all
T frames); then the whole model trains with the SGS layer in the loop (it is differentiable; the
embedding net learns here) with the ``delta_normalized`` kernel, where a bin is the plain mean of
its frames, so the back sees features on the scale it learned in the first phase; finally a short
phase switches to the official default ``linear`` kernel, which the shipped model uses. Both SGS
phases use ``batch_independent`` SGS, i.e. every clip keeps its own B' as it would at batch size 1
and at inference. (The official zero padding to the batch's largest B' lets padded bins reach the
back's BN and average pool; with this small model and budget that stalled training at ~40%.)
BN statistics stay frozen after the first phase (the back runs per group of equal B', too small
a batch for statistics; re-estimating them on SGS outputs afterwards lowered accuracy).

Why the linear kernel at the end: with the delta kernels the farthest frame sits exactly on the
last bin's edge, so whether that bin is active depends on the last bit of max Δ (official
behaviour; the golden README's 'ulp-fragile' delta cases). Two correct implementations (PyTorch
and ONNX Runtime) then disagree on B' by one on ~15% of clips. The linear kernels keep that bin
through the fp32 ghost weight 2^-23, so B' survives export. Going straight from the static phase
to a linear kernel did not train in this budget (~0.58 held-out after 28 epochs). From the delta
model, plain fine-tuning with the linear kernel swung between 0.81 and 0.86 held-out (lr 1e-3, 12
epochs); distilling from the delta model (KL weight 0.7, T=2) at lr 5e-4 climbed to ~0.90, and
the last phase keeps its best epoch on a validation split (split 3).

Preprocessing is the model's test transform, and the clips are generated at the crop size, so
short-side resize and centre crop are identities: uint8 RGB -> /255 -> (x - mean) / std ->
[3, T, H, W].
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from atfr.models.base import VideoNet
from atfr.models.config import from_compact
from atfr.models.zoo import build_model

from . import synth

NUM_FRAMES = 16
CROP = 64
HELD_OUT_SPLIT = 1
VALIDATION_SPLIT = 3  # model selection in the last phase; split 2 makes the demo videos
TRAIN_SPLIT0 = 100

COMPACT_CONFIG: dict[str, Any] = {
    "arch": "3dresnet",
    "depth": 18,
    # Thin before SGS, wide after it, so the part after SGS carries ~61% of the static GFLOPs
    # and every bin SGS drops saves 1/16 of that (see the docstring).
    "width_per_group_slow": 16,  # res3..res5: 64, 128, 256 channels
    "width_per_group_fast": 2,  # stem 2, res2 8 channels (SGS reads 8 channels)
    "num_frames": NUM_FRAMES,
    "sampling_rate": 1,
    "target_fps": 30,
    "crop_size": CROP,
    "short_side": CROP,
    "sgs_stage": "res2",
    "latent_dim": 8,
    "num_bins": -1,
    "distance": "L2",
    "kernel": "delta_normalized",  # a bin is the plain mean of its frames; see the docstring
    "dropout": 0.0,
    "num_classes": len(synth.CLASSES),
}


def demo_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo model's config (official keys); ``overrides`` patch the compact config."""
    return from_compact({**COMPACT_CONFIG, **(overrides or {})})


def preprocess(clips: np.ndarray, mean: float = 0.45, std: float = 0.225) -> torch.Tensor:
    """uint8 [N,T,H,W,3] RGB -> float32 [N,3,T,H,W], the model's test transform."""
    x = torch.from_numpy(np.ascontiguousarray(clips)).float().div_(255.0)
    x = (x - mean) / std
    return x.permute(0, 4, 1, 2, 3).contiguous()


@torch.no_grad()
def evaluate(model: VideoNet, clips: np.ndarray, labels: np.ndarray, batch: int = 32) -> dict[str, Any]:
    """Accuracy and per-sample B' with batch-independent SGS (eval mode)."""
    was_training, was_bi = model.training, model.batch_independent
    model.eval()
    model.batch_independent = True
    preds, bps = [], []
    try:
        for i in range(0, len(clips), batch):
            logits, k = model.forward_with_bprime([preprocess(clips[i:i + batch])])
            preds.append(logits.argmax(1).numpy())
            bps.append(k[:, 0].numpy() if k.shape[1] else np.full(len(logits), model.input_spec.num_frames))
    finally:
        model.train(was_training)
        model.batch_independent = was_bi
    pred = np.concatenate(preds)
    bprime = np.concatenate(bps)
    labels = np.asarray(labels)
    ncls = len(synth.CLASSES)
    per_class_acc = [float((pred[labels == c] == c).mean()) if (labels == c).any() else float("nan")
                     for c in range(ncls)]
    per_class_bp = [float(bprime[labels == c].mean()) if (labels == c).any() else float("nan")
                    for c in range(ncls)]
    return {"accuracy": float((pred == labels).mean()), "pred": pred, "bprime": bprime,
            "per_class_accuracy": per_class_acc, "per_class_bprime": per_class_bp}


def _count_macs(module: nn.Module, fn: Callable[[], Any]) -> int:
    """Multiply-adds of Conv3d and Linear layers while fn() runs (batch 1)."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv3d):
            k = int(np.prod(m.kernel_size)) * (m.in_channels // m.groups)
            total[0] += out.numel() * k
        elif isinstance(m, nn.Linear):
            total[0] += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv3d, nn.Linear))]
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in hs:
            h.remove()
    return total[0]


def gflops_table(model: VideoNet) -> dict[str, Any]:
    """GFLOPs (1 multiply-add = 1 FLOP, the fvcore convention) of front+SGS and of back per B'.

    The back's cost is linear in B' (every layer after SGS keeps B' frames), so the saving of
    a clip vs the static model (B' = B) is ``back(B) - back(B')``.
    """
    was_training = model.training
    model.eval()
    spec = model.input_spec
    x = torch.zeros(1, 3, spec.num_frames, spec.crop_size, spec.crop_size)
    try:
        front = _count_macs(model, lambda: model.front_with_distances([x]))
        with torch.no_grad():
            feats = model.front([x])
        c, t, h, w = feats[0].shape[1:]
        back = {b: _count_macs(model, lambda b=b: model.back([torch.zeros(1, c, b, h, w)]))
                for b in range(1, t + 1)}
    finally:
        model.train(was_training)
    return {"front": front / 1e9, "back": {b: v / 1e9 for b, v in back.items()}, "bins": int(t)}


def clip_gflops(table: dict[str, Any], bprime: float) -> float:
    """GFLOPs of one clip with a (possibly fractional, i.e. mean) B'."""
    lo = int(np.floor(bprime))
    per_bin = table["back"][2] - table["back"][1] if table["bins"] > 1 else table["back"][1]
    base = table["back"][max(lo, 1)]
    return table["front"] + base + per_bin * (bprime - max(lo, 1))


# The recipe of the committed demo model (atfr/assets/demo_atfr.pt): 61 epochs x 800 fresh clips,
# the first 10 with SGS bypassed, 35 with the delta_normalized kernel, the last 16 with linear
# (distilled from the delta model, best epoch on a validation split).
RECIPE: dict[str, Any] = {"epochs": 61, "n_train_per_class": 100, "n_val_per_class": 40,
                          "batch_size": 16, "lr": 3e-3, "warmup_epochs": 10,
                          "final_kernel": "linear", "final_epochs": 16, "final_lr": 5e-4, "final_distill": 0.7}


def _switch_kernel(model: VideoNet, cfg: dict[str, Any], kernel: str) -> None:
    """Change the SGS kernel in place (model layers and config); the weights are kernel-agnostic."""
    for ts in model.ts_layer_map().values():
        ts.spec = dataclasses.replace(ts.spec, kernel=kernel)
    cfg["TEMPORAL_SAMPLING"]["KERNEL_TYPE"] = kernel


class EpochData:
    """The training clips of each epoch, optionally generated one epoch ahead in a worker process.

    Generating 800 clips takes ~7 s of numpy/OpenCV, a fifth of an epoch. The arrays are the same
    pure function of (seed, split) either way, so prefetching cannot change the trained model.
    It only pays with a core the trainer's torch threads do not use: on 2 cores with 2 torch
    threads, the worker pre-empted torch's OpenMP threads and the SGS-phase epochs took 43-51 s
    instead of 27-40 s (generation included), so :func:`train_demo` prefetches only when the
    usable cores outnumber ``threads``. ``spawn`` because forking a process whose torch thread
    pool is running is unsafe.
    """

    def __init__(self, n_per_class: int, seed: int, epochs: int, prefetch: bool = True):
        self._args = (int(n_per_class), int(seed))
        self._epochs = int(epochs)
        self._pool = None
        self._next: Any = None
        if prefetch and epochs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            self._next = self._pool.submit(synth.make_dataset_in_worker, *self._args, NUM_FRAMES, CROP,
                                           TRAIN_SPLIT0)

    def get(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pool is None:
            return synth.make_dataset(*self._args, NUM_FRAMES, CROP, split=TRAIN_SPLIT0 + epoch)
        data = self._next.result()
        if epoch + 1 < self._epochs:
            self._next = self._pool.submit(synth.make_dataset_in_worker, *self._args, NUM_FRAMES, CROP,
                                           TRAIN_SPLIT0 + epoch + 1)
        return data

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@dataclass
class TrainResult:
    model: VideoNet
    cfg: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def train_demo(seed: int = 0, epochs: int = 28, n_train_per_class: int = 100, n_val_per_class: int = 40,
               batch_size: int = 16, lr: float = 3e-3, warmup_epochs: int = 10, threads: int = 2,
               log: Callable[[str], None] = print, command: str | None = None,
               overrides: dict[str, Any] | None = None, sgs_lr_scale: float = 2 / 3,
               final_kernel: str | None = None, final_epochs: int = 0, final_lr: float = 5e-4,
               final_distill: float = 0.0, distill_temperature: float = 2.0,
               prefetch: bool | None = None) -> TrainResult:
    """Train the demo model from scratch; returns it (eval mode) with its held-out stats.

    Curriculum: the first ``warmup_epochs`` epochs train the convolutions with SGS bypassed
    (front -> back over all T frames, a static 3D ResNet); the remaining epochs train the whole
    model with SGS in the loop (embedding net included), as it runs at inference. With
    ``final_kernel``, the last ``final_epochs`` epochs switch the SGS kernel to it (fresh AdamW,
    one cosine cycle at ``final_lr``); the returned model and config use that kernel. With
    ``final_distill`` > 0 that phase's loss mixes in the KL divergence to the frozen model from
    before the switch (weight ``final_distill``, temperature ``distill_temperature``), and the
    epoch with the best accuracy on a validation split (never the held-out split) is kept.
    ``prefetch`` generates each epoch's clips in a worker process during the previous epoch
    (the same clips; only the wall time changes); None: only when a core is left over for it.
    """
    t0 = time.time()
    torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    cfg = demo_config(overrides)
    model = build_model(cfg)
    final_epochs = int(final_epochs) if final_kernel else 0
    if final_epochs and final_epochs > epochs - warmup_epochs:
        raise ValueError(f"final_epochs {final_epochs} leaves no epochs for the first SGS phase")
    final_start = epochs - final_epochs
    nparam = sum(p.numel() for p in model.parameters())
    log(f"model: 3dresnet-18 (thin front, wide back), SGS at res2 (L={COMPACT_CONFIG['latent_dim']}), "
        f"{nparam} parameters, input 3x{NUM_FRAMES}x{CROP}x{CROP}, {len(synth.CLASSES)} classes")

    val_x, val_y = synth.make_dataset(n_val_per_class, seed, NUM_FRAMES, CROP, split=HELD_OUT_SPLIT)
    sel_x, sel_y = (synth.make_dataset(n_val_per_class, seed, NUM_FRAMES, CROP, split=VALIDATION_SPLIT)
                    if final_epochs else (None, None))
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    teacher: VideoNet | None = None
    steps_per_epoch = int(np.ceil(n_train_per_class * len(synth.CLASSES) / batch_size))
    total_steps = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm_steps = steps_per_epoch * min(warmup_epochs, epochs)

    def schedule(n_steps: int, peak: float):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=max(n_steps, 1), pct_start=0.05)

    # one cosine cycle per phase: the SGS phase restarts at a lower peak to adapt the back to bins
    sched = schedule(warm_steps, lr) if warm_steps else schedule(total_steps, lr)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    gen = torch.Generator().manual_seed(seed)
    if prefetch is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        prefetch = cores > int(threads)
    data = EpochData(n_train_per_class, seed, epochs, prefetch)
    try:
        for ep in range(epochs):
            te = time.time()
            x_np, y_np = data.get(ep)
            tgen = time.time() - te  # with prefetch: the wait for the worker
            order = torch.randperm(len(y_np), generator=gen).numpy()
            if ep < warmup_epochs:
                model.train()
                model.batch_independent = False
            else:
                if ep == warmup_epochs and warm_steps:
                    sched = schedule(steps_per_epoch * (final_start - warmup_epochs), lr * sgs_lr_scale)
                if final_epochs and ep == final_start:
                    if final_distill > 0:
                        # The model trained with the first SGS kernel teaches the switched one: the abrupt
                        # change of bin weights otherwise costs several points that 16 epochs do not win back.
                        teacher = copy.deepcopy(model).eval()
                        for p_ in teacher.parameters():
                            p_.requires_grad_(False)
                    _switch_kernel(model, cfg, str(final_kernel))
                    opt = torch.optim.AdamW(model.parameters(), lr=final_lr, weight_decay=1e-4)
                    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=final_lr, pct_start=0.1,
                                                                total_steps=steps_per_epoch * final_epochs)
                # SGS phase: every clip keeps its own B' (no zero-padded bins reaching the back's BN
                # and average pool, exactly as at inference) and BN statistics are frozen (the back
                # runs per group of equal B', too small a batch for BN statistics).
                model.eval()
                model.batch_independent = True
            tot_loss, correct, seen = 0.0, 0, 0
            for s in range(steps_per_epoch):
                idx = order[s * batch_size:(s + 1) * batch_size]
                x = preprocess(x_np[idx])
                y = torch.from_numpy(y_np[idx])
                if ep < warmup_epochs:  # SGS bypassed: the back sees all T frames
                    logits = model.back(model.front([x]))
                else:
                    logits, _ = model.forward_with_bprime([x])
                loss = loss_fn(logits, y)
                if teacher is not None and ep >= final_start:
                    with torch.no_grad():
                        t_logits, _ = teacher.forward_with_bprime([x])
                    tt = distill_temperature
                    kd = nn.functional.kl_div(nn.functional.log_softmax(logits / tt, 1),
                                              nn.functional.softmax(t_logits / tt, 1), reduction="batchmean") * tt * tt
                    loss = (1 - final_distill) * loss + final_distill * kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot_loss += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
            phase = "no SGS" if ep < warmup_epochs else f"SGS {model.sgs_specs[0].kernel}"
            msg = (f"epoch {ep + 1}/{epochs} ({phase}): loss {tot_loss / seen:.3f} train acc {correct / seen:.3f}")
            if ep >= final_start and final_epochs:
                # Model selection on a validation split (never the held-out one): the linear phase
                # swings by several points from epoch to epoch at this model size.
                sel = evaluate(model, sel_x, sel_y)["accuracy"]
                msg += f" validation acc {sel:.3f}"
                if best is None or sel >= best[0]:
                    best = (sel, ep + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if (ep + 1) % 8 == 0 or ep + 1 == epochs:  # logging only; 320 clips cost ~5 s
                ev = evaluate(model, val_x, val_y)
                msg += f" held-out acc {ev['accuracy']:.3f} mean B' {ev['bprime'].mean():.2f}"
            log(f"{msg} ({time.time() - te:.0f}s, data {tgen:.1f}s)")
            sys.stdout.flush()

    finally:
        data.close()

    if best is not None:
        model.load_state_dict(best[2])
        log(f"kept epoch {best[1]} of the {final_kernel} phase (validation accuracy {best[0]:.4f}, split "
            f"{VALIDATION_SPLIT})")
    model.eval()
    ev = evaluate(model, val_x, val_y)
    table = gflops_table(model)
    static = clip_gflops(table, table["bins"])
    per_class = {}
    log(f"held-out accuracy {ev['accuracy']:.4f} on {len(val_y)} clips ({n_val_per_class} per class, split "
        f"{HELD_OUT_SPLIT}, seed {seed})")
    log(f"GFLOPs per clip: static (B'=B={table['bins']}) {static:.4f}, front {table['front']:.4f}, "
        f"back per bin {table['back'][1]:.4f}")
    log(f"{'class':<18}{'acc':>6}{'mean B':>8}{'GFLOPs':>9}{'saved':>8}")
    for c, name in enumerate(synth.CLASSES):
        bp = ev["per_class_bprime"][c]
        g = clip_gflops(table, bp)
        per_class[name] = {"accuracy": round(ev["per_class_accuracy"][c], 4), "mean_bprime": round(bp, 3),
                           "gflops": round(g, 5), "gflops_saved_vs_static": round(1 - g / static, 4),
                           "back_fraction": round(bp / table["bins"], 4)}
        log(f"{name:<18}{ev['per_class_accuracy'][c]:>6.3f}{bp:>8.2f}{g:>9.4f}{1 - g / static:>8.1%}")
    mean_bp = float(ev["bprime"].mean())
    mean_g = clip_gflops(table, mean_bp)
    log(f"{'all':<18}{ev['accuracy']:>6.3f}{mean_bp:>8.2f}{mean_g:>9.4f}{1 - mean_g / static:>8.1%}")
    wall = time.time() - t0
    log(f"training took {wall:.0f}s wall")
    meta = {
        "demo": True,
        "seed": int(seed),
        "epochs": int(epochs),
        "warmup_epochs_without_sgs": int(warmup_epochs),
        "final_kernel": final_kernel if final_epochs else None,
        "final_epochs": final_epochs,
        "final_lr": final_lr if final_epochs else None,
        "final_distill": final_distill if final_epochs else None,
        "selected_epoch": best[1] if best is not None else int(epochs),
        "validation_split": VALIDATION_SPLIT if best is not None else None,
        "validation_accuracy": round(best[0], 4) if best is not None else None,
        "train_clips_per_class_per_epoch": int(n_train_per_class),
        "heldout_split": HELD_OUT_SPLIT,
        "heldout_clips_per_class": int(n_val_per_class),
        "heldout_accuracy": round(ev["accuracy"], 4),
        "mean_bprime": round(mean_bp, 3),
        "per_class": per_class,
        "gflops_static": round(static, 5),
        "gflops_front": round(table["front"], 5),
        "gflops_back_per_bin": round(table["back"][1], 5),
        "gflops_convention": "multiply-adds of conv and linear layers (fvcore), batch 1",
        "compact_config": {**COMPACT_CONFIG, **(overrides or {}),
                           **({"kernel": final_kernel} if final_epochs else {})},
        "train_wall_s": round(wall, 1),
        "torch": str(torch.__version__),
        "command": command or "atfr train-demo " + " ".join(shlex.quote(a) for a in
                                                             ["--seed", str(seed), "--epochs", str(epochs)]),
    }
    return TrainResult(model, cfg, meta)
