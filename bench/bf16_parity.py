"""bf16 agreement of our DiffusionGemma with transformers (eager attention + grouped_mm experts).

Builds the tiny perturbed fixture (tests/model/dg_oracle.py), saves it in bf16, loads it into both
implementations and prints the max abs logit difference per stage of a teacher-forced generation (prefill,
decoder pass without / with self-conditioning, encode of the committed canvas, next decoder pass).
Batch of one without padding: the reference's generate() crashes with eager attention plus padding.
Also reports the reference's default sdpa attention for comparison.
Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bf16_parity.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "model")]

from dg_oracle import Reference, build_reference, tiny_kwargs  # noqa: E402

from model import DiffusionGemma  # noqa: E402


@torch.no_grad()
def main(attn: str = "eager", canvases: int = 3, prompt_len: int = 12, seed: int = 0) -> float:
    torch.set_num_threads(1)
    from transformers import DiffusionGemmaForBlockDiffusion

    fp32 = build_reference(tiny_kwargs(16), seed, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as d:
        fp32.to(torch.bfloat16).save_pretrained(d)
        # Load the reference the way users do: from_pretrained in bf16 keeps its RoPE inv_freq in fp32
        # (casting a live model with .to(bf16) would round inv_freq too and move logits by ~0.2).
        hf = DiffusionGemmaForBlockDiffusion.from_pretrained(
            d, dtype=torch.bfloat16, attn_implementation=attn, experts_implementation="grouped_mm"
        ).eval()
        ours = DiffusionGemma.from_pretrained(d, dtype=torch.bfloat16)
    inv = hf.model.decoder.rotary_emb.sliding_attention_inv_freq
    print(
        f"reference: attention={hf.config._attn_implementation}, experts="
        f"{hf.config.text_config._experts_implementation}, rope inv_freq dtype={inv.dtype}"
    )
    C, V = hf.config.canvas_length, hf.config.text_config.vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (1, prompt_len), generator=g)
    ref, cache = Reference(hf), ours.new_cache(1, prompt_len + C * (canvases + 1))
    mask = torch.ones(1, prompt_len, dtype=torch.bool)
    pos = torch.arange(prompt_len)[None]
    ref.encode(ids, mask, pos.to(torch.int32))
    ours.encode(ids, cache, positions_BT=pos)
    total, worst = prompt_len, 0.0
    for k in range(canvases):
        pos = torch.arange(total, total + C)[None]
        dec_mask = torch.ones(1, total + C, dtype=torch.bool)
        sc = None
        for step in range(2):
            canvas = torch.randint(0, V, (1, C), generator=g)
            theirs = ref.decode(canvas, dec_mask, pos.to(torch.int32), sc=sc)
            mine = ours.decode(canvas, cache, positions_BC=pos, sc_logits_BCV=sc)
            d = (theirs - mine).abs().max().item()
            worst = max(worst, d)
            kind = "with" if sc is not None else "no"
            print(f"canvas {k} step {step} ({kind} self-cond): max|dlogit| = {d:.3g}")
            sc = (theirs / 0.7).to(torch.bfloat16)
        committed = theirs.argmax(-1)
        mask = torch.ones(1, total + C, dtype=torch.bool)
        ref.encode(committed, mask, pos.to(torch.int32))
        ours.encode(committed, cache, positions_BT=pos)
        total += C
    print(f"bf16 max abs logit diff vs transformers ({attn} attention, grouped_mm experts): {worst:.3g}")
    return worst


if __name__ == "__main__":
    results = {attn: main(attn) for attn in ("eager", "sdpa")}
    print("summary:", ", ".join(f"{k}: {v:.3g}" for k, v in results.items()))
