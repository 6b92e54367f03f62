"""atfr bench on AdaFuse exports and benchmarks/adafuse_vs_atfr.py's core (issue 25 item 6).

Counted numbers are checked exactly against independent derivations: the policies from the torch
model counted by models/adafuse_flops.AdaFuseCounter, the static TSN of models/tsn.py counted by
models/flops.py, the ATFR model's own count per B'. Latencies are only checked for consistency
(present, positive, per frame = per clip / T where that is the definition)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import one_line_error, run_cli

FRAMES, SIZE = 2, 32
ROOT = Path(__file__).resolve().parents[1]


def _script():
    if "adafuse_vs_atfr" in sys.modules:
        return sys.modules["adafuse_vs_atfr"]
    spec = importlib.util.spec_from_file_location("adafuse_vs_atfr", ROOT / "benchmarks" / "adafuse_vs_atfr.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["adafuse_vs_atfr"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ada(tmp_path_factory):
    """AdaFuse-TSN-R18 (seeded random weights) at 2 x 32^2 and its TSN twin, via the script's builder."""
    d = tmp_path_factory.mktemp("adafuse_bench")
    return _script().build_adafuse(18, FRAMES, SIZE, d), d


def _torch_model(depth: int = 18):
    from atfr.models.adafuse_config import from_official_text
    from atfr.models.adafuse_weights import randomize
    from atfr.models.zoo import build_model

    s = _script()
    m = build_model(from_official_text(s.ZZ_TSN.format(depth=depth, frames=FRAMES, size=SIZE))).eval()
    randomize(m, 0 + depth)  # build_adafuse's seed
    return m


@pytest.mark.slow  # shares two ~8 s exports with the script test below
def test_bench_adafuse_export_counts_exactly_and_times_every_graph(capsys, ada, tmp_path):
    entry, d = ada
    from atfr.bench.runner import random_clips
    from atfr.models.adafuse_flops import AdaFuseCounter
    from atfr.models.config import from_compact
    from atfr.models.flops import count_gflops
    from atfr.models.zoo import build_model
    from atfr.runtime.manifest import load_manifest
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import LoadedModel

    # --static: the TSN of models/tsn.py (thin, any depth: its count is what is checked) at the same input
    tcfg = from_compact({"arch": "tsn", "depth": 18, "width_per_group_slow": 8, "num_frames": FRAMES,
                         "crop_size": SIZE, "num_classes": 5, "sgs_stage": "none"})
    torch.manual_seed(0)
    tsn = build_model(tcfg).eval()
    export_model(LoadedModel(tsn, tcfg, [], "atfr", {"source": "tsn"}), tmp_path / "tsn", ExportOptions())
    rc, out, err = run_cli(capsys, "bench", entry.export, "--iters", "2", "--warmup", "0", "--static",
                           tmp_path / "tsn", "--out", tmp_path / "b", "--no-progress")
    assert rc == 0, err
    r = json.loads((tmp_path / "b" / "report.json").read_text())
    a = r["adafuse"]
    names = {"adafuse.clip", "adafuse.online", "adafuse.online.step", "adafuse.online_gathered",
             "adafuse.online_gathered.step"}
    assert set(a["candidates"]) == names and names <= set(r["harness"]["candidates"])
    assert {"static.front", "static.back", "static.e2e"} <= set(r["harness"]["candidates"])
    for name, v in a["candidates"].items():
        assert v["per_clip"]["n"] == 2 and v["per_clip"]["median"] > 0
        if name.endswith(".step"):  # measured per frame; per clip derived = T x
            assert v["per_clip"]["median"] == pytest.approx(v["per_frame"]["median"] * FRAMES, rel=1e-12)
        else:  # measured per clip; per frame derived = / T
            assert v["per_frame"]["median"] == pytest.approx(v["per_clip"]["median"] / FRAMES, rel=1e-12)

    # counted: the same clip (seeded) through the torch model, counted by models/adafuse_flops
    clip = random_clips(load_manifest(entry.export), 1, 0)[0]
    model = _torch_model()
    with torch.no_grad():
        pol = [p[0].numpy() for p in model.run(torch.from_numpy(clip)).policy]
    want = AdaFuseCounter(model, SIZE)(pol)
    g = a["counted"]
    assert (g["eq5"], g["official"]) == (want["eq5"], want["official"])
    assert g["per_clip"] == {"official": [want["official"]], "eq5": [want["eq5"]]}
    frac = {k: float(np.mean(np.concatenate([p.ravel() for p in pol]) == v)) for k, v in
            (("skip", 0), ("reuse", 1), ("keep", 2))}
    assert g["policy_fractions"] == pytest.approx(frac, abs=0) and 0 < frac["keep"] < 1  # the policy varies
    # the --static TSN's GFLOPs: models/flops.py on the torch TSN, through its manifest into the report
    assert r["static"]["gflops"] == pytest.approx(count_gflops(tsn)["static"], rel=1e-12)
    rows = {(x["candidate"], x["baseline"].split(" ")[0]): x for x in a["savings"]}
    ga = rows[("adafuse.online_gathered", "adafuse.online")]
    assert ga["counted_saved"] == pytest.approx(1 - want["eq5"] / g["dense_official"], rel=1e-12)
    on = a["candidates"]
    assert ga["realized_saved_clip"] == pytest.approx(
        1 - on["adafuse.online_gathered"]["per_clip"]["median"] / on["adafuse.online"]["per_clip"]["median"], rel=1e-12)
    clip_row = rows[("adafuse.clip", "static")]
    assert clip_row["baseline_clip_ms"] == r["static"]["clip_ms"] and clip_row["realized_over_counted_clip"] == \
        pytest.approx(clip_row["realized_saved_clip"] / clip_row["counted_saved"], rel=1e-12)
    md = (tmp_path / "b" / "report.md").read_text()
    assert "## AdaFuse savings: counted vs realized" in md and "adafuse.online_gathered.step" in md
    assert "adafuse.online_gathered vs adafuse.online: counted saved" in out


