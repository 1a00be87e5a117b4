"""Tiny DiffusionGemma checkpoints for engine tests: built with transformers (the oracle), loaded by ours.

`tiny_pair(tmp, **text_overrides)` -> (hf_model, our_model) sharing the same random, perturbed fp32 weights.
An optional lm-head bias towards some ids (via the tied embeddings) makes EOS frequent with random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.config import DiffusionGemmaConfig
from model.tokenizer import left_pad

# The engine tests' geometry: the tiny preset (model/config.py) cut to 2 layers (S,F) of width 32, sliding
# and full layers alike (D=16, one KV head), 4 experts top-2, V=256.
ENGINE_TEXT = dict(vocab_size=256, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                   num_experts=4, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                   global_head_dim=16)


def build_hf(seed: int = 0, canvas_length: int = 8, boost: dict[int, float] | None = None, **text):
    """A random transformers reference model; every scale perturbed away from 1; optional token boosts."""
    from transformers import DiffusionGemmaConfig as HFConfig
    from transformers import DiffusionGemmaForBlockDiffusion

    cfg = DiffusionGemmaConfig.tiny(canvas_length, **{**ENGINE_TEXT, **text})
    torch.manual_seed(seed)
    hf = DiffusionGemmaForBlockDiffusion(HFConfig(**cfg.reference_kwargs())).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in list(hf.named_parameters()) + list(hf.named_buffers()):
            if "vision" in name:
                continue
            if name.endswith(("norm.weight", "router.scale", "router.per_expert_scale", "layer_scalar")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
        # Sharpen the logits so that entropies are low enough for several tokens to be accepted per step,
        # and (optionally) make some ids frequent argmaxes by scaling their tied embedding rows.
        emb = hf.model.decoder.embed_tokens.weight
        emb.mul_(8.0)
        for tok, scale in (boost or {}).items():
            emb[tok].mul_(scale)
    return hf


def tiny_pair(
    tmp: Path, seed: int = 0, canvas_length: int = 8, boost: dict[int, float] | None = None, **text
):
    from model import DiffusionGemma

    hf = build_hf(seed, canvas_length, boost, **text)
    hf.save_pretrained(tmp)
    ours = DiffusionGemma.from_pretrained(str(tmp), dtype=torch.float32).eval()
    return hf, ours


def left_padded(lengths: list[int], vocab: int, seed: int, pad: int = 0):
    """Random prompts of these lengths (ids >= 3), left padded -> (ids_BL, mask_BL long)."""
    g = torch.Generator().manual_seed(seed)
    ids, valid = left_pad([torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths], pad)
    return ids, valid.long()
