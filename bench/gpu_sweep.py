"""bench/gpu.py's section 3, the full-model sweep: the engine's own denoising step (engine/denoise.py
denoise_step with the vocabulary head engine/heads.py `fast_head` picks for the device, as engine/fast.py runs
it) timed per step on one canvas of fixed steps, in A/B variants of the kernels' dispatch, against a roofline.

Owns: the model build (random weights materialised on the device), the variants ("kernels", "model",
"unfused", "sdpa", "grouped", "tuned", "graph": bench/gpu.py's docstring), `run_canvas` (prefill, then the
steps), the roofline, the sweep's plan and rows, and the profile of one step. Nothing here re-types the step:
"ms per forward" is one `denoise_step` (decoder forward, vocabulary head, sampler, commit rule, renoise).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from gpu_kernels import sync  # noqa: E402

import kernels  # noqa: E402
import model.moe  # noqa: E402
import model.transformer  # noqa: E402
from engine.denoise import CanvasBatch, RowHost, denoise_step  # noqa: E402
from engine.heads import fast_head  # noqa: E402
from engine.params import GenerationParams  # noqa: E402
from engine.sampler import RowKeys, RowNoise  # noqa: E402
from model import DiffusionGemma  # noqa: E402


def build_model(cfg, dev, dtype):
    """Meta build, then random weights materialised directly on `dev` (no host copy of 51 GB)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            m = DiffusionGemma(cfg)
    finally:
        torch.set_default_dtype(old)
    m = m.to_empty(device=dev)
    m.reset_parameters()
    return m.eval()


def _attend_adapter(torch_attend):
    """model/transformer.attend(q, [ctx;canvas] k, v, mask) -> kernels.canvas_attention for decoder masks."""
    def attend(q, k, v, mask):
        if mask.dim() == 3 and mask.shape[1] == 1 and mask.dtype == torch.bool:
            C = q.shape[2]
            S = k.shape[2] - C
            return kernels.canvas_attention(q, k[:, :, :S], v[:, :, :S], mask[:, 0, :S], k[:, :, S:],
                                            v[:, :, S:])
        return torch_attend(q, k, v, mask)
    return attend


# the kernels that fuse small ops (norms, router, gated GELU, logit epilogue, softmax, stream keys, the
# sampler's head mode): the "unfused" row forces them all to torch, the A/B for launch and logit-pass fusion
UNFUSED_OPS = ("rms_norm", "norm_rope", "rms_norm_pair", "route", "gelu_mul", "logit_epilogue", "softmax",
               "derive_keys", "head_sample")


# per-op backend overrides of the A/B variants (kernels/__init__.py): the fused small ops forced to torch, and
# PyTorch's fused alternatives for attention and the experts, each run by the engine's own dispatch
OVERRIDES = {"unfused": ("torch", UNFUSED_OPS), "sdpa": ("sdpa", ("canvas_attention",)),
             "grouped": ("grouped", ("fused_moe",))}


@contextlib.contextmanager
def variant(name):
    """"kernels": MoE and canvas attention through kernels/ dispatch; "model": model/ unchanged;
    "unfused": "kernels" with every small-op kernel (UNFUSED_OPS) forced to its torch reference;
    "sdpa": "kernels" with every decoder attention through PyTorch's SDPA (canvas_attention_sdpa);
    "grouped": "kernels" with the routed experts through PyTorch's grouped GEMM (fused_moe_grouped);
    "tuned": "kernels" with the fastest tiles, splits and chunks this run's kernel sweeps measured (TUNED)."""
    old = (model.moe.moe_forward, model.transformer.attend)
    if name != "model":
        model.moe.moe_forward = kernels.fused_moe
        model.transformer.attend = _attend_adapter(old[1])
    try:
        with (kernels.use_backend(*OVERRIDES[name]) if name in OVERRIDES else contextlib.nullcontext(),
              kernels.use_tuned(TUNED) if name == "tuned" else contextlib.nullcontext()):
            yield
    finally:
        model.moe.moe_forward, model.transformer.attend = old