@pytest.mark.slow  # shares the exports above
@pytest.mark.parametrize("argv", [["--batch", "2"], ["--backend", "tensorrt"], ["--throughput"]],
                         ids=lambda a: a[0])
def test_bench_adafuse_refuses_what_it_does_not_do_in_one_line(capsys, ada, tmp_path, argv):
    entry, _ = ada
    one_line_error(*run_cli(capsys, "bench", entry.export, *argv, "--out", tmp_path / "b")[::2])
    assert not (tmp_path / "b" / "report.json").exists()


def test_tsn_r50_of_models_is_adafuse_r50_without_policy_nets():
    """The 'same backbone's static TSN': models/tsn.py's TSN-R50 counted by models/flops.py has the
    MACs of AdaFuse-R50's static count (the gated network without its policy nets)."""
    from atfr.models.adafuse_config import from_compact as ada_compact
    from atfr.models.adafuse_flops import static_report
    from atfr.models.config import from_compact
    from atfr.models.flops import count_gflops
    from atfr.models.zoo import build_model

    with torch.device("meta"):
        tsn = build_model(from_compact({"arch": "tsn", "depth": 50, "num_frames": 4, "crop_size": 64,
                                        "num_classes": 200, "sgs_stage": "none"}))
        ada = build_model(ada_compact({"arch": "adafuse", "depth": 50, "num_frames": 4, "crop_size": 64,
                                       "num_classes": 200}))
    # One difference, by convention only: the TSN pools over time and then applies its classifier
    # once per clip (equal by linearity), AdaFuse applies new_fc per frame and averages the logits:
    # (T - 1) more 2048 x 200 linears per clip in AdaFuse's count.
    head = (4 - 1) * 2048 * 200 / 1e9
    assert count_gflops(tsn)["static"] + head == pytest.approx(static_report(ada)["static"], rel=1e-12)


