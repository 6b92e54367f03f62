"""AdaFuse clip-graph export: ONNX Runtime against the official references and torch, the TensorRT
10.3 op set, the first-maximum tie-break, and the error contract of the new paths."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from adafuse_helpers import assert_policies, load_ref, write_official
from atfr.export.exporter import TRT103_OPS
from atfr.models.adafuse_blocks import first_max3
from atfr.models.adafuse_config import from_official_text
from atfr.models.adafuse_weights import bn_prefixes, seeded_state_dict
from atfr.models.zoo import build_model
from atfr.runtime.video.clips import frames_to_inputs
from cli_helpers import one_line_error, run_cli
from tolerances import NetShape, magnitude, onnx_shape



@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The reference AdaFuse-TSN-R18 (4 x 64^2): official checkpoint, flags, clip, and its export."""
    ref = load_ref("tsn_r18")
    d = tmp_path_factory.mktemp("adafuse_export")
    ckpt, flags = write_official(d, ref)
    ckpt.rename(d / "r18.pth.tar")
    np.save(d / "clip.npy", ref["clip"])
    from atfr.cli import main
    assert main(["export", str(d / "r18.pth.tar"), "--config", str(flags), "-o", str(d / "exp")]) == 0
    return d, ref


def test_first_max3_is_argmax_with_ties():
    x = torch.randint(0, 3, (5000, 3)).float()  # about a third of the rows hold ties
    np.testing.assert_array_equal(first_max3(x).long().numpy(), torch.argmax(x, -1).numpy())


@pytest.mark.slow  # shares a ~10 s export (TorchScript tracing of R18)
def test_onnxruntime_matches_official_refs_and_torch(capsys, exported):
    d, ref = exported
    rc, out, err = run_cli(capsys, "infer", d / "exp", "--backend", "onnxruntime", "--input", d / "clip.npy", "--json")
    assert rc == 0, err
    ort = json.loads(out)
    assert ort["backend"] == "onnxruntime"
    assert_policies(ort["policy"], ref, onnx_shape(d / "exp" / "model.onnx").rtol)
    assert ort["top5"][0]["index"] == int(ref["logits"].argmax())
    atol = onnx_shape(d / "exp" / "model.onnx").rtol * magnitude(ref["logits"])
    np.testing.assert_allclose(ort["logits"], ref["logits"], rtol=0, atol=atol)
    rc, out, err = run_cli(capsys, "infer", d / "r18.pth.tar", "--config", d / "flags.sh", "--input",
                           d / "clip.npy", "--json")
    assert rc == 0, err
    tor = json.loads(out)
    assert tor["policy"] == ort["policy"] and tor["gflops"] == ort["gflops"]
    np.testing.assert_allclose(ort["logits"], tor["logits"], rtol=0, atol=atol)