class _GraphedDecode:
    """m.decode_hidden for one canvas's fixed shapes, installed on the model instance: captured in a CUDA
    graph on its first call with a self-conditioning input (after an eager warm-up) and replayed after, the
    step's canvas and soft embedding copied into static buffers; a canvas' first step (no self-conditioning)
    stays eager. Experiment for the benchmark: how much of a step's decoder forward is launch overhead."""

    def __init__(self, m):
        self.m, self.eager = m, m.decode_hidden
        self.graph, self.capture_s = None, 0.0

    def __call__(self, canvas_BC, cache, *, positions_BC, sc_soft_BCH=None, rows_B=None, len_range=None):
        kw = dict(positions_BC=positions_BC, rows_B=rows_B, len_range=len_range)
        if sc_soft_BCH is None:
            return self.eager(canvas_BC, cache, **kw)
        if self.graph is None:
            sync(canvas_BC.device)
            c0 = time.perf_counter()
            self._capture(canvas_BC, cache, sc_soft_BCH, kw)
            sync(canvas_BC.device)
            self.capture_s = time.perf_counter() - c0
        self.canvas.copy_(canvas_BC)
        self.soft.copy_(sc_soft_BCH)
        self.graph.replay()
        return self.out

    def _capture(self, canvas_BC, cache, soft_BCH, kw):
        # kw keeps the first step's positions alive: the graph reads them (the same values every step);
        # len_range comes from the host, so the capture holds no device read
        self.canvas, self.soft, self.kw = canvas_BC.clone(), soft_BCH.clone(), kw

        def run():
            return self.eager(self.canvas, cache, sc_soft_BCH=self.soft, **self.kw)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream (allocator, Triton, self-checks)
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = run()


@contextlib.contextmanager
def graphed_decode(m):
    """m.decode_hidden replaced by a _GraphedDecode for the duration (the model's own method after)."""
    g = _GraphedDecode(m)
    m.decode_hidden = g
    try:
        yield g
    finally:
        del m.decode_hidden


@torch.no_grad()
def run_canvas(m, cfg, dev, B, N, ctx, graph=False):
    """Prefill ctx tokens for B rows, then one canvas of N fixed denoising steps of the engine's own step
    (no adaptive stop; the default schedule and entropy bound) -> timings (s): prefill, the step loop, the
    steps themselves (each synchronised), and the graph variant's one-off capture (excluded from both)."""
    C, V = cfg.canvas_length, cfg.text.vocab_size
    cache = m.new_cache(B, ctx + C)
    ids = torch.randint(3, V, (B, ctx), device=dev)
    sync(dev)
    t0 = time.perf_counter()
    m.encode(ids, cache, positions_BT=torch.arange(ctx, device=dev).expand(B, ctx))
    sync(dev)
    t1 = time.perf_counter()
    noise = RowNoise()
    head = fast_head(noise, dev)  # as Engine.run picks it
    params = GenerationParams(max_new_tokens=C, max_denoising_steps=N, stability_threshold=None,
                              confidence_threshold=None)
    zeros = torch.zeros(B, dtype=torch.long, device=dev)
    keys = RowKeys(torch.arange(B, device=dev), zeros, zeros)
    rows = [RowHost(params, ctx, N) for _ in range(B)]  # every row's cache holds the ctx prompt tokens
    st = CanvasBatch.start(noise.init_canvas(keys, C, V, dev), keys, rows)
    steps = 0.0
    with graphed_decode(m) if graph else contextlib.nullcontext() as g:
        for _ in range(N):
            sync(dev)
            f0 = time.perf_counter()
            denoise_step(m, cache, st, head)
            sync(dev)
            steps += time.perf_counter() - f0
    sync(dev)
    t2 = time.perf_counter()
    capture = g.capture_s if graph else 0.0
    return {"prefill_s": t1 - t0, "loop_s": t2 - t1 - capture, "decoder_s": steps - capture,
            "capture_s": capture}


def roofline_s(m, cfg, B, ctx, bw, peak):
    """Lower bound for one decoder forward of B canvases: max(bytes / bw, flops / peak)."""
    t, C = cfg.text, cfg.canvas_length
    T, E, k = B * C, t.num_experts, t.top_k_experts
    n_exp = sum(p.numel() for n, p in m.named_parameters() if "experts" in n)
    n_emb = m.embed_tokens.weight.numel()
    n_other = sum(p.numel() for p in m.parameters()) - n_exp - n_emb
    touched = 1 - (1 - k / E) ** T  # expected fraction of experts hit by T tokens
    nbytes = 2 * (n_other + n_exp * touched + 2 * n_emb) + 4 * 4 * T * t.vocab_size
    flops = 2 * T * (n_other + n_exp * k / E) + 4 * T * n_emb
    for i in range(t.num_hidden_layers):
        S = ctx if not t.is_sliding(i) else min(ctx, t.sliding_window - 1)
        K, D = t.layer_kv_heads(i), t.layer_head_dim(i)
        nbytes += 2 * 2 * B * K * S * D
        flops += 4 * T * t.num_attention_heads * (S + C) * D
    return max(nbytes / bw, flops / peak)


