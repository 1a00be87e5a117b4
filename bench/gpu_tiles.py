"""bench/gpu.py's section 4: the fused_moe and canvas_attention tile sweeps at 1 and 8 canvases over the lists
in bench/gpu_kernels.py (MOE_TILES, MOE_DOWN_TILES, ATTN_TILES), whose fastest entries pick the launchers'
defaults on a card and the sweep's "tuned" row (bench/decide.py).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from gpu_kernels import ATTN_TILES, MOE_DOWN_TILES, MOE_TILES, moe_tokens, moe_weights, ms  # noqa: E402

from kernels.canvas_attention import canvas_attention_torch, canvas_attention_triton  # noqa: E402
from kernels.fused_moe import fused_moe_triton  # noqa: E402


def moe_tiles(dev, cfg, budget_end, canvases=(1, 8)):
    """fused_moe over MOE_TILES at 1 and 8 canvases (each config at both, so a cut run keeps both sizes),
    then over MOE_DOWN_TILES for the down GEMM with the rest pinned to each size's fastest entry so far (the
    last fifth of the budget is kept for those); each row: config, ms, GB/s of expert weights."""
    C = cfg.canvas_length
    g = torch.Generator(device="cpu").manual_seed(1)
    gu, dn = moe_weights(dev, cfg, g)
    rows = []
    inputs = {}
    for canv in canvases:
        x, idx, w, wbytes = moe_tokens(dev, cfg, g, canv * C)
        inputs[canv * C] = (x, idx, w, wbytes, fused_moe_triton(x, idx, w, gu, dn).float())
    shared_end = time.perf_counter() + 0.8 * (budget_end - time.perf_counter())

    def measure(row, end, **kw):
        x, idx, w, wbytes, ref = inputs[row["T"]]
        if time.perf_counter() > end:
            rows.append(row | {"error": "skipped: time budget"})
            return
        try:
            fn = functools.partial(fused_moe_triton, **kw)
            err = (fn(x, idx, w, gu, dn).float() - ref).abs().max().item()
            t_ms = ms(dev, fn, x, idx, w, gu, dn, reps=10)
            rows.append(row | {"ms": t_ms, "weight_GBps": wbytes / t_ms / 1e6, "max_diff_default": err})
        except Exception as e:  # noqa: BLE001 - e.g. shared memory exceeded for a big tile
            rows.append(row | {"error": f"{type(e).__name__}: {e}"[:200]})
        print(json.dumps(rows[-1]), flush=True)

    for bm, bn, bk, nw, ns in MOE_TILES:
        for T in inputs:
            row = {"T": T, "block_m": bm, "block_n": bn, "block_k": bk, "num_warps": nw, "num_stages": ns}
            measure(row, shared_end, block_m=bm, block_n=bn, block_k=bk, num_warps=nw, num_stages=ns)
    best = {T: min((r for r in rows if r["T"] == T and "ms" in r), key=lambda r: r["ms"], default=None)
            for T in inputs}
    for down in MOE_DOWN_TILES:
        for T, b in best.items():
            if b is None:
                continue
            tile = {k: b[k] for k in ("block_m", "block_n", "block_k", "num_warps", "num_stages")}
            measure({"T": T} | tile | {"down_tile": list(down)}, budget_end, **tile, down_tile=down)
    return rows


def attention_tiles(dev, cfg, budget_end, context=1024):
    """canvas_attention_triton over ATTN_TILES at 1 and 8 canvases, 1k context; rows: config, ms, TFLOP/s."""
    t, C = cfg.text, cfg.canvas_length
    g = torch.Generator(device="cpu").manual_seed(2)
    rows = []
    for i in sorted({t.layer_types.index(lt) for lt in set(t.layer_types)}):
        K, D, Hq, S = t.layer_kv_heads(i), t.layer_head_dim(i), t.num_attention_heads, context
        for B in (1, 8):
            mk = lambda *s: (torch.randn(*s, generator=g) * 0.1).to(dev, torch.bfloat16)  # noqa: E731
            args = (mk(B, Hq, C, D), mk(B, K, S, D), mk(B, K, S, D), torch.ones(B, S, dtype=torch.bool,
                                                                                   device=dev),
                    mk(B, K, C, D), mk(B, K, C, D))
            ref = canvas_attention_torch(*args).float()
            for bm, bn, bdv, splits, warps in ATTN_TILES.get(D, [(None,) * 5]):
                row = {"B": B, "D": D, "block_m": bm, "block_n": bn, "block_dv": bdv, "num_splits": splits,
                       "num_warps": warps}
                if time.perf_counter() > budget_end:
                    rows.append(row | {"error": "skipped: time budget"})
                    continue
                try:
                    fn = functools.partial(canvas_attention_triton, block_m=bm, block_n=bn, block_dv=bdv,
                                           num_splits=splits or 1, num_warps=warps)
                    err = (fn(*args).float() - ref).abs().max().item()
                    t_ms = ms(dev, fn, *args, reps=10)
                    fl = 4 * B * Hq * C * (S + C) * D
                    rows.append(row | {"ms": t_ms, "TFLOPs": fl / t_ms / 1e9, "max_diff": err})
                except Exception as e:  # noqa: BLE001 - e.g. shared memory exceeded for a big tile
                    rows.append(row | {"error": f"{type(e).__name__}: {e}"[:200]})
                print(json.dumps(rows[-1]), flush=True)
    return rows
