"""GPU benchmark of quantized weights: the full-size decoder step with bf16, FP8 and W4A16 weights at 1 and 8
canvases (ms per forward, tokens/s, % of the roofline for the bytes each scheme actually streams).

Each scheme gets the same random bf16 model (same seed, meta build materialised on the GPU, bench/gpu.py
`build_model`), quantized in place by model/quant/modules.py `quantize_model` (the rounding of quantizing
on load), then bench/gpu.py's `run_canvas`: prefill 1k context, one canvas of fixed denoising steps as the
engine runs it. The model is rebuilt per scheme (bf16 and fp8 copies together would not fit 80 GB).
Roofline: max(bytes / copy bandwidth, flops / bf16 GEMM rate) with the bytes of the stored (packed) weights,
experts counted by the fraction the step's tokens touch; dequantization flops are not counted.

Usage: python bench/gpu_quant.py [--tiny] [--schemes bf16,fp8,w4a16] [--out results.json]
(--tiny: CPU, tiny config, torch references, seconds). JSON to --out, else $OUT/bench_gpu_quant.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from gpu import build_model, calibrate, guarded, run_canvas, variant  # noqa: E402

import kernels  # noqa: E402
from model import DiffusionGemmaConfig  # noqa: E402
from model.quant.modules import quantize_model  # noqa: E402
from model.quant.scheme import QuantScheme  # noqa: E402
from model.weights import checkpoint_layout  # noqa: E402


def stored_bytes(m) -> dict[str, int]:
    """Bytes of the stored weights by part: experts, embedding, everything else (packed sizes)."""
    out = {"experts": 0, "embedding": 0, "other": 0}
    for name, t in list(m.named_parameters()) + list(m.named_buffers()):
        part = ("experts" if ".experts." in name else "embedding" if name.startswith("embed_tokens")
                else "other")
        out[part] += t.numel() * t.element_size()
    return out


def roofline_ms(m, cfg, B, ctx, bw, peak) -> float:
    t, C = cfg.text, cfg.canvas_length
    T, E, k = B * C, t.num_experts, t.top_k_experts
    b = stored_bytes(m)
    touched = 1 - (1 - k / E) ** T  # expected fraction of experts hit by T tokens
    # logical parameter counts (the packed buffers do not give them), from the checkpoint key map
    numel = {key: math.prod(shape) for key, (_, shape) in checkpoint_layout(cfg).items()}
    n_exp = sum(v for key, v in numel.items() if ".experts." in key)
    n_emb = t.vocab_size * t.hidden_size
    n_other = sum(numel.values()) - n_exp - n_emb
    nbytes = b["other"] + b["experts"] * touched + 2 * b["embedding"] + 4 * 4 * T * t.vocab_size
    flops = 2 * T * (n_other + n_exp * k / E) + 4 * T * n_emb
    for i in range(t.num_hidden_layers):
        S = ctx if not t.is_sliding(i) else min(ctx, t.sliding_window - 1)
        nbytes += 2 * 2 * B * t.layer_kv_heads(i) * S * t.layer_head_dim(i)
        flops += 4 * T * t.num_attention_heads * (S + C) * t.layer_head_dim(i)
    return 1e3 * max(nbytes / bw, flops / peak)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU, tiny config, torch references")
    p.add_argument("--schemes", default="bf16,fp8,w4a16")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    dev = torch.device("cpu" if a.tiny or not torch.cuda.is_available() else "cuda")
    cfg = DiffusionGemmaConfig.tiny() if a.tiny else DiffusionGemmaConfig.full_size()
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    ctx, steps, sizes = (24, 3, (1, 2)) if a.tiny else (1024, 16, (1, 8))
    results: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "ctx": ctx,
                     "steps": steps, "torch": torch.__version__, "rows": []}
    env_out = os.environ.get("OUT")
    out = a.out or (os.path.join(env_out, "bench_gpu_quant.json") if env_out else None)
    t0 = time.perf_counter()
    with kernels.use_backend("torch" if a.tiny else kernels.get_backend()):
        cal = calibrate(dev, a.tiny)
        results["calibrate"] = cal
        bw, peak = cal["copy_bw_GBps"] * 1e9, cal["bf16_gemm_TFLOPs"] * 1e12
        for scheme in a.schemes.split(","):
            with guarded(results, scheme):
                torch.manual_seed(0)
                m = build_model(cfg, dev, dtype)
                if scheme != "bf16":
                    quantize_model(m, QuantScheme.on_load(scheme))
                gc.collect()
                weights = stored_bytes(m)
                for B in sizes:
                    with variant("kernels"):
                        run_canvas(m, cfg, dev, B, 2, ctx)  # warm-up: Triton compile, allocator
                        r = run_canvas(m, cfg, dev, B, steps, ctx)
                    ms_fwd = 1e3 * r["decoder_s"] / steps
                    roof = roofline_ms(m, cfg, B, ctx, bw, peak)
                    results["rows"].append({
                        "scheme": scheme, "canvases": B, "ms_per_forward": ms_fwd,
                        "tok_s_no_prefill": B * cfg.canvas_length / r["loop_s"], "roofline_ms": roof,
                        "pct_roofline": 100 * roof / ms_fwd, "weight_bytes": sum(weights.values()),
                        "weight_bytes_by_part": weights})
                    print(json.dumps(results["rows"][-1]), flush=True)
                m.to_empty(device="meta")
                del m
                gc.collect()
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    results["total_s"] = time.perf_counter() - t0
    if out:
        Path(out).write_text(json.dumps(results, indent=2, default=str))
    for r in results["rows"]:
        print(f"{r['scheme']:>6} x{r['canvases']}: {r['ms_per_forward']:.2f} ms/forward, "
              f"{r['tok_s_no_prefill']:.0f} tok/s, {r['pct_roofline']:.0f}% of roofline, "
              f"weights {r['weight_bytes'] / 1e9:.2f} GB")
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
