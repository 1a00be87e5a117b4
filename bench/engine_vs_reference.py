"""Engine vs the transformers reference on one small backbone with the real 262,144-token vocabulary.

Measures (1 thread, interleaved runs, median of pairs; wall and CPU time):
  tokens/s of transformers generate, our reference mode and our fast mode (same prompts, fixed steps,
  early stop off), ratios over transformers; a greedy autoregressive decode of the same backbone (one token
  per forward: model.encode with the KV cache, LM head on its last hidden state); and per-step counters
  measured by an op-level dispatch hook: decoder forwards per canvas, ops over a [rows, C, V] logits-sized
  tensor per step (and over the fast mode's cache-resident vocabulary chunks), host syncs per step
  (aten._local_scalar_dense, i.e. .item()/bool()/int() of a tensor, wherever it happens, model included;
  `.tolist()` bypasses the dispatcher, so the engine's own per-canvas event reads are printed from its
  Counters instead).
Also checks that reference mode reproduces transformers' tokens on this model (transformers runs with eager
attention, see `build`).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/engine_vs_reference.py [--rows 16 --canvas 8 --steps 8 ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.counters import Counters  # noqa: E402
from engine.fast import Engine, Request  # noqa: E402
from engine.generate import generate  # noqa: E402
from engine.params import GenerationParams  # noqa: E402
from engine.vocab_head import DEFAULT_CHUNK  # noqa: E402
from model import DiffusionGemma, DiffusionGemmaConfig  # noqa: E402

_GATHERS = {torch.ops.aten.gather.default, torch.ops.aten.index_select.default, torch.ops.aten.index.Tensor}


class OpCounter(TorchDispatchMode):
    """Passes over the logits and host syncs.

    passes: per op, the largest vocabulary-last tensor it touches, in units of the [rows, C, V] logits, for
      tensors of at least 1/8 of that size (tensors that live in DRAM).
    chunk_passes: the same, counting every vocabulary-last or vocabulary-chunk-last tensor (the fast mode's
      cache-resident [rows*C, Vc] chunks, engine/vocab_head.py), i.e. all element work over the vocabulary.
    """

    def __init__(self, V: int, logits_numel: int, chunk: int, weights: set[int]):
        super().__init__()
        self.V, self.chunk, self.size = V, chunk, logits_numel
        self.weights = weights  # storages of model parameters: weight reads are not passes over the logits
        self.passes = self.chunk_passes = 0.0
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs += 1
        outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor)]
        ins = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        in_ptrs = {t.untyped_storage().data_ptr() for t in ins}
        if any(o.untyped_storage().data_ptr() in in_ptrs for o in outs) and not func._schema.is_mutable:
            return out  # a view: no pass over memory
        # Gathers read only what they return; everything else reads its inputs and writes its outputs.
        ts = outs if func in _GATHERS else ins + outs
        ts = [t for t in ts if t.untyped_storage().data_ptr() not in self.weights]
        vocab = [t.numel() for t in ts if t.dim() and t.shape[-1] == self.V]
        if vocab and max(vocab) * 8 >= self.size:  # ignore small vocabulary rows (e.g. gathered samples)
            self.passes += max(vocab) / self.size
        chunks = [t.numel() for t in ts if t.dim() > 1 and t.shape[-1] in (self.V, self.chunk)]
        if chunks:
            self.chunk_passes += max(chunks) / self.size
        return out


def build(args, tmp: Path):
    from transformers import DiffusionGemmaConfig as HFConfig
    from transformers import DiffusionGemmaForBlockDiffusion

    # the tiny preset (model/config.py) with the real vocabulary, a 64-token window and the sizes asked for
    h = args.hidden
    cfg = DiffusionGemmaConfig.tiny(
        args.canvas, vocab_size=262_144, hidden_size=h, intermediate_size=2 * h, moe_intermediate_size=h // 2,
        num_experts=args.experts, num_hidden_layers=args.layers, sliding_window=64,
    )
    torch.manual_seed(0)
    DiffusionGemmaForBlockDiffusion(HFConfig(**cfg.reference_kwargs())).save_pretrained(tmp)
    # Eager attention: its fp32 rounding is what reference mode reproduces bit for bit (sdpa's differs in the
    # last ulp, which flips a few of the 262,144-way multinomial draws). Attention is a negligible share of
    # this model's time, so the baseline's speed is the same either way.
    hf = DiffusionGemmaForBlockDiffusion.from_pretrained(
        tmp, dtype=torch.float32, attn_implementation="eager"
    )
    return hf.eval(), DiffusionGemma.from_pretrained(str(tmp), dtype=torch.float32).eval()


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--canvas", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument(
        "--count-rows", type=int, default=2, help="rows of the op-counting runs (per-step counts)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="dgbench-"))
    hf, ours = build(args, tmp)
    B, C, V = args.rows, args.canvas, 262_144
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (B, args.prompt), generator=g)
    kw = dict(max_new_tokens=args.new_tokens, max_denoising_steps=args.steps, stability_threshold=None)
    params = GenerationParams(
        max_new_tokens=args.new_tokens, max_denoising_steps=args.steps, stability_threshold=None
    )
    reqs = [Request(str(b), ids[b].tolist(), b, params) for b in range(B)]
    n_tok = B * args.new_tokens // C * C if args.new_tokens % C == 0 else B * (-(-args.new_tokens // C)) * C

    def run_hf():
        torch.manual_seed(0)
        return hf.generate(ids, **kw).sequences

    def run_ref():
        return generate(ours, ids, seed=0, **kw)

    fc = Counters()
    engines = []

    def run_fast():
        eng = Engine(ours, max_batch_rows=B, counters=Counters() if engines else fc)
        engines.append(eng)
        return eng.generate(reqs)

    @torch.no_grad()
    def run_ar():
        # Greedy autoregressive decode of the same backbone: causal encoder pass with the KV cache, one
        # token per forward, next token = argmax of the LM head on the last hidden state.
        P = args.prompt
        cache = ours.new_cache(B, P + args.new_tokens)
        h = ours.encode(
            ids, cache, positions_BT=torch.arange(P).expand(B, -1), len_range=(0, 0), return_hidden=True
        )
        out = []
        for i in range(args.new_tokens):
            tok = ours.logits(h[:, -1:]).argmax(-1)  # [B, 1]
            out.append(tok)
            if i + 1 < args.new_tokens:
                h = ours.encode(
                    tok,
                    cache,
                    positions_BT=torch.full((B, 1), P + i),
                    len_range=(P + i, P + i),
                    return_hidden=True,
                )
        return torch.cat(out, dim=1)

    names = ("transformers", "reference", "fast", "autoregressive")
    fns = (run_hf, run_ref, run_fast, run_ar)
    times = {n: [] for n in names}
    outs = {}
    for _ in range(args.pairs):  # interleaved: each round runs every variant once
        for n, f in zip(names, fns):
            out, w, c = timed(f)
            outs.setdefault(n, out)
            times[n].append((w, c))
    same = torch.equal(outs["transformers"], outs["reference"])

    # Counters: one canvas at the same settings under the op counter, on the first count_rows rows (the
    # counts are per step and normalised by the logits' size, so they do not depend on the row count).
    one = dict(kw, max_new_tokens=C)
    Bc = min(B, args.count_rows)
    weights = {p.untyped_storage().data_ptr() for m in (hf, ours) for p in m.parameters()}
    counts = {}
    for n, f in (
        ("transformers", lambda: (torch.manual_seed(0), hf.generate(ids[:Bc], **one))),
        ("reference", lambda: generate(ours, ids[:Bc], seed=0, **one)),
        (
            "fast",
            lambda: Engine(ours, max_batch_rows=Bc).generate(
                [Request(r.id, r.input_ids, r.seed, params.with_(max_new_tokens=C)) for r in reqs[:Bc]]
            ),
        ),
    ):
        oc = OpCounter(V, Bc * C * V, DEFAULT_CHUNK, weights)
        with oc:
            f()
        counts[n] = (oc.passes / args.steps, oc.chunk_passes / args.steps, oc.syncs / args.steps)
    kept = engines[0].noise.kept / max(engines[0].noise.positions, 1)

    print(
        f"# engine_vs_reference: rows={B} canvas={C} steps={args.steps} new_tokens={args.new_tokens} "
        f"prompt={args.prompt} V={V} hidden={args.hidden} layers={args.layers} experts={args.experts} "
        f"threads={torch.get_num_threads()} pairs={args.pairs}"
    )
    print(f"reference-mode tokens == transformers tokens: {same}")
    base_w = statistics.median(w for w, _ in times["transformers"])
    base_c = statistics.median(c for _, c in times["transformers"])
    print(f"{'variant':<16}{'wall s':>9}{'cpu s':>9}{'tok/s':>9}{'x wall':>8}{'x cpu':>8}")
    for n in names:
        w = statistics.median(x for x, _ in times[n])
        c = statistics.median(x for _, x in times[n])
        print(f"{n:<16}{w:>9.2f}{c:>9.2f}{n_tok / w:>9.1f}{base_w / w:>8.2f}{base_c / c:>8.2f}")
    print(f"per-step counts from one canvas of {Bc} rows:")
    head = f"{'DRAM logit passes/step':>24}{'all vocab passes/step':>23}{'host syncs/step':>17}"
    print(f"{'variant':<16}{head}")
    for n, (p, cp, s) in counts.items():
        print(f"{n:<16}{p:>24.1f}{cp:>23.1f}{s:>17.2f}")
    print(
        f"fast: decoder forwards per canvas {fc.decoder_forwards / (fc.canvases / B):.1f}, "
        f"engine-loop syncs/step {fc.host_syncs / fc.steps:.3f} (steady {fc.steady_syncs}), "
        f"sample pass touches {kept:.1%} of positions"
    )
    print(
        "note: passes include the model's own (LM head, softcap, self-conditioning softmax/matmul); DRAM "
        "passes count logits-sized tensors, all-vocab passes also the fast mode's cache-resident chunks; "
        "syncs count every .item()/int() of a tensor, model included (reference mode: one per model pass)"
    )


if __name__ == "__main__":
    main()
