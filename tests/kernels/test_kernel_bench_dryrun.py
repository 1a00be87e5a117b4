"""bench/gpu.py --tiny runs end to end on CPU (torch backend) and writes its JSON; its sweep
(bench/gpu_sweep.py) plans, varies and times the engine's own step, and its tile sweeps (bench/gpu_tiles.py)
run in the interpreter."""

from __future__ import annotations

import json
import types

import torch
from kernel_checks import load_bench

import kernels


def test_bench_gpu_tiny_dry_run(tmp_path):
    bench = load_bench("gpu")
    out = tmp_path / "r.json"
    rc = bench.main(["--tiny", "--skip-hf", "--out", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0 and not r.get("errors"), r.get("errors")
    ran = {(x["variant"], x["canvases"], x["steps"]) for x in r["sweep"]}
    # model rows and the A/B rows (fusion "unfused", SDPA attention "sdpa", grouped-GEMM experts "grouped")
    assert ran >= {("kernels", 2, 3), ("kernels", 1, 2), ("model", 1, 2), ("unfused", 1, 2), ("sdpa", 1, 2),
                   ("grouped", 1, 2)}
    assert all(x["tok_s_e2e"] > 0 and x["roofline_ms"] > 0 for x in r["sweep"])
    want = {"fused_moe", "canvas_attention", "fused_sample", "rms_norm", "norm_rope", "logit_epilogue",
            "softmax", "route", "moe_align", "derive_keys", "gelu_mul", "rms_norm_pair"}
    assert {k["kernel"] for k in r["kernels"]} == want
    # SDPA's default choice and its math backend take the repeated-head masked form on a CPU too; the row
    # agrees with the eager reference
    attn = [k for k in r["kernels"] if k["kernel"] == "canvas_attention"]
    assert attn and all(k["sdpa_ms"] > 0 and k["sdpa_max_diff"] < 1e-2 and k["sdpa_math_ms"] > 0
                        for k in attn)
    moe = [k for k in r["kernels"] if k["kernel"] == "fused_moe"]
    assert moe and all(k["grouped_ms"] > 0 and k["grouped_max_diff"] < 1e-2 for k in moe)
    # the dry run's torch overrides (global and the "unfused" per-op one) did not leak
    assert kernels.get_backend() == "auto" and kernels._op_backend == {}


def test_sweep_plan_puts_decisions_first():
    # a GPU run that reaches its time budget must keep the headline sizes and the A/B rows at 8 canvases
    bench = load_bench("gpu_sweep")
    args = types.SimpleNamespace(ratio_only=False, canvases=[1, 2, 4, 8, 16], steps=[8, 16],
                                 model_canvases=[1, 8], hf_plan=[(1, 16), (8, 16)])
    bench.TUNED["fused_moe"] = [((256,), {"block_m": 32})]  # as a GPU run's tile sweeps leave it
    plan = bench.sweep_plan(args, torch.device("cuda"))
    assert plan[:3] == [("kernels", 1, 16), ("kernels", 8, 16), ("kernels", 16, 16)]
    assert plan[3:10] == [(v, 8, 8) for v in bench.AB_VARIANTS] and bench.AB_VARIANTS[1] == "tuned"
    assert plan[10:17] == [(v, 1, 8) for v in bench.AB_VARIANTS]
    # then the 5 "kernels" rows not yet run (2 and 4 canvases at 16 steps; 2, 4 and 16 at 8)
    assert plan[17:] == [("kernels", B, 16) for B in (2, 4)] + [("kernels", B, 8) for B in (2, 4, 16)]
    assert ("graph", 8, 8) not in bench.sweep_plan(args, torch.device("cpu"))
    bench.TUNED.clear()  # no tile sweep ran (a CPU run): no "tuned" row
    assert ("tuned", 8, 8) not in bench.sweep_plan(args, torch.device("cuda"))
    args.ratio_only = True
    assert bench.sweep_plan(args, torch.device("cuda")) == [("kernels", 1, 16), ("kernels", 8, 16)]


def test_bench_gpu_ratio_only_dry_run(tmp_path):
    out = tmp_path / "r.json"
    assert load_bench("gpu").main(["--tiny", "--ratio-only", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert "kernels" not in r and "profile" not in r
    assert [(x["variant"], x["canvases"], x["steps"]) for x in r["sweep"]] == [("kernels", 1, 3)]
    assert r["reference"][0]["ours_over_reference_e2e"] > 0


def test_a_failing_sweep_variant_keeps_the_others(tmp_path, monkeypatch):
    # a variant whose implementation raises on the GPU (a backend that rejects a shape) is recorded once,
    # its later rows are skipped, and every other variant's rows still run
    def reject(*_a, **_k):
        raise RuntimeError("grouped_mm: no kernel for this shape")

    monkeypatch.setitem(kernels._ALTERNATIVES["fused_moe"], "grouped", reject)
    bench = load_bench("gpu")
    out = tmp_path / "r.json"
    assert bench.main(["--tiny", "--skip-hf", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    grouped = [x for x in r["sweep"] if x["variant"] == "grouped"]
    assert grouped and all("no kernel for this shape" in x["error"] for x in grouped)
    ok = {(x["variant"], x["canvases"]) for x in r["sweep"] if "error" not in x}
    assert {("kernels", 1), ("kernels", 2), ("sdpa", 1), ("unfused", 1), ("model", 1)} <= ok


def test_tile_sweeps_run_in_the_interpreter(monkeypatch):
    # the GPU run's tile sweeps (bench/gpu_tiles.py) only run on CUDA there; here their code runs in the
    # interpreter at the tiny geometry with small tile lists: the shared MoE tiles, the down tiles pinned to
    # the fastest shared tile, key splits and warps for attention, and a tile that cannot run recorded as one
    gk = load_bench("gpu_tiles")
    from model import DiffusionGemmaConfig

    calls = iter(range(100, 0, -1))  # each timing faster than the last: the pinned tile is the last to run
    monkeypatch.setattr(gk, "ms", lambda dev, fn, *a, reps=5: fn(*a) is not None and float(next(calls)))
    monkeypatch.setattr(gk, "MOE_TILES", [(16, 16, 16, 2, None), (32, 16, 32, 2, 2), (16, 24, 16, 2, None)])
    monkeypatch.setattr(gk, "MOE_DOWN_TILES", [(32, 16, 2, None)])
    cfg = DiffusionGemmaConfig.tiny()
    rows = gk.moe_tiles(torch.device("cpu"), cfg, budget_end=float("inf"), canvases=(1,))
    T = cfg.canvas_length
    bad = [r for r in rows if "error" in r]
    assert [(r["T"], r["block_n"]) for r in bad] == [(T, 24)]  # block_n 24: not a power of two
    down = [r for r in rows if "down_tile" in r]
    assert [(r["T"], r["block_m"], r["down_tile"]) for r in down] == [(T, 32, [32, 16, 2, None])]
    assert all(r["max_diff_default"] < 1e-2 for r in rows if "ms" in r)
    tiles = [(None,) * 5, (None, None, None, 2, None), (16, 16, 16, None, 2)]
    monkeypatch.setattr(gk, "ATTN_TILES", {16: tiles, 32: tiles[:1]})
    att = gk.attention_tiles(torch.device("cpu"), cfg, budget_end=float("inf"), context=40)
    d16 = [(r["B"], r["num_splits"], r["num_warps"]) for r in att if r["D"] == 16]
    assert d16 == [(B, s, w) for B in (1, 8) for s, w in ((None, None), (2, None), (None, 2))]
    assert all("ms" in r and r["max_diff"] < 2e-2 for r in att)
    # the sampler's chunk sweep (the tiny vocabulary is one tile, so every count runs as one chunk)
    kb = load_bench("gpu_kernels")  # the same timing stub: the last chunk count measured is the fastest
    monkeypatch.setattr(kb, "ms", lambda dev, fn, *a, reps=5: fn(*a) is not None and float(next(calls)))
    row = kb.head_sample_chunks(torch.device("cpu"), cfg, torch.Generator().manual_seed(0), cfg.canvas_length)
    assert all(row[f"chunks{c}_same_argmax"] and row[f"chunks{c}_ms"] > 0 for c in kb.SAMPLER_CHUNKS)
    # these rows, as a GPU run leaves them, become the "tuned" row's settings, which the dispatch accepts
    # (the timing stub made each row faster than the one before, so the last measured one wins)
    measured = {"moe_tiles": rows, "attention_tiles": att, "kernels": [row]}
    settings = load_bench("decide").tuned_settings(measured)
    assert settings["fused_moe"] == [((T,), {"block_m": 32, "block_n": 16, "block_k": 32, "num_warps": 2,
                                              "num_stages": 2, "down_tile": (32, 16, 2, None)})]
    assert settings["canvas_attention"][0] == ((16, 1), {"block_m": 16, "block_n": 16, "block_dv": 16,
                                                         "num_warps": 2})
    assert settings["head_sample"] == [((T,), {"chunks": 16})]
    with kernels.use_tuned(settings):
        assert kernels.tuned_for("fused_moe", torch.empty(T, 4))["down_tile"] == (32, 16, 2, None)


def test_tuned_variant_applies_the_runs_settings(monkeypatch):
    # the "tuned" sweep row runs the model with TUNED in kernels' dispatch, and only inside that row
    bench = load_bench("gpu_sweep")
    monkeypatch.setattr(bench, "TUNED", {"head_sample": [((256,), {"chunks": 8})]})
    with bench.variant("tuned"):
        assert kernels._tuned == {"head_sample": [((256,), {"chunks": 8})]}
    with bench.variant("kernels"):
        assert kernels._tuned == {}
    assert kernels._tuned == {}


def test_bench_gpu_quant_tiny_dry_run(tmp_path):
    """bench/gpu_quant.py --tiny: every scheme's rows, quantized weights smaller than bf16's."""
    bench = load_bench("gpu_quant")
    out = tmp_path / "q.json"
    assert bench.main(["--tiny", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert not r.get("errors"), r.get("errors")
    rows = {(x["scheme"], x["canvases"]): x for x in r["rows"]}
    assert set(rows) == {(s, b) for s in ("bf16", "fp8", "w4a16") for b in (1, 2)}
    assert all(x["ms_per_forward"] > 0 and x["roofline_ms"] > 0 for x in r["rows"])
    experts = {s: rows[(s, 1)]["weight_bytes_by_part"]["experts"] for s in ("bf16", "fp8", "w4a16")}
    assert experts["w4a16"] < experts["fp8"] < experts["bf16"]


def test_sweep_times_the_engines_own_step(monkeypatch):
    # ms per forward is the production step (engine/denoise.py denoise_step with the head the engine picks),
    # once per denoising step, not a copy of it
    sw = load_bench("gpu_sweep")
    from engine.heads import ChunkedSweepHead
    from model import DiffusionGemmaConfig

    heads, real = [], sw.denoise_step
    monkeypatch.setattr(sw, "denoise_step", lambda m, c, st, head: heads.append(head) or real(m, c, st, head))
    cfg = DiffusionGemmaConfig.tiny()
    m = sw.build_model(cfg, torch.device("cpu"), torch.float32)
    with kernels.use_backend("torch"):
        r = sw.run_canvas(m, cfg, torch.device("cpu"), 2, 3, 24)
    assert len(heads) == 3 and all(type(h) is ChunkedSweepHead for h in heads)  # the CPU engine's head
    assert 0 < r["decoder_s"] <= r["loop_s"] and r["capture_s"] == 0.0
