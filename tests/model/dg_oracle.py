"""The transformers oracle for model/ parity tests (imported by tests only; never by the package).

`check_parity(hf_kwargs, workdir)` builds a tiny random transformers DiffusionGemmaForBlockDiffusion, perturbs
every norm / router scale / per-expert scale / layer_scalar away from 1 (encoder and decoder scalars differ),
saves it with save_pretrained, loads it with our DiffusionGemma.from_pretrained, then drives both models
through the same teacher-forced generation: prefill, per canvas a decoder pass without and with
self-conditioning, commit the argmax, encode the committed canvas, next canvas. The reference is driven
the way its `generate` drives it (its own mask builders, a DynamicCache, shared padded-grid positions).
Returns the max abs differences per stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from model import DiffusionGemma, DiffusionGemmaConfig
from model.config import PLACEHOLDER_VISION_CONFIG
from model.tokenizer import left_pad


def tiny_kwargs(canvas_length: int = 16, **text: Any) -> dict[str, Any]:
    """transformers config kwargs of the tiny preset (model/config.py: the spec's fixture, 4 layers (S,F,S,F),
    H=64, sliding D=16/KV=2, full D=32/KV=1, W=8, 8 experts top-2) with text_config fields overridden."""
    return DiffusionGemmaConfig.tiny(canvas_length, **text).reference_kwargs()


ENV_VAR = "DGBATCH_PARITY_CONFIGS"


def env_cases() -> list[dict[str, Any]]:
    """Extra parity cases from the JSON file named by $DGBATCH_PARITY_CONFIGS (a list of config kwargs)."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return []
    cases = json.loads(Path(path).read_text())
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ValueError(f"{path}: expected a JSON list of DiffusionGemmaConfig kwargs objects")
    return cases


def build_reference(hf_kwargs: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.float32, **model_kw):
    """A random, perturbed reference model (eval mode)."""
    from transformers import DiffusionGemmaConfig as HFConfig
    from transformers import DiffusionGemmaForBlockDiffusion

    kwargs = dict(hf_kwargs)
    kwargs.setdefault("vision_config", PLACEHOLDER_VISION_CONFIG)
    torch.manual_seed(seed)
    cfg = HFConfig(**kwargs)
    for k, v in model_kw.items():
        setattr(cfg, k, v)
    hf = DiffusionGemmaForBlockDiffusion(cfg).eval()
    perturb(hf, seed)
    return hf.to(dtype)


@torch.no_grad()
def perturb(hf: torch.nn.Module, seed: int) -> None:
    """Every scale away from 1: norms, router scale, per-expert scale, both layer_scalar copies (differ)."""
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in list(hf.named_parameters()) + list(hf.named_buffers()):
        if "vision" in name:
            continue
        if name.endswith(("norm.weight", "router.scale", "router.per_expert_scale", "layer_scalar")):
            p.copy_(0.5 + torch.rand(p.shape, generator=g))


def to_global_form(ckpt: Path) -> None:
    """Rewrite a saved config.json into the older global_head_dim / num_global_key_value_heads form."""
    cfg = json.loads((ckpt / "config.json").read_text())
    tc = cfg["text_config"]
    per = tc.pop("per_layer_config")
    first = next(iter(per.values()))
    tc["global_head_dim"] = first["head_dim"]
    if "num_key_value_heads" in first:
        tc["num_global_key_value_heads"] = first["num_key_value_heads"]
    (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))


def left_padded(lengths: list[int], vocab: int, pad: int, seed: int):
    g = torch.Generator().manual_seed(seed + 2)
    return left_pad([torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths], pad)


class Reference:
    """Drives the reference model's encoder/decoder exactly as its generate() does."""

    def __init__(self, hf):
        from transformers import DynamicCache

        self.hf = hf
        self.cache = DynamicCache(config=hf.config.text_config)

    def encode(self, ids, attn_mask, positions):
        enc = self.hf.model.encoder
        dummy = torch.empty((ids.shape[0], ids.shape[1], 0), dtype=self.hf.dtype)
        masks = enc.create_masks_for_generate(
            config=self.hf.config,
            inputs_embeds=dummy,
            attention_mask=attn_mask,
            past_key_values=self.cache,
            position_ids=positions,
        )
        enc(input_ids=ids, attention_mask=masks, past_key_values=self.cache, position_ids=positions)

    def decode(self, canvas, dec_mask, positions, sc=None):
        masks = self.hf.model.decoder.create_diffusion_decoder_attention_mask(
            config=self.hf.config,
            inputs_embeds=canvas.unsqueeze(-1),
            past_key_values=self.cache,
            decoder_attention_mask=dec_mask,
        )
        out = self.hf(
            decoder_input_ids=canvas,
            self_conditioning_logits=sc,
            decoder_attention_mask=masks,
            past_key_values=self.cache,
            decoder_position_ids=positions,
        )
        return out.logits


