"""Every Triton kernel compiles for an H100 (sm_90) on this CPU: bench/compile_sm90.py's compile-only launch
through each op's self-check, and the tile configurations bench/gpu.py sweeps fit the H100's shared memory.

The interpreter tests check what the kernels compute; these check that the compiled kernels exist at all
(most were written after the last GPU session, so nothing else has compiled them) and do not spill registers.
"""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import _triton_compat
from tests.kernels.kernel_checks import load_bench

cs = load_bench("compile_sm90")
pytestmark = [
    pytest.mark.skipif(not _triton_compat.HAS_TRITON or cs.toolchain() is None,
                       reason="needs Triton's NVIDIA backend tools (ptxas, cuobjdump)"),
    pytest.mark.skipif(_triton_compat._LANG_INTERPRETED,
                       reason="triton was imported under TRITON_INTERPRET=1; compiled mode is unavailable"),
]

# every kernel each dispatched op launches on a GPU
EXPECTED = {
    "fused_sample": {"_fused_sample_kernel"}, "head_sample": {"_fused_sample_kernel"},
    "derive_keys": {"_derive_keys_kernel"},
    "fused_moe": {"_count_kernel", "_layout_kernel", "_scatter_kernel", "_gate_up_kernel", "_down_kernel",
                  "_combine_kernel"},
    "canvas_attention": {"_canvas_attn_kernel"}, "rms_norm": {"_rms_norm_kernel"},
    "norm_rope": {"_norm_rope_kernel"}, "logit_epilogue": {"_epilogue_kernel"},
    "softmax": {"_softmax_kernel"},
    "route": {"_router_norm_kernel", "_router_topk_kernel"}, "gelu_mul": {"_gelu_mul_kernel"},
    "rms_norm_pair": {"_rms_norm_pair_kernel"},
    "quant_linear": {"_quant_linear_kernel"},
    # fused_moe's kernels, with the weight tiles dequantized in registers
    "quant_moe": {"_count_kernel", "_layout_kernel", "_scatter_kernel", "_gate_up_kernel", "_down_kernel",
                  "_combine_kernel"},
}


def test_every_dispatched_kernel_compiles_for_sm90(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert set(EXPECTED) == set(kernels._OPS), "a new op needs its kernels listed here"
    with cs.compile_only(90) as found:
        for op, (_, _, mod) in kernels._OPS.items():
            cs.compile_only.case = op
            mod.selfcheck(torch.device("cpu"))  # launches compile only: its comparison is meaningless here
    got: dict[str, set[str]] = {}
    for c in found:
        got.setdefault(c.case, set()).add(c.kernel)
        assert c.shared <= cs.SM90["smem_per_block"], f"{c.case}/{c.kernel}: {c.shared} B of shared memory"
        assert c.local == 0, f"{c.case}/{c.kernel}: {c.local} B of register spills"
        assert 0 < c.regs <= 255
    assert got == EXPECTED


def test_the_bench_tile_sweeps_fit_sm90(monkeypatch):
    """Every configuration bench/gpu.py sweeps compiles at the real shapes (8 canvases: the largest default
    block_m) and fits in the H100's shared memory, so no GPU time goes to tiles that cannot launch."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    from model import DiffusionGemmaConfig

    cases = cs.real_cases(DiffusionGemmaConfig.full_size(), tiles=True, canvases=(8,))
    picked = {g: [c for c in cases[g] if " tile " in c[0]] for g in ("moe", "attention")}
    picked["sampler"] = [c for c in cases["sampler"] if "column chunks" in c[0]]  # its merge kernel too
    rows = cs.run_cases(picked)
    assert rows and not [r for r in rows if r.get("error")], [r for r in rows if r.get("error")]
    over = [(r["case"], r["kernel"], r["shared"]) for r in rows if not r["fits_smem"]]
    assert not over, over
    gk = load_bench("gpu_kernels")
    n_attn = sum(len([t for t in v if t != (None,) * 5]) for v in gk.ATTN_TILES.values())
    n_moe = len(gk.MOE_TILES) + len(gk.MOE_DOWN_TILES)
    assert (len(picked["moe"]), len(picked["attention"])) == (n_moe, n_attn)
    # the key-split entries compile their merge kernel too
    merged = {r["case"] for r in rows if r["kernel"] == "_merge_splits_kernel"}
    assert merged and all(" split" in case for case in merged), merged
    assert {r["kernel"] for r in rows if "column chunks" in r["case"]} == {"_fused_sample_kernel",
                                                                         "_merge_chunks_kernel"}
