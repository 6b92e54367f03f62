"""Our AdaFuse loader against outputs of the official code (tests/data/adafuse_refs.npz).

The references come from tests/reference/make_adafuse_refs.py: the official ``TSN_Gate`` built from
the ``zz_eval.sh`` flags (AdaFuse-TSN-R50, AdaFuse-TSM-R50-Last, and the TSN line on ResNet-18)
at 4 frames x 64^2, its state dict filled by ``seeded_state_dict`` and its Gumbel sampling
replaced by the hard policy. Here the same weights go into an official-format checkpoint
({"state_dict": DataParallel ``module.`` names}) that our loader reads strictly with the stored
flags as ``--config``: the policies and top-1 must be identical (tests/adafuse_helpers.py:
a flip at a float near-tie on another CPU skips), the logits equal within the
bound of tests/tolerances.py (two fp32 evaluations of the same network in other summation
orders), the official GFLOPs equal up to float32 rounding of the official mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adafuse_helpers import assert_policies, load_ref, write_official
from atfr.models.adafuse_config import from_official_text
from atfr.models.adafuse_flops import AdaFuseCounter
from atfr.models.checkpoint import load_checkpoint
from atfr.runtime.video.clips import frames_to_inputs
from tolerances import NetShape, magnitude

MODELS = [pytest.param("tsn_r18", id="AdaFuse-TSN-R18"),
          pytest.param("tsn_r50", id="AdaFuse-TSN-R50", marks=pytest.mark.slow),
          pytest.param("tsm_r50_last", id="AdaFuse-TSM-R50-Last", marks=pytest.mark.slow),
          # Other options, against the official code too (tests/reference/make_adafuse_refs.py).
          pytest.param("r34_enabled_layers", id="R34-enabled_layers"),
          pytest.param("r18_enable_from_to", id="R18-enable_from-relative_hidden_size"),
          pytest.param("r18_shared_quota", id="R18-shared-hidden_quota"),
          pytest.param("r50_tsm_max_pool", id="R50-TSM-max-pool-shift_div4", marks=pytest.mark.slow)]


def _net_shape(model: torch.nn.Module) -> NetShape:
    ks = [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return NetShape(len(ks), max(ks))


@pytest.mark.parametrize("name", MODELS)
def test_loader_matches_official_code(tmp_path, name):
    ref = load_ref(name)
    ckpt, cfg = write_official(tmp_path, ref)
    lm = load_checkpoint(ckpt, cfg)
    model = lm.model
    # Names unchanged: our state-dict keys are exactly the official ones.
    assert sorted(model.state_dict()) == str(ref["keys"]).split("\n")
    x = frames_to_inputs(ref["clip"], model.input_spec)[0]  # frames at the model size: normalised only
    with torch.no_grad():
        out = model.run(torch.from_numpy(x))
    policy = [p[0].numpy() for p in out.policy]
    want = [ref[f"policy_{i}"] for i in range(len(ref["gated_blocks"]))]
    assert_policies(policy, ref, _net_shape(model).rtol)
    # The policies vary (else the comparison would not exercise reuse/skip).
    allp = np.concatenate([p.ravel() for p in want])
    assert min(np.mean(allp == k) for k in range(3)) > 0.2
    logits = out.logits[0].numpy()
    assert int(logits.argmax()) == int(ref["logits"].argmax())
    atol = _net_shape(model).rtol * magnitude(ref["logits"])
    np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=atol)
    np.testing.assert_allclose(out.frame_logits[0].numpy(), ref["frame_logits"], rtol=0,
                               atol=_net_shape(model).rtol * magnitude(ref["frame_logits"]))
    # Official GFLOPs (per frame in the official log; ours per clip): the official figure is a
    # float32 mean over <= 8*512 entries times per-block flops, good to ~1e-6 relative.
    t = ref["clip"].shape[0]
    counter = AdaFuseCounter(model)
    assert counter(policy)["official"] / t == pytest.approx(float(ref["official_gflops_per_frame"]), rel=1e-5)
    assert counter.base_per_frame == pytest.approx(float(ref["official_base_gflops_per_frame"]),
                                                                 rel=1e-9)


def test_args_txt_and_command_line_give_one_config():
    ref = load_ref("tsm_r50_last")
    a = from_official_text(str(ref["args_txt"]), "args.txt")
    b = from_official_text(str(ref["flags"]), "flags")
    assert a == b
    assert a["ADAFUSE"]["shift"] and a["ADAFUSE"]["enabled_stages"] == [3]
    assert a["MODEL"]["NUM_CLASSES"] == 174 and a["DATA"]["NUM_FRAMES"] == 4


def test_eq5_differs_from_official_only_by_the_last_frame():
    """Hand-made policy, T=3, one block (conv1 100 GFLOPs, conv2 10 per frame, base 0): actions
    skip, reuse, keep. conv1 is saved at t0 unless t1 reuses it (it does: 0), at t1 (not kept, t2
    does not reuse: 1); at the last frame the official code reads frame 1's mask (not kept: 1),
    Eq. 5 frame 2's (kept: 0). conv2 is saved where skipped: 1/3 of the entries."""
    from atfr.runtime.adafuse_gflops import policy_gflops

    p = np.array([[0], [1], [2]])
    convs = [(100e9, 10e9)]
    assert policy_gflops([p], 0.0, convs, official=True) == pytest.approx(-(100 * 2 / 3 + 10 / 3) * 3)
    assert policy_gflops([p], 0.0, convs, official=False) == pytest.approx(-(100 * 1 / 3 + 10 / 3) * 3)
