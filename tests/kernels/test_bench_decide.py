"""bench/decide.py ranks what a bench/gpu.py run measured (synthetic results shaped like a GPU run's)."""

from __future__ import annotations

import json

from kernel_checks import load_bench

RESULTS = {
    "calibrate": {"copy_bw_GBps": 3000.0},
    "kernels": [
        {"kernel": "canvas_attention", "shape": "B=8 H=16 K=8 C=256 S=1024 D=256", "torch_ms": 0.92,
         "triton_ms": 1.01, "sdpa_ms": 0.41, "sdpa_efficient_attention_ms": 0.40,
         "sdpa_cudnn_attention_error": "RuntimeError: rejected"},
        {"kernel": "fused_moe", "shape": "T=256 H=2816 E=128 k=8 Im=704", "weight_bytes": 1.5e9,
         "torch_ms": 13.6, "triton_ms": 0.96, "grouped_ms": 0.70},
        {"kernel": "fused_sample", "shape": "N=256 V=262144", "torch_ms": 10.0},
        {"kernel": "head_sample", "shape": "N=256 V=262144 (statistics, no sample)", "torch_ms": 9.0,
         "chunks1_ms": 0.5, "chunks1_same_argmax": True, "chunks8_ms": 0.2, "chunks8_same_argmax": True,
         "chunks16_ms": 0.25, "chunks16_same_argmax": False, "chunks8_GBps": 670.0},
    ],
    "attention_tiles": [{"B": 8, "D": 256, "block_m": 128, "block_n": 64, "block_dv": 256, "ms": 0.35},
                        {"B": 8, "D": 256, "block_m": 64, "block_n": 64, "block_dv": 256, "ms": 0.55},
                        {"B": 1, "D": 256, "block_m": 64, "block_n": 64, "block_dv": 256, "ms": 0.1},
                        {"B": 8, "D": 256, "block_m": 32, "block_n": None, "block_dv": None, "num_splits": 2,
                         "num_warps": 4, "ms": 0.3}],
    "moe_tiles": [{"T": 256, "block_m": 32, "block_n": 128, "block_k": 128, "num_warps": 8, "num_stages": 3,
                   "ms": 0.625},
                  {"T": 2048, "block_m": 128, "block_n": 128, "block_k": 64, "num_warps": 8, "num_stages": 4,
                   "ms": 0.6},
                  {"T": 256, "block_m": 32, "block_n": 128, "block_k": 128, "num_warps": 8, "num_stages": 3,
                   "down_tile": [128, 64, 4, 4], "ms": 0.65}],
    "sweep": [{"variant": "kernels", "canvases": 8, "steps": 8, "ms_per_forward": 90.0},
              {"variant": "sdpa", "canvases": 8, "steps": 8, "ms_per_forward": 70.0},
              {"variant": "graph", "canvases": 8, "steps": 8, "error": "RuntimeError: capture"},
              {"variant": "kernels", "canvases": 1, "steps": 16, "ms_per_forward": 40.0}],
}


def test_each_shape_ranked_fastest_first(tmp_path, capsys):
    lines = load_bench("decide").decisions(RESULTS)
    att, moe, smp, sweep = lines
    # attention: the best sweep tile of this shape only, SDPA per backend, rejected backends left out
    # (a tile names only what it set: the launcher chose n and dv here)
    assert att == ("canvas_attention D=256 B=8: triton[m32 split2 w4] 0.300 "
                   "< sdpa_efficient_attention 0.400 < sdpa 0.410 < torch 0.920 < triton 1.010 ms")
    unset = {"block_m": None, "block_n": None, "block_dv": None, "num_splits": None, "num_warps": None}
    assert load_bench("decide").attention_tile(unset) == "default"
    # MoE: the best tile beats grouped here; 1.5 GB in 0.625 ms at 3 TB/s copy bandwidth is 80%
    assert moe.startswith("fused_moe T=256: triton[m32 n128 k128 w8 s3] 0.625 < grouped 0.700 < triton 0.960")
    assert moe.endswith("streams the experts at 80% of copy bandwidth (target 80%)")
    # sampler: every chunk count ranked; a count whose argmax differed from one pass is called out
    assert smp == ("head_sample N=256: chunks8 0.200 < chunks16 0.250 < chunks1 0.500 < torch 9.000 ms; "
                   "argmax differs from one pass with chunks16 (a bug)")
    # sweep: only sizes with two variants that ran; the failed graph row is not a candidate
    assert sweep == "sweep 8 canvases x 8 steps, ms per forward: sdpa 70.000 < kernels 90.000"
    p = tmp_path / "r.json"
    p.write_text(json.dumps(RESULTS))
    assert load_bench("decide").main([str(p)]) == 0
    assert "sdpa 70.000 < kernels 90.000" in capsys.readouterr().out


def test_tuned_settings_are_the_fastest_measured_and_load(capsys, tmp_path):
    # what the "tuned" sweep row runs with: the fastest tile per size (None left to the launcher), attention
    # preferred over torch only where its tile beat the torch reference, chunk counts whose argmax agreed
    decide = load_bench("decide")
    tuned = decide.tuned_settings(RESULTS)
    assert tuned["fused_moe"] == [((256,), {"block_m": 32, "block_n": 128, "block_k": 128, "num_warps": 8,
                                            "num_stages": 3}),
                                  ((2048,), {"block_m": 128, "block_n": 128, "block_k": 64, "num_warps": 8,
                                             "num_stages": 4})]
    assert tuned["canvas_attention"] == [((256, 1), {"block_m": 64, "block_n": 64, "block_dv": 256}),
                                         ((256, 8), {"block_m": 32, "num_splits": 2, "num_warps": 4,
                                                     "prefer_triton": True})]
    assert tuned["head_sample"] == [((256,), {"chunks": 8})]
    slow_moe = dict(RESULTS, moe_tiles=RESULTS["moe_tiles"][:2] + [dict(RESULTS["moe_tiles"][2], ms=0.5)])
    assert decide.tuned_settings(slow_moe)["fused_moe"][0][1]["down_tile"] == (128, 64, 4, 4)
    import kernels

    with kernels.use_tuned(tuned):  # the dispatch accepts what decide writes
        assert kernels._tuned["head_sample"] == [((256,), {"chunks": 8})]
    p = tmp_path / "r.json"
    p.write_text(json.dumps(RESULTS))
    assert decide.main([str(p)]) == 0
    assert "tuned head_sample: (256,) {'chunks': 8}" in capsys.readouterr().out