@pytest.mark.slow  # shares a ~10 s export (TorchScript tracing of R18)
def test_graph_ops_and_batch(exported):
    d, ref = exported
    g = onnx.load(str(d / "exp" / "model.onnx"))
    assert {n.op_type for n in g.graph.node} <= TRT103_OPS
    assert [o.name for o in g.graph.output] == ["logits"] + [f"policy{i}" for i in range(len(ref["gated_blocks"]))]
    import onnxruntime as ort
    from atfr.runtime.manifest import load_manifest
    sess = ort.InferenceSession(str(d / "exp" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = frames_to_inputs(ref["clip"], load_manifest(d / "exp").input)[0]
    x2 = np.concatenate([x, x[:, :, ::-1].copy()], 0)  # two clips: each keeps its own policy
    outs = sess.run(None, {"clip0": x2})
    one = sess.run(None, {"clip0": x})
    rev = sess.run(None, {"clip0": x2[1:]})
    for a, b, c in zip(outs, one, rev):
        np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-5 * max(1, np.abs(b).max()))
        np.testing.assert_allclose(a[1], c[0], rtol=0, atol=1e-5 * max(1, np.abs(c).max()))


@pytest.mark.slow  # shares a ~10 s export (TorchScript tracing of R18)
def test_export_errors_are_one_line(capsys, exported):
    d, _ = exported
    one_line_error(*run_cli(capsys, "export", d / "r18.pth.tar", "--config", d / "flags.sh", "-o", d / "exp")[::2],
                   match="--force")
    one_line_error(*run_cli(capsys, "export", d / "r18.pth.tar", "--config", d / "flags.sh", "-o", d / "e16",
                            "--fp16")[::2], match="fp32 only")
    assert not (d / "e16").exists()
    one_line_error(*run_cli(capsys, "infer", d / "exp", "--backend", "tensorrt", "--input", d / "clip.npy")[::2],
                   match="model.engine is missing: build the engines with 'atfr build")
    one_line_error(*run_cli(capsys, "infer", d / "exp", "--bins", "2", "--input", d / "clip.npy")[::2],
                   match="--bins")
    np.save(d / "short.npy", np.zeros((2, 64, 64, 3), np.uint8))
    one_line_error(*run_cli(capsys, "infer", d / "exp", "--input", d / "short.npy")[::2])


@pytest.mark.slow  # shares the export above
@pytest.mark.parametrize("graph", ["online", "online_gathered"])
def test_online_graph_equals_clip_graph_frame_by_frame(exported, graph):
    """online.onnx / online_gathered.onnx over the clip's frames from a zero state: the official
    references' policy per frame, frame logits within the bound, the same clip prediction (mean
    of the frame logits)."""
    from atfr.runtime.adafuse_clip import AdaFuseOnlineRunner

    d, ref = exported
    on = AdaFuseOnlineRunner.load(d / "exp", graph=graph)
    x = frames_to_inputs(ref["clip"], on.manifest.input)[0]
    frame_logits, policy = on.run_clip(x)
    assert_policies([p[0] for p in policy], ref, onnx_shape(d / "exp" / "model.onnx").rtol)
    # onnx_shape sees the constant-weight convs; the gathered ones have the same fan-in as the
    # dense model's (tests/tolerances.py: rtol from depth and the longest reduction).
    atol = onnx_shape(d / "exp" / "model.onnx").rtol * magnitude(ref["frame_logits"])
    np.testing.assert_allclose(frame_logits[0], ref["frame_logits"], rtol=0, atol=atol)
    clip = frame_logits[0].mean(0)
    assert int(clip.argmax()) == int(ref["logits"].argmax())
    # Each frame runs once: a second pass of frame 0 from the carried state differs (state is used).
    first, _ = on.step(x[:, :, 0])
    assert not np.allclose(first[0], ref["frame_logits"][0])


def test_online_torch_dense_and_gathered_equal_clip():
    from atfr.models.adafuse_config import from_compact
    from atfr.models.adafuse_gathered import AdaFuseOnlineGathered
    from atfr.models.adafuse_online import AdaFuseOnline, run_online
    from atfr.models.adafuse_weights import randomize

    cfg = {"arch": "adafuse", "depth": 18, "num_classes": 5, "num_frames": 3, "crop_size": 32,
           "adafuse": {"gate_bn_between_fcs": True, "gate_relu_between_fcs": True, "enabled_stages": [1, 3]}}
    model = build_model(from_compact(cfg)).eval()
    randomize(model, 7)
    # Edge cases of the gathered convolutions: layer2.0 skips every channel, layer2.1 reuses every
    # channel (never computed at t-1: always recomputed from the cached input), layer4.0 keeps all.
    with torch.no_grad():
        for (_, b), action in zip(model.gated_blocks(), (0, 1, 2)):
            b.policy_net.gate_fc1.bias.view(-1, 3)[:, action] += 1e3
    x = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        clip = model.run(x)
        frame_logits, policy = run_online(AdaFuseOnline(model).eval(), x)
    assert len(policy) == 4  # layer2.* and layer4.*
    for a, b in zip(policy, clip.policy):
        assert torch.equal(a, b)
    ks = [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    atol = NetShape(len(ks), max(ks)).rtol * magnitude(clip.frame_logits.numpy())  # batch 1 vs N*T convs
    torch.testing.assert_close(frame_logits, clip.frame_logits, rtol=0, atol=atol)
    # Gathered convolutions, one clip at a time, from the zero state ('all kept' policy state).
    gathered = AdaFuseOnlineGathered(model).eval()
    for n in range(2):
        state = gathered.zero_state(32)
        g = len(state) // 4
        with torch.no_grad():
            for t in range(3):
                out = gathered(x[n:n + 1, :, t], *state)
                state = list(out[1 + g:])
                torch.testing.assert_close(out[0][0], clip.frame_logits[n, t], rtol=0, atol=atol)
                for i in range(g):
                    assert torch.equal(out[1 + i][0], clip.policy[i][n, t])


@pytest.mark.slow  # exports two ResNet-50 models (~10 s each)
@pytest.mark.parametrize("name", ["tsn_r50", "tsm_r50_last"])
def test_r50_exports_match_official_refs(tmp_path, name):
    """AdaFuse-TSN-R50 and AdaFuse-TSM-R50-Last through the ONNX clip graph and the online graphs
    (TSM's 16 frames behind, flushed after the clip): the official references' policies and top-1,
    logits within the bound."""
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import LoadedModel
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner

    ref = load_ref(name)
    cfg = from_official_text(str(ref["flags"]))
    model = build_model(cfg).eval()
    model.load_state_dict(seeded_state_dict(model.state_dict(), int(ref["seed"]), bn_prefixes(model)))
    out = export_model(LoadedModel(model, cfg, [], "atfr", {"source": name}), tmp_path / name, ExportOptions())
    clip = AdaFuseClipRunner.load(out)
    x = frames_to_inputs(ref["clip"], clip.manifest.input)[0]
    res, extra = clip.infer(x)
    atol = onnx_shape(out / "model.onnx").rtol * magnitude(ref["logits"])
    np.testing.assert_allclose(res.logits, ref["logits"], rtol=0, atol=atol)
    assert int(res.logits.argmax()) == int(ref["logits"].argmax())
    assert_policies(extra["policy"], ref, onnx_shape(out / "model.onnx").rtol)
    graphs = ["online", "online_gathered"]
    assert sorted(k for k in clip.manifest.graphs if k.startswith("online")) == graphs
    assert clip.manifest.raw["adafuse"]["online_delay"] == (16 if name.startswith("tsm") else 0)
    for graph in graphs:
        frame_logits, policy = AdaFuseOnlineRunner.load(out, graph=graph).run_clip(x)
        assert_policies([p[0] for p in policy], ref, onnx_shape(out / "model.onnx").rtol)
        np.testing.assert_allclose(frame_logits[0], ref["frame_logits"], rtol=0,
                                   atol=onnx_shape(out / "model.onnx").rtol * magnitude(ref["frame_logits"]))


@pytest.mark.slow  # shares the export above
@pytest.mark.parametrize("argv", [["calibrate"]],
                         ids=lambda a: a[0])
def test_commands_without_adafuse_support_refuse_in_one_line(capsys, exported, argv):
    d, _ = exported
    one_line_error(*run_cli(capsys, argv[0], d / "exp", *argv[1:])[::2], match="is an AdaFuse export")
