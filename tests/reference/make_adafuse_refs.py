"""Reference outputs of the official AdaFuse code for tests/test_adafuse_refs.py (not run by the suite).

    python tests/reference/make_adafuse_refs.py --official DIR [--thop DIR] [--out tests/data/adafuse_refs.npz]

DIR is a checkout of github.com/mengyuest/AdaFuse (its ``ops/``, ``opts.py``, ``data/*/classInd.txt``).
The official code needs thop (0.0.31, as its README pins) for its base GFLOPs; ``--thop`` adds a
folder holding it to the import path. torchvision is only imported, never used, by the parts run
here, so an empty stand-in module is installed when it is missing.

For each model (the ``zz_eval.sh`` command lines of AdaFuse-TSN-R50 and AdaFuse-TSM-R50-Last, and
the TSN line with ``--arch batenet18``, with ``--num_segments 4 --reso_list 64`` appended to
keep the clip small; and four lines exercising other options: ``--enabled_layers``,
``--enable_from/--disable_from``, ``--relative_hidden_size``, ``--gate_reduce_type max``, ``--shift_div``,
``--hidden_quota`` on ResNet-18/34/50): parse with the official ``opts.parser``, take the class count from the
official ``return_dataset``, build ``TSN_Gate`` (no pretrained download: ``--model_paths none``),
fill its state dict with :func:`atfr.models.adafuse_weights.seeded_state_dict` (seed below),
and run one seeded uint8 clip, normalised as the official val transform (x/255, ImageNet mean/std),
with ``F.gumbel_softmax`` replaced by the noise-free hard policy (one-hot of the first maximum).
Stored per model: the flags and the ``args.txt`` text they give, the official state-dict keys, the clip, the clip and frame logits,
the policy of every gated block ([T, C] actions 0 skip / 1 reuse / 2 keep), the smallest gap
between the best and second-best policy log-probability, and the official GFLOPs
(``init_gflops_table`` + ``compute_gflops_by_mask``: per frame, as the official log prints).
It also runs the official sampled (Gumbel) evaluation a few times and records how often its
masks and top-1 agree with the hard policy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]

ZZ_TSN = ("something RGB --arch batenet50 --num_segments 8 --lr 0.01 --lr_steps 20 40 --epochs 50 --wd 5e-4 --npb "
          "--ada_reso_skip --init_tau 0.67 --gsmx --gate_history --hidden_quota 196608 --shared_policy_net --gbn "
          "--grelu --gate_gflops_loss_weight 0.125 --gflops_loss_type upb --batch-size 64 -j 72 --gpus 0 1 2 3 "
          "--exp_header X --test_from ada_fuse_pretrained/sthv1_adatsn50.pth.tar --skip_log")
ZZ_TSM_LAST = ("something RGB --arch batenet50 --num_segments 8 --lr 0.02 --lr_steps 20 40 --epochs 50 --wd 5e-4 "
               "--npb --ada_reso_skip --init_tau 0.67 --gsmx --gate_history --gate_hidden_dim 1024 --gbn --grelu "
               "--gate_gflops_loss_weight 0.125 --gflops_loss_type upb --shift --batch-size 64 -j 72 --gpus 0 1 2 3 "
               "--exp_header X --enabled_stages 3 --test_from ada_fuse_pretrained/sthv1_adatsm50last.pth.tar "
               "--skip_log")
SMALL = " --num_segments 4 --reso_list 64"
MODELS = {
    "tsn_r18": "python -u main_gate.py " + ZZ_TSN.replace("batenet50", "batenet18") + SMALL,
    "tsn_r50": "python -u main_gate.py " + ZZ_TSN + SMALL,
    "tsm_r50_last": "python -u main_gate.py " + ZZ_TSM_LAST + SMALL,
}
# Other options the zoo builds, each against the official code too (3 frames, Mini-Kinetics' 200 classes).
VARIANT = "python -u main_gate.py minik RGB --num_segments 3 --reso_list 64 --ada_reso_skip --gate_history "
MODELS.update({
    "r34_enabled_layers": VARIANT + "--arch batenet34 --enabled_layers 1 5 9 --gbn --grelu --gate_hidden_dim 64",
    "r18_enable_from_to": VARIANT + "--arch batenet18 --enable_from 1 --disable_from 3 --relative_hidden_size 0.5",
    "r50_tsm_max_pool": VARIANT + "--arch batenet50 --gate_reduce_type max --grelu --shift --shift_div 4 "
                                  "--enabled_stages 0 2",
    "r18_shared_quota": VARIANT + "--arch batenet18 --shared_policy_net --hidden_quota 8192",
})
SEEDS = {"tsn_r18": 18, "tsn_r50": 50, "tsm_r50_last": 350, "r34_enabled_layers": 34, "r18_enable_from_to": 181,
         "r50_tsm_max_pool": 501, "r18_shared_quota": 182}
GUMBEL_RUNS = 5
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def clip_frames(seed: int, t: int, size: int) -> np.ndarray:
    """A smooth moving pattern plus noise (uint8 [T,H,W,3]), so that frames differ but correlate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frames = []
    for k in range(t):
        base = np.stack([np.sin(6 * xx + 0.7 * k), np.cos(5 * yy - 0.5 * k), np.sin(4 * (xx + yy) + k)], -1)
        frames.append(127.5 + 90 * base + rng.normal(0, 20, base.shape))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def official_input(frames: np.ndarray) -> torch.Tensor:
    """[T,H,W,3] uint8 -> the official [1, T*3, H, W] (ToTorchFormatTensor /255, GroupNormalize)."""
    x = (frames.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    t, h, w, _ = x.shape
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(1, t * 3, h, w)))