def _cache_diff(ref: Reference, ours_cache, valid_BS: torch.Tensor, total: int) -> float:
    """Max diff of stored K/V at valid positions (sliding layers: the W-1 tokens the reference keeps)."""
    worst = 0.0
    for i, layer in enumerate(ref.cache.layers):
        for theirs, mine in ((layer.keys, ours_cache.k[i]), (layer.values, ours_cache.v[i])):
            kept = theirs.shape[2]
            lo = total - kept
            m = valid_BS[:, lo:total][:, None, :, None]
            d = ((theirs - mine[:, :, lo:total].to(theirs.dtype)) * m).abs().max().item()
            worst = max(worst, d)
    return worst


@torch.no_grad()
def check_parity(
    hf_kwargs: dict[str, Any],
    workdir: Path,
    *,
    lengths=(5, 9, 12),
    canvases: int = 2,
    global_form: bool = False,
    seed: int = 0,
    temperature: float = 0.7,
) -> dict[str, float]:
    """Teacher-forced fp32 parity; returns max abs logit / cache diffs per stage."""
    hf = build_reference(hf_kwargs, seed)
    ckpt = Path(workdir) / "ckpt"
    hf.save_pretrained(ckpt)
    if global_form:
        to_global_form(ckpt)
    ours = DiffusionGemma.from_pretrained(str(ckpt), dtype=torch.float32)
    tc = hf.config.text_config
    C, V = hf.config.canvas_length, tc.vocab_size
    ids, attn = left_padded(list(lengths), V, tc.pad_token_id or 0, seed)
    B, L = ids.shape
    cache = ours.new_cache(B, L + C * canvases)
    ref = Reference(hf)
    g = torch.Generator().manual_seed(seed + 3)
    diffs: dict[str, float] = {}

    enc_pos = torch.arange(L).unsqueeze(0)
    ref.encode(ids, attn, enc_pos.to(torch.int32))
    ours.encode(ids, cache, positions_BT=enc_pos.expand(B, L), valid_BT=attn)
    dec_mask = torch.nn.functional.pad(attn, (0, C), value=True)
    total = L
    for k in range(canvases):
        diffs[f"cache{k}"] = _cache_diff(ref, cache, cache.valid_BS, total)
        pos = torch.arange(total, total + C).unsqueeze(0)
        canvas = torch.randint(0, V, (B, C), generator=g)
        theirs = ref.decode(canvas, dec_mask, pos.to(torch.int32))
        mine = ours.decode(canvas, cache, positions_BC=pos.expand(B, C))
        diffs[f"decode{k}"] = (theirs - mine).abs().max().item()
        sc = (theirs / temperature).to(hf.dtype)
        canvas2 = torch.randint(0, V, (B, C), generator=g)
        theirs = ref.decode(canvas2, dec_mask, pos.to(torch.int32), sc=sc)
        mine = ours.decode(canvas2, cache, positions_BC=pos.expand(B, C), sc_logits_BCV=sc)
        diffs[f"decode_sc{k}"] = (theirs - mine).abs().max().item()
        committed = theirs.argmax(-1)
        attn = torch.nn.functional.pad(attn, (0, C), value=True)
        dec_mask = torch.nn.functional.pad(dec_mask, (0, C), value=True)
        ref.encode(committed, attn, pos.to(torch.int32))
        ours.encode(committed, cache, positions_BT=pos.expand(B, C))
        total += C
    diffs["cache_final"] = _cache_diff(ref, cache, cache.valid_BS, total)
    # one more decoder pass after the last committed canvas
    pos = torch.arange(total, total + C).unsqueeze(0)
    canvas = torch.randint(0, V, (B, C), generator=g)
    theirs = ref.decode(canvas, dec_mask, pos.to(torch.int32))
    mine = ours.decode(canvas, cache, positions_BC=pos.expand(B, C))
    diffs["decode_final"] = (theirs - mine).abs().max().item()
    return diffs