AB_VARIANTS = ("kernels", "tuned", "sdpa", "grouped", "graph", "unfused", "model")
# the "tuned" row's launch settings (kernels.set_tuned's form), filled from this run's tile sweeps
TUNED: dict[str, list] = {}


def sweep_plan(args, dev) -> list[tuple[str, int, int]]:
    """(variant, canvases, steps) rows, most telling first, so a run that reaches its time budget drops the
    in-between rows rather than the ones decisions rest on: the headline sizes (1, 8, 16 canvases) at the
    longest step count; then every A/B variant at 8 canvases, then at 1 (at the shortest step count, beside
    "kernels" at the same count); then the other sizes. --ratio-only: just the reference's settings."""
    if args.ratio_only:
        return [("kernels", B, N) for B, N in args.hf_plan]
    plan = [("kernels", B, max(args.steps)) for B in (1, 8, 16) if B in args.canvases]
    # CUDA graphs need a GPU; "tuned" needs the tile sweeps (GPU only) to have found something
    ab = [v for v in AB_VARIANTS if (v != "graph" or dev.type == "cuda") and (v != "tuned" or TUNED)]
    plan += [(v, B, min(args.steps)) for B in sorted(args.model_canvases, reverse=True) for v in ab]
    plan += [("kernels", B, N) for N in sorted(args.steps, reverse=True) for B in args.canvases]
    return list(dict.fromkeys(plan))  # each row once, first place kept


def sweep(m, cfg, dev, args, cal, results):
    C = cfg.canvas_length
    # Roofline against the ceilings measured in this run (METHOD: datasheet rates are only leads).
    nom = {"bw": cal["copy_bw_GBps"] * 1e9, "flops": cal["bf16_gemm_TFLOPs"] * 1e12}
    rows = results["sweep"] = []
    plan = sweep_plan(args, dev)
    warmed = set()
    failed: dict[str, str] = {}  # variant -> its first error; its later rows are skipped, not retried
    for name, B, N in plan:
        if time.perf_counter() - args.t_start > args.sweep_until * args.budget_s:
            rows.append({"variant": name, "canvases": B, "steps": N, "error": "skipped: time budget"})
            continue
        if name in failed:
            rows.append({"variant": name, "canvases": B, "steps": N, "error": f"skipped: {failed[name]}"})
            continue
        try:
            with variant(name):
                if (name, B) not in warmed:  # warm-up (Triton compile, allocator, clocks) once per shape
                    run_canvas(m, cfg, dev, B, 2, args.ctx)
                    warmed.add((name, B))
                r = run_canvas(m, cfg, dev, B, N, args.ctx, graph=name == "graph")
        except torch.cuda.OutOfMemoryError as e:
            rows.append({"variant": name, "canvases": B, "steps": N, "error": f"OOM: {e}"[:200]})
            torch.cuda.empty_cache()
            continue
        except Exception as e:  # noqa: BLE001 - e.g. a sync inside graph capture, a backend that rejects a
            # shape: record it and keep the other variants' rows (the decisions rest on them)
            failed[name] = f"{type(e).__name__}: {e}"[:400]
            rows.append({"variant": name, "canvases": B, "steps": N, "error": failed[name]})
            print(json.dumps(rows[-1]), flush=True)
            continue
        ms_fwd = 1e3 * r["decoder_s"] / N
        roof = 1e3 * roofline_s(m, cfg, B, args.ctx, nom["bw"], nom["flops"])
        rows.append({
            "variant": name, "canvases": B, "steps": N, "ms_per_forward": ms_fwd,
            "ms_per_step": 1e3 * r["loop_s"] / N,
            "prefill_ms": 1e3 * r["prefill_s"], "tok_s_no_prefill": B * C / r["loop_s"],
            "tok_s_e2e": B * C / (r["loop_s"] + r["prefill_s"]), "roofline_ms": roof,
            "pct_roofline": 100 * roof / ms_fwd, "capture_ms": 1e3 * r["capture_s"],
        })
        print(json.dumps(rows[-1]), flush=True)


def profile_forward(m, cfg, dev, args, results):
    from torch.profiler import ProfilerActivity, profile

    B = 1 if args.tiny else 8
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with variant("kernels"):
        run_canvas(m, cfg, dev, B, 1, args.ctx)
        with profile(activities=acts) as prof:
            run_canvas(m, cfg, dev, B, 1, args.ctx)
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    results["profile"] = prof.key_averages().table(sort_by=key, row_limit=20)
