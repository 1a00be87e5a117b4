"""bench/gpu.py --tiny runs end to end on CPU (torch backend) and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import kernels


def test_bench_gpu_tiny_dry_run(tmp_path):
    path = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
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
