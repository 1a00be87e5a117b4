"""GPU benchmark in one prepared run (< 8 minutes on one H100): what dgbatch's decoder step costs and how far
it is from the roofline, kernel by kernel and end to end, with the transformers reference in the same run.

Sections (each guarded: a failure is recorded in the JSON and the run goes on):
1. calibrate: HBM bandwidth (large copy) and bf16 GEMM rate.
2. kernels: every kernel at real shapes, Triton vs its torch reference (bench/gpu_kernels.py).
3. sweep (bench/gpu_sweep.py): full-size DiffusionGemma with random bf16 weights (meta build, materialised on
   the GPU), 1k context, canvases per forward x fixed steps: ms per forward, tokens/s with and without
   prefill, % of roofline. A forward is the engine's own step (engine/denoise.py denoise_step with the
   vocabulary head engine/heads.py picks for the card): decoder, head, statistics of every position, the
   commit rule, the Gumbel sample of the kept ones, renoise. Variant "kernels" routes MoE and canvas
   attention through kernels/; "model" is model/ as written (its other ops go through kernels/ dispatch);
   "unfused" is "kernels" with every small-op kernel (norms, router, gated GELU, logit epilogue, softmax,
   stream keys, the sampler's head mode) forced to its torch reference: the A/B for launch and logit-pass
   fusion (the engine then materialises the fp32 logits: engine/heads.py MaterialisedHead).
   Variant "sdpa" is "kernels" with every decoder attention through PyTorch's fused SDPA (K/V heads repeated,
   boolean mask): the end-to-end A/B for the shapes where the Triton kernel measured slower. Variant
   "grouped" is "kernels" with the routed experts through PyTorch's grouped GEMM (CUTLASS): the A/B for the
   Triton MoE GEMMs.
   Variant "graph" is "kernels" with each canvas's decoder forward (decode_hidden) captured once in a CUDA
   graph and replayed for the remaining steps (capture time reported apart): how much of a step is launch
   overhead.
   On failure (a host sync or host->device copy inside the forward) the row records the error.
   Variant "tuned" (GPU only) is "kernels" with the fastest launch settings section 4 measured (MoE and
   attention tiles, attention key splits, sampler column chunks; `kernels.use_tuned`), so one run shows
   what the sweeps' choices do end to end before any default changes.
4. moe_tiles / attention_tiles: fused_moe and canvas_attention tile sweeps at 1 and 8 canvases
   (bench/gpu_tiles.py), to pick the launchers' defaults on this card; they run before the sweep, and
   their fastest entries (with the sampler's chunk counts from section 2) become "tuned" (bench/decide.py).
5. profile: CUDA-time kernel breakdown of one forward.
6. reference: transformers DiffusionGemmaForBlockDiffusion (random weights) generate() with fixed steps
   (confidence_threshold=None) at the same settings, for the ratio.

Usage: python bench/gpu.py [--tiny] [--out results.json]   (--tiny: CPU, tiny config, torch backend, seconds)
       python bench/gpu.py --layers 12 --ratio-only          (the ratio to transformers on 12 layers only)
JSON goes to --out, else $OUT/bench_gpu.json when $OUT is set.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from decide import attention_tile, decisions, moe_tile, tuned_settings  # noqa: E402
from gpu_kernels import bench_kernels, ms, sync  # noqa: E402

# run_canvas and variant: re-exported for bench/gpu_quant.py
from gpu_sweep import TUNED, build_model, profile_forward, run_canvas, sweep, variant  # noqa: E402, F401
from gpu_tiles import attention_tiles, moe_tiles  # noqa: E402

import kernels  # noqa: E402
from model import DiffusionGemmaConfig  # noqa: E402
from model.config import PLACEHOLDER_VISION_CONFIG  # noqa: E402


def guarded(results, name):
    """Run a section; on error record the traceback instead of aborting the whole benchmark."""
    @contextlib.contextmanager
    def cm():
        t = time.perf_counter()
        try:
            yield
        except Exception as e:  # noqa: BLE001 - a benchmark section must not take the others down
            tb = traceback.format_exc()[-1500:]
            results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}\n{tb}"
            print(f"[{name}] FAILED: {type(e).__name__}: {e}", flush=True)
        finally:
            results.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return cm()


# ---- 1. calibration ---------------------------------------------------------------------------------------
def calibrate(dev, tiny):
    n = (1 << 24) if tiny else (1 << 30)  # bf16 elements: 32 MiB / 2 GiB
    a = torch.empty(n, dtype=torch.bfloat16, device=dev).normal_()
    b = torch.empty_like(a)
    bw = 2 * a.numel() * 2 / ms(dev, b.copy_, a) * 1e3
    a = b = None
    m = 512 if tiny else 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    y = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    flops = 2 * m**3 / ms(dev, torch.matmul, x, y) * 1e3
    return {"copy_bw_GBps": bw / 1e9, "bf16_gemm_TFLOPs": flops / 1e12}


# ---- 5. transformers reference -----------------------------------------------------------------------------
def build_hf(cfg, dev, dtype):
    from transformers import DiffusionGemmaConfig as HFConfig
    from transformers import DiffusionGemmaForBlockDiffusion

    hcfg = HFConfig(text_config=cfg.text.to_dict(), vision_config=PLACEHOLDER_VISION_CONFIG,
                    canvas_length=cfg.canvas_length)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):  # built and randomly initialised on the device (its rotary buffers stay real)
            hf = DiffusionGemmaForBlockDiffusion(hcfg)
    finally:
        torch.set_default_dtype(old)
    return hf.eval()


@torch.no_grad()
def run_hf(hf, cfg, dev, B, N, ctx):
    C, V = cfg.canvas_length, cfg.text.vocab_size
    calls = []
    h = hf.model.decoder.register_forward_hook(lambda *a: calls.append(1))
    ids = torch.randint(3, V, (B, ctx), device=dev)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=C, max_denoising_steps=N,
              confidence_threshold=None)
    try:
        hf.generate(ids, **dict(kw, max_denoising_steps=1))  # warm-up
        calls.clear()
        sync(dev)
        t0 = time.perf_counter()
        hf.generate(ids, **kw)
        sync(dev)
        dt = time.perf_counter() - t0
    finally:
        h.remove()
    return {"canvases": B, "steps": N, "decoder_forwards": len(calls), "e2e_s": dt, "tok_s_e2e": B * C / dt}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", "--dry-run", action="store_true", help="CPU, tiny config, torch backend")
    p.add_argument("--out", default=None)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--layers", type=int, default=0,
                   help="keep only the first N decoder layers (both implementations), e.g. to fit the "
                        "reference's construction peak on an 80 GB card")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="wall budget: sweep rows start before 55%% of it (85%% with --skip-hf), reference "
                        "runs before 85%%")
    p.add_argument("--ratio-only", action="store_true",
                   help="only what the ratio to transformers needs: calibration, our sweep rows at the "
                        "reference's settings, the reference (the kernel sections already ran at full size)")
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.tiny else torch.get_num_threads())
    dev = torch.device("cpu" if a.tiny or not torch.cuda.is_available() else "cuda")
    cfg = DiffusionGemmaConfig.tiny() if a.tiny else DiffusionGemmaConfig.full_size()
    if a.layers:
        import dataclasses

        t = cfg.text
        n = min(a.layers, t.num_hidden_layers)
        t = dataclasses.replace(t, num_hidden_layers=n, layer_types=tuple(t.layer_types[:n]),
                                per_layer_config={i: c for i, c in t.per_layer_config.items() if i < n})
        cfg = dataclasses.replace(cfg, text=t)
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    a.ctx = 24 if a.tiny else 1024
    a.canvases, a.steps = ([1, 2], [2, 3]) if a.tiny else ([1, 2, 4, 8, 16], [8, 16])
    a.model_canvases = [1] if a.tiny else [1, 8]
    hf_plan = a.hf_plan = [(1, 3)] if a.tiny else [(1, 16), (8, 16), (4, 16)]
    a.sweep_until = 0.85 if a.skip_hf else 0.55  # the reference needs the rest when it runs
    if a.ratio_only and a.skip_hf:
        p.error("--ratio-only measures the ratio to transformers; it cannot skip the reference")
    with kernels.use_backend("torch" if a.tiny else kernels.get_backend()):
        return _run(a, dev, cfg, dtype, hf_plan)


def _run(a, dev, cfg, dtype, hf_plan) -> int:
    results = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "tiny": a.tiny,
               "ctx": a.ctx, "canvas_length": cfg.canvas_length, "torch": torch.__version__}
    t_start = a.t_start = time.perf_counter()
    out = a.out or (os.path.join(os.environ["OUT"], "bench_gpu.json") if os.environ.get("OUT") else None)

    def dump():  # after every section, so a run stopped by its time limit still leaves what it measured
        results["total_s"] = time.perf_counter() - t_start
        results["triton_selfcheck"] = {f"{op}@{d}": ok for (op, d), ok in kernels._selfcheck.items()}
        if out:
            Path(out).write_text(json.dumps(results, indent=2, default=str))

    cal = {"copy_bw_GBps": 1.0, "bf16_gemm_TFLOPs": 0.01}
    with guarded(results, "calibrate"):
        cal = results["calibrate"] = calibrate(dev, a.tiny)
        print("calibrate", cal, flush=True)
    dump()
    if not a.ratio_only:
        with guarded(results, "kernels"):
            results["kernels"] = bench_kernels(dev, a.tiny, cfg)
            for r in results["kernels"]:
                if "triton_weight_GBps" in r:  # the MoE target: share of the copy bandwidth measured above
                    r["pct_of_copy_bw"] = 100 * r["triton_weight_GBps"] / cal["copy_bw_GBps"]
                print(json.dumps(r), flush=True)
        dump()
    if dev.type == "cuda" and not a.ratio_only:
        with guarded(results, "moe_tiles"):
            results["moe_tiles"] = moe_tiles(dev, cfg, t_start + 0.25 * a.budget_s)
            for r in results["moe_tiles"]:
                if "weight_GBps" in r:
                    r["pct_of_copy_bw"] = 100 * r["weight_GBps"] / cal["copy_bw_GBps"]
        dump()
        with guarded(results, "attention_tiles"):
            results["attention_tiles"] = attention_tiles(dev, cfg, t_start + 0.33 * a.budget_s)
        dump()
        with guarded(results, "tuned"):
            settings = tuned_settings(results)
            kernels.set_tuned(settings)  # checked now (a bad entry leaves TUNED empty: no "tuned" row)
            kernels.set_tuned(None)
            TUNED.clear()
            TUNED.update(settings)
            results["tuned"] = TUNED
    m = None
    with guarded(results, "sweep"):
        m = build_model(cfg, dev, dtype)
        sweep(m, cfg, dev, a, cal, results)
    dump()
    with guarded(results, "profile"):
        # (the profiler's start-up alone is seconds on CPU)
        if m is not None and not a.tiny and not a.ratio_only:
            profile_forward(m, cfg, dev, a, results)
    dump()
    if m is not None:  # free the weights even if a failed section's traceback still references the module
        m.to_empty(device="meta")
    del m
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if not a.skip_hf:
        with guarded(results, "reference"):
            hf = build_hf(cfg, dev, dtype)
            results["reference"] = []
            for B, N in hf_plan:
                if time.perf_counter() - t_start > 0.85 * a.budget_s:
                    results["reference"].append({"canvases": B, "steps": N, "skipped": "time budget"})
                    continue
                results["reference"].append(run_hf(hf, cfg, dev, B, N, a.ctx))
                print("reference", results["reference"][-1], flush=True)
                dump()
            ours = {(r["canvases"], r["steps"]): r for r in results.get("sweep", [])
                    if r.get("variant") == "kernels"}
            for r in results["reference"]:
                o = ours.get((r["canvases"], r["steps"]))
                if o and "tok_s_e2e" in o and "tok_s_e2e" in r:
                    r["ours_over_reference_e2e"] = o["tok_s_e2e"] / r["tok_s_e2e"]
    dump()
    print_table(results)
    if out:
        print("wrote", out)
    return 1 if results.get("errors") else 0


def print_table(results):
    print(f"\n== {results['device']}  ctx={results['ctx']}  total {results.get('total_s', 0):.0f}s")
    for r in results.get("kernels", []):
        tri = f"triton {r['triton_ms']:.3f} ms ({r['speedup_vs_torch']:.1f}x)" if "triton_ms" in r else ""
        if "pct_of_copy_bw" in r:
            tri += f" weights {r['triton_weight_GBps']:.0f} GB/s = {r['pct_of_copy_bw']:.0f}% of copy bw"
        print(f"  {r['kernel']:17s} {r['shape']:40s} torch {r['torch_ms']:.3f} ms  {tri}")
        alts = [f"{name[:-3]} {r[name]:.3f}" for name in sorted(r) if name.endswith("_ms") and
                (name.startswith("sdpa") or name.startswith("grouped"))]
        if alts:  # the PyTorch candidates (SDPA per backend, the grouped GEMM), ms
            print(f"  {'':17s} {'':40s} " + ", ".join(alts))
    tiles = [r for r in results.get("moe_tiles", []) if "weight_GBps" in r]
    for T in sorted({r["T"] for r in tiles}):
        best = max((r for r in tiles if r["T"] == T), key=lambda r: r["weight_GBps"])
        print(f"  fused_moe best tile at T={T}: {moe_tile(best)} {best['ms']:.3f} ms, "
              f"{best['pct_of_copy_bw']:.0f}% of copy bw")
    att = [r for r in results.get("attention_tiles", []) if "ms" in r]
    for key in sorted({(r["D"], r["B"]) for r in att}):
        best = min((r for r in att if (r["D"], r["B"]) == key), key=lambda r: r["ms"])
        print(f"  canvas_attention best tile at D={key[0]} B={key[1]}: {attention_tile(best)} "
              f"{best['ms']:.3f} ms, {best['TFLOPs']:.0f} TFLOP/s")
    print(f"  {'variant':8s} {'canv':>4s} {'steps':>5s} {'ms/fwd':>8s} {'tok/s':>9s} {'tok/s e2e':>9s} "
          f"{'%roof':>6s}")
    for r in results.get("sweep", []):
        if "error" in r:
            print(f"  {r['variant']:8s} {r['canvases']:4d} {r['steps']:5d}  {r['error'][:60]}")
            continue
        print(f"  {r['variant']:8s} {r['canvases']:4d} {r['steps']:5d} {r['ms_per_forward']:8.1f} "
              f"{r['tok_s_no_prefill']:9.1f} {r['tok_s_e2e']:9.1f} {r['pct_roofline']:6.1f}")
    for r in results.get("reference", []):
        if "skipped" in r:
            print(f"  reference canv={r['canvases']} steps={r['steps']} {r['skipped']}")
            continue
        print(f"  reference canv={r['canvases']} steps={r['steps']} fwd={r['decoder_forwards']} "
              f"tok/s e2e {r['tok_s_e2e']:.1f}"
              f"  ours/ref {r.get('ours_over_reference_e2e', float('nan')):.2f}")
    for k, v in results.get("errors", {}).items():
        print(f"  ERROR {k}: {v.splitlines()[0]}")
    lines = decisions(results)
    if lines:  # the fastest measured form of each kernel and each sweep size (bench/decide.py)
        print("  -- fastest first")
        for line in lines:
            print("  " + line)
    for op, entries in results.get("tuned", {}).items():  # the "tuned" row's settings
        print(f"  tuned {op}: " + "; ".join(f"{tuple(key)} {kw}" for key, kw in entries))


if __name__ == "__main__":
    sys.exit(main())