@pytest.mark.slow  # four small exports
def test_side_by_side_core_gives_every_column(ada, tiny_checkpoint, tiny_export, tmp_path):
    entry, d = ada
    s = _script()
    from atfr.bench.runner import random_clips
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint
    from atfr.models.flops import count_gflops
    from atfr.runtime.manifest import load_manifest

    lm = load_checkpoint(tiny_checkpoint)
    lm.cfg["MODEL"]["TEMPORAL_LAYER_STAGE"] = "none"
    from atfr.models.checkpoint import LoadedModel
    from atfr.models.zoo import build_model
    static = build_model(lm.cfg).eval()
    static.load_state_dict({k: v for k, v in lm.model.state_dict().items() if k in static.state_dict()}, strict=False)
    export_model(LoadedModel(static, lm.cfg, [], "atfr", {"source": "s"}), tmp_path / "static", ExportOptions())
    atfr_model = load_checkpoint(tiny_checkpoint).model
    from atfr.bench.runner import gflops_table
    man = load_manifest(tiny_export)
    g = gflops_table(man, list(range(1, man.sgs[0].bins + 1)), atfr_model)
    atfr = s.Entry("ATFR-tiny", "atfr", tiny_export, tmp_path / "static",
                   {"per_bprime": g["per_bprime"], "static": g["static"], "source": g["source"]})
    clips = {entry.name: [random_clips(load_manifest(entry.export), 1, k)[0] for k in range(2)],
             atfr.name: [random_clips(man, 1, k)[0] for k in range(2)]}
    out = s.side_by_side([entry, atfr], clips, rounds=1, warmup=0)
    lines = s.table_lines(out)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert len(header) == 12
    rows = {r["candidate"]: r for r in out["rows"]}
    assert set(rows) == {"AdaFuse-R18 clip graph (dense, masks)", "AdaFuse-R18 online", "AdaFuse-R18 online_gathered",
                         "ATFR-tiny (split + SGS, Pipeline.infer)"}
    assert len(out["rows"]) == 5  # online_gathered twice: vs the TSN and vs the dense online graph
    for r in out["rows"]:
        assert all(v is not None for v in r.values()), r
    for line in lines[2:2 + len(out["rows"])]:
        assert "| - |" not in line and line.count("|") == 13
    # ATFR counted: the model's own count at each clip's B', mean over the clips; static = the twin's export
    a = out["models"]["ATFR-tiny"]["counted"]
    want = np.mean([count_gflops(atfr_model, bprime=int(bp[0]))["total"] for bp in a["bprime"]])
    assert rows["ATFR-tiny (split + SGS, Pipeline.infer)"]["gflops"] == pytest.approx(want, rel=1e-12)
    assert a["static"] == pytest.approx(load_manifest(tmp_path / "static").gflops["total"], rel=1e-12)
    # AdaFuse: the TSN baseline is the twin export's own count (a network without policy nets)
    c = out["models"]["AdaFuse-R18"]["counted"]
    assert c["static_official"] == pytest.approx(c["tsn_static_official"], rel=1e-12)
    assert len(c["per_clip"]["eq5"]) == 2


@pytest.mark.slow  # shares the exports above
def test_bench_adafuse_on_real_video_counts_every_clip(capsys, ada, tmp_path):
    """--videos: the candidates cycle through the clips of a real video and the counted GFLOPs are
    the mean over them (each clip counted from its own policy)."""
    import shutil

    from footage import real_video

    entry, _ = ada
    (tmp_path / "v").mkdir()
    shutil.copy(real_video("carphone"), tmp_path / "v" / "carphone.mp4")  # 120 frames: 4 windows
    rc, out, err = run_cli(capsys, "bench", entry.export, "--iters", "4", "--warmup", "0", "--videos", tmp_path / "v",
                           "--out", tmp_path / "b", "--no-progress")
    assert rc == 0, err
    g = json.loads((tmp_path / "b" / "report.json").read_text())["adafuse"]["counted"]
    assert g["clips"] == 4 and len(g["per_clip"]["eq5"]) == 4
    assert g["eq5"] == pytest.approx(np.mean(g["per_clip"]["eq5"]), rel=1e-12)
    assert all(e < g["dense_official"] for e in g["per_clip"]["eq5"])  # random policies skip or reuse some
