"""Teacher-forced block-diffusion forward for training, built on the model's own modules (model/).

Legend: B rows, L padded prompt length, K canvases per row, C canvas length, Te encoder tokens (L + (K-1)*C),
Q = K*C decoder tokens, V vocab, H hidden.

Training layout (NeMo-AutoModel style, equivalent to the cached inference path but one pass for all canvases):
* encoder: one causal pass over the CLEAN sequence [left-padded prompt ; canvases 0..K-2], positions 0..Te-1
  (the shared padded grid of reference mode); every layer's K/V is kept (with gradients);
* decoder: all K NOISED canvases at once, canvas k at positions L+k*C..; a canvas-k query sees the clean keys
  before L+k*C (valid, and the last W-1 of them on sliding layers, exactly what the inference cache exposes)
  plus its own canvas bidirectionally. Encoder and decoder use their own layer_scalar copies.
`model.encode` / `model.decode` compute the same function token by token through a KVCache; this file only
re-batches it so a whole response trains in one step. The cross-check is tests/training/test_training_loop.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from model import DiffusionGemma
from model.attention import attend
from model.config import SLIDING
from model.tokenizer import encode_prompt, left_pad


@dataclass
class Batch:
    """One training/eval batch; `targets_BKC` holds the clean response canvases (answer, <turn|>, pads)."""

    prompt_BL: torch.Tensor  # left-padded prompt ids
    prompt_valid_BL: torch.Tensor  # False at left pads
    targets_BKC: torch.Tensor
    canvas_mask_BK: torch.Tensor  # False for canvases wholly after the row's response (no loss there)


def make_batch(tok, prompts: list[str], answers: list[str] | None, canvas_length: int, end_id: int,
               pad_id: int, n_canvases: int | None = None) -> Batch:
    """Tokenize prompts (chat template, generation prompt) and answers into a Batch; `tok` is model's
    Tokenizer, so training sees exactly the prompt ids inference builds. answers=None: empty targets."""
    prompt, valid = left_pad([encode_prompt(tok, p) for p in prompts], pad_id)
    B, C = len(prompts), canvas_length
    resp = [tok.encode(a, add_special_tokens=False) + [end_id] for a in answers] if answers else [[]] * B
    K = n_canvases or max(1, max(math.ceil(len(r) / C) for r in resp))
    targets = torch.full((B, K * C), pad_id, dtype=torch.long)
    mask = torch.zeros(B, K, dtype=torch.bool)
    for i, r in enumerate(resp):
        r = r[:K * C]
        targets[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :max(1, math.ceil(len(r) / C))] = True
    return Batch(prompt, valid, targets.view(B, K, C), mask)


def encode_context(model: DiffusionGemma, ids_BT: torch.Tensor, valid_BT: torch.Tensor) -> list:
    """Causal clean pass (positions 0..T-1); returns per-layer (k, v) as the cache would hold them."""
    t = model.text
    T = ids_BT.shape[1]
    pos = torch.arange(T)
    j, i = pos[None, :], pos[:, None]
    causal = valid_BT[:, None, :] & (j <= i)
    masks = {SLIDING: causal & (j > i - t.sliding_window), "full_attention": causal}
    rope = model._rope(pos[None].expand(ids_BT.shape[0], T), model.dtype)
    h = model._embed(ids_BT)
    kv = []
    for li, layer in enumerate(model.layers):
        lt = t.layer_types[li]

        def att(q, k, v, lt=lt):
            kv.append((k, v))
            return attend(q, k, v, masks[lt])

        if li == len(model.layers) - 1:
            # The encoder's final hidden states are never read: only its K/V matter, so skip the last MLP/MoE.
            q, k, v = layer.self_attn.qkv(layer.input_layernorm(h), *rope[lt])
            kv.append((k, v))
        else:
            h = layer(h, *rope[lt], att, encoder=True)
    return kv


def decode_canvases(model: DiffusionGemma, kv: list, ctx_valid_BT: torch.Tensor, L: int,
                    canvas_BQ: torch.Tensor, C: int, sc_logits_BQV: torch.Tensor | None = None,
                    sc_mask_B: torch.Tensor | None = None) -> torch.Tensor:
    """Decoder over K = Q/C canvases (canvas k sees clean context before L+k*C) -> fp32 logits [B, Q, V]."""
    return model.logits(decode_hidden(model, kv, ctx_valid_BT, L, canvas_BQ, C, sc_logits_BQV, sc_mask_B))


def decode_hidden(model: DiffusionGemma, kv: list, ctx_valid_BT: torch.Tensor, L: int,
                  canvas_BQ: torch.Tensor, C: int, sc_logits_BQV: torch.Tensor | None = None,
                  sc_mask_B: torch.Tensor | None = None) -> torch.Tensor:
    """`decode_canvases` before the LM head: the last layer's hidden states [B, Q, H]."""
    t = model.text
    B, Q = canvas_BQ.shape
    T = ctx_valid_BT.shape[1]
    qpos = L + torch.arange(Q)
    start = L + (torch.arange(Q) // C) * C  # first position of each query's canvas = context length it sees
    j = torch.arange(T)[None, :]
    ctx = ctx_valid_BT[:, None, :] & (j < start[:, None])
    own = (torch.arange(Q)[:, None] // C) == (torch.arange(Q)[None, :] // C)
    masks = {
        SLIDING: torch.cat([ctx & (j >= start[:, None] - (t.sliding_window - 1)), own.expand(B, Q, Q)], -1),
        "full_attention": torch.cat([ctx, own.expand(B, Q, Q)], -1),
    }
    rope = model._rope(qpos[None].expand(B, Q), model.dtype)
    emb = model._embed(canvas_BQ)
    h = model.self_conditioning(emb, model.sc_soft(sc_logits_BQV, sc_mask_B))
    for li, layer in enumerate(model.layers):
        lt = t.layer_types[li]
        ck, cv = kv[li]

        def att(q, k, v, ck=ck, cv=cv, lt=lt):
            return attend(q, torch.cat([ck, k], 2), torch.cat([cv, v], 2), masks[lt])

        h = layer(h, *rope[lt], att, encoder=False)
    return h


def context_of(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean encoder input: prompt + all but the last target canvas -> (ids [B, Te], valid [B, Te])."""
    B, K, C = batch.targets_BKC.shape
    prev = batch.targets_BKC[:, :K - 1].reshape(B, -1)
    ids = torch.cat([batch.prompt_BL, prev], 1)
    valid = torch.cat([batch.prompt_valid_BL, torch.ones_like(prev, dtype=torch.bool)], 1)
    return ids, valid


def corrupt(targets_BKC: torch.Tensor, vocab: int, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform-state corruption: each canvas draws t ~ U(eps, 1); each token is replaced by a uniform
    random id with probability t (no mask token, as DiffusionGemma's sampler starts from uniform noise)."""
    B, K, C = targets_BKC.shape
    t = eps + (1 - eps) * torch.rand(B, K, 1, generator=gen)
    hit = torch.rand(B, K, C, generator=gen) < t
    noise = torch.randint(0, vocab, (B, K, C), generator=gen)
    return torch.where(hit, noise, targets_BKC)


def diffusion_loss(model: DiffusionGemma, batch: Batch, *, eps: float, self_cond: bool, gen: torch.Generator,
                   t_range: tuple[float, float] = (0.4, 0.8),
                   pinned_BKC: torch.Tensor | None = None) -> torch.Tensor:
    """Mean canvas cross-entropy. With self_cond, a detached first pass (its logits divided by a temperature
    drawn from the sampler's schedule range, as the sampler feeds them) conditions the graded second pass.
    pinned_BKC (bool, optional): positions that hold their clean target in the noised canvas (the engine's
    pins, e.g. Sudoku clues) and carry no loss; the noise draws are the same with or without it."""
    B, K, C = batch.targets_BKC.shape
    ids, valid = context_of(batch)
    kv = encode_context(model, ids, valid)
    noisy = corrupt(batch.targets_BKC, model.text.vocab_size, eps, gen)
    if pinned_BKC is not None:
        noisy = torch.where(pinned_BKC, batch.targets_BKC, noisy)
    noisy = noisy.view(B, K * C)
    L = batch.prompt_BL.shape[1]
    sc = None
    if self_cond:
        with torch.no_grad():
            kv_d = [(k.detach(), v.detach()) for k, v in kv]
            first = decode_canvases(model, kv_d, valid, L, noisy, C)
            temp = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(B, 1, 1, generator=gen)
            sc = first / temp
    h_BQH = decode_hidden(model, kv, valid, L, noisy, C, sc)
    w_BKC = batch.canvas_mask_BK[..., None].expand(B, K, C)
    if pinned_BKC is not None:
        w_BKC = w_BKC & ~pinned_BKC
    # The LM head and its softcap only where a loss is taken: in a pinned Sudoku batch that is a third of
    # the canvas, and the head's [positions, V] pass is the largest cost of a small model's step.
    graded_N = w_BKC.reshape(-1).nonzero().squeeze(1)
    logits_1NV = model.logits(h_BQH.reshape(B * K * C, -1).index_select(0, graded_N)[None])
    return torch.nn.functional.cross_entropy(logits_1NV[0], batch.targets_BKC.reshape(-1)[graded_N])