class HardPolicy:
    """Stands in for F.gumbel_softmax: one-hot of the first maximum, recording the log-probs."""

    def __init__(self):
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, logits, tau=1.0, hard=True, **_kw):
        self.logprobs.append(logits.detach().clone())
        return F.one_hot(torch.argmax(logits, dim=-1), logits.shape[-1]).to(logits.dtype)


def build_official(flags: str, official: Path):
    import opts
    from ops import dataset_config
    from ops.models_gate import TSN_Gate

    words = shlex.split(flags)
    words = words[words.index("main_gate.py") + 1:]
    args = opts.parser.parse_args(words + ["--model_paths", "none"])
    cwd = os.getcwd()
    os.chdir(official)  # return_dataset reads data/<dataset>/classInd.txt relative to the repo
    try:
        args.num_class = dataset_config.return_dataset(args.dataset, args.data_path)[0]
    finally:
        os.chdir(cwd)
    model = TSN_Gate(args=args)
    model.eval()  # TSN_Gate.train() returns None, so no chaining
    return model, args


def one_model(name: str, flags: str, official: Path) -> dict[str, np.ndarray]:
    import ops.models_gate  # noqa: F401  (before ops.utils: the official import order avoids a cycle)
    from ops.utils import compute_gflops_by_mask, init_gflops_table

    from atfr.models.adafuse_weights import bn_prefixes, seeded_state_dict

    model, args = build_official(flags, official)
    sd = seeded_state_dict(model.state_dict(), SEEDS[name], bn_prefixes(model))
    model.load_state_dict(sd, strict=True)
    base_gflops, gflops_list, g_meta = init_gflops_table(model, args)
    model.eval()
    t, size = args.num_segments, args.reso_list[0]
    frames = clip_frames(SEEDS[name] + 1, t, size)
    x = official_input(frames)
    real_gumbel = F.gumbel_softmax
    hard = HardPolicy()
    F.gumbel_softmax = hard
    try:
        with torch.no_grad():
            out, masks, _, frame_logits = model(input=[x], tau=args.init_tau, is_training=False, curr_step=0)
    finally:
        F.gumbel_softmax = real_gumbel
    upb, real = compute_gflops_by_mask(masks, base_gflops, gflops_list, g_meta, args)
    blocks = [b for layer in (model.base_model.layer1, model.base_model.layer2, model.base_model.layer3,
                              model.base_model.layer4) for b in layer]
    gated = [i for i, b in enumerate(blocks) if b.adaptive_policy]
    actions = [masks[i][0].argmax(-1).numpy().astype(np.int8) for i in gated]  # [T, C]
    gaps = []  # per gated block [T, C]: best minus second-best log-probability (near-ties)
    for lp in hard.logprobs:
        top2 = torch.topk(lp, 2, dim=-1).values
        gaps.append((top2[..., 0] - top2[..., 1]).reshape(t, -1).numpy())
    # The official evaluation as it runs: Gumbel sampling in eval mode (seeded runs).
    mask_agree, top1_agree = [], []
    for run in range(GUMBEL_RUNS):
        torch.manual_seed(1000 + run)
        with torch.no_grad():
            o2, m2, _, _ = model(input=[x], tau=args.init_tau, is_training=False, curr_step=0)
        a2 = [m2[i][0].argmax(-1).numpy() for i in gated]
        mask_agree.append(float(np.mean(np.concatenate([(a == b).ravel() for a, b in zip(a2, actions)]))))
        top1_agree.append(float(int(o2.argmax()) == int(out.argmax())))
    keys = sorted(model.state_dict())
    ref = {
        "flags": np.array(flags),
        "args_txt": np.array(str(args)),  # what main_gate.py writes to args.txt
        "seed": np.array(SEEDS[name]),
        "keys": np.array("\n".join(keys)),
        "clip": frames,
        "logits": out[0].numpy().astype(np.float32),
        "frame_logits": frame_logits[0, 0].numpy().astype(np.float32),
        "gated_blocks": np.array(gated, np.int32),
        "min_policy_gap": np.array(min(float(g.min()) for g in gaps)),
        "policy_logprob_max": np.array(max(float(lp.abs().max()) for lp in hard.logprobs)),
        "official_gflops_per_frame": np.array(float(real)),
        "official_upb_gflops_per_frame": np.array(float(upb)),
        "official_base_gflops_per_frame": np.array(float(base_gflops)),
        "gumbel_mask_agreement": np.array(mask_agree),
        "gumbel_top1_agreement": np.array(top1_agree),
    }
    for i, a in enumerate(actions):
        ref[f"policy_{i}"] = a
        ref[f"policy_gap_{i}"] = gaps[i].astype(np.float16)
    print(f"{name}: {len(keys)} keys, {len(gated)} gated blocks, top1 {int(out.argmax())}, "
          f"official GFLOPs/frame {float(real):.5f} (base {base_gflops:.5f}), "
          f"min policy gap {min(float(g.min()) for g in gaps):.2e}, "
          f"policy fractions skip/reuse/keep "
          f"{[round(float(np.mean(np.concatenate([a.ravel() for a in actions]) == k)), 3) for k in range(3)]}, "
          f"Gumbel: mask agreement {np.mean(mask_agree):.3f}, top-1 agreement {np.mean(top1_agree):.2f}")
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, type=Path, help="checkout of mengyuest/AdaFuse")
    ap.add_argument("--thop", type=Path, help="folder that holds the thop package (0.0.31)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "adafuse_refs.npz")
    a = ap.parse_args()
    if a.thop:
        sys.path.insert(0, str(a.thop))
    import collections
    import collections.abc
    collections.Iterable = collections.abc.Iterable  # thop 0.0.31 predates Python 3.10
    sys.path.insert(0, str(a.official))
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        tv.models = types.ModuleType("torchvision.models")
        tv.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.update({"torchvision": tv, "torchvision.models": tv.models,
                            "torchvision.transforms": tv.transforms})
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = {}
    for name, flags in MODELS.items():
        for k, v in one_model(name, flags, a.official).items():
            out[f"{name}/{k}"] = v
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, **out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
