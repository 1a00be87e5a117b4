"""`generate()`: block-diffusion generation of token ids, laid out like transformers' `.sequences`, in
reference mode (lockstep batch, the global torch RNG in the reference's exact order) or fast mode (the
continuous-batching Engine with per-row streams); plus `generate_text()` (strings in, strings out).

Owns: the reference-mode outer loop (canvases of a lockstep, left-padded batch, as transformers 5.23
`DiffusionGemmaGenerationMixin.generate` runs them, with engine/heads.py ReferenceHead) and the public entry
points. The per-step math (engine/denoise.py) and the canvas commit (engine/commit_hook.py commit_canvas) are
shared with the engine, and so are the committed tokens' log-probabilities (`output_logprobs`: the
definition is engine/commit_hook.py's), the same numbers for a row in either mode up to the vocabulary
heads' rounding.

Legend: B rows, L prompt length (left-padded), C canvas length, V vocabulary, K canvases.
Reference mode equals `DiffusionGemmaForBlockDiffusion.generate(...).sequences` under the same
torch.manual_seed only for the same batch composition and order (rows share one RNG stream).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from engine.commit_hook import CommitHook, commit_canvas, is_argmax
from engine.counters import Counters
from engine.denoise import CanvasBatch, denoise_step, host_rows
from engine.heads import ReferenceHead
from engine.params import GenerationParams, first_stop, until_stop
from engine.pins import Pins, pin_tensor
from engine.sampler import ReferenceNoise, RowKeys
from model.tokenizer import encode_prompt, left_pad

# on_step(argmax_BC, canvas_index, steps_left): a draft view of each step (CLI live view). Reads the device.
StepCallback = Callable[[torch.Tensor, int, int], None]


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    mode: str = "reference",
    seed: int | None = None,
    max_new_tokens: int | None = None,
    max_denoising_steps: int | None = None,
    t_max: float | None = None,
    t_min: float | None = None,
    entropy_bound: float | None = None,
    stability_threshold: int | None = None,
    confidence_threshold: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    commit_hook: CommitHook | None = None,
    on_step: StepCallback | None = None,
    counters: Counters | None = None,
    output_logprobs: bool = False,
    pins: list[Pins | None] | None = None,
    commit_order: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Generate for a batch of prompts -> LongTensor [B, L + K*C] (prompt, then committed canvases).

    input_ids [B, L] left-padded with attention_mask [B, L] (1 = real token). Parameters left None take the
    checkpoint's generation_config values, then transformers' global defaults. reference: `seed` (if given)
    seeds the global torch RNG first, which is then consumed exactly like the reference. fast: row i uses
    seed `seed + i` (random when None) and the Engine; rows that stop early are filled with pad (or their
    first EOS id when pad is unset) up to the longest row.

    output_logprobs: return (sequences, logprobs_BT), logprobs_BT fp32 [B, K*C]: each new token's
    log-probability under the distribution its commit read (engine/commit_hook.py), for the row's output
    before its first EOS, NaN from there on and where a pad was put in; in fast mode exactly the
    Completion's logprobs (a hook-finished row's trailing pads, which it drops, are NaN).

    pins: per row, output tokens fixed before denoising (engine/pins.py; None: none); commit_order: which
    positions a step keeps (engine/params.py COMMIT_ORDERS; None: "confidence", the reference's).
    """
    params = GenerationParams.from_model(
        model,
        max_new_tokens=max_new_tokens,
        max_denoising_steps=max_denoising_steps,
        t_max=t_max,
        t_min=t_min,
        entropy_bound=entropy_bound,
        stability_threshold=stability_threshold,
        confidence_threshold=confidence_threshold,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        commit_order=commit_order,
    )
    params.check_vocab(model.config.text.vocab_size)
    if pins is not None:
        if len(pins) != input_ids.shape[0]:
            raise ValueError(f"generate: pins has {len(pins)} rows, input_ids {input_ids.shape[0]}")
        for b, p in enumerate(pins):
            why = None if p is None else p.problem(model.config.text.vocab_size, params.max_new_tokens,
                                                    params.eos_token_ids)
            if why:
                raise ValueError(f"generate: row {b}: {why}")
    if input_ids.dim() != 2:
        raise ValueError(f"generate: input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"generate: attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
            f"{tuple(input_ids.shape)} (must be 2-D, left padding)"
        )
    if mode == "reference":
        if seed is not None:
            torch.manual_seed(seed)
        seqs, logprobs = _generate_reference(
            model, input_ids, attention_mask, params, commit_hook, on_step, counters or Counters(),
            output_logprobs, pins,
        )
    elif mode == "fast":
        seqs, logprobs = _generate_fast(
            model,
            input_ids,
            attention_mask,
            params,
            seed=seed,
            commit_hook=commit_hook,
            on_step=on_step,
            counters=counters,
            output_logprobs=output_logprobs,
            pins=pins,
        )
    else:
        raise ValueError(f"generate: mode must be 'reference' or 'fast', got {mode!r}")
    return (seqs, logprobs) if output_logprobs else seqs


def _nan_from_eos(new_BT: torch.Tensor, logprobs_BT: torch.Tensor, eos_ids: tuple[int, ...]) -> torch.Tensor:
    """logprobs_BT with NaN from each row's first EOS on (the output ends there)."""
    for b, row in enumerate(new_BT.tolist()):
        cut = first_stop(row, eos_ids)
        if cut is not None:
            logprobs_BT[b, cut:] = float("nan")
    return logprobs_BT


def _generate_reference(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    params: GenerationParams,
    hook: CommitHook | None,
    on_step: StepCallback | None,
    counters: Counters,
    output_logprobs: bool = False,
    pins: list[Pins | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, L = input_ids.shape
    pins = pins or [None] * B
    C = model.config.canvas_length
    V = model.config.text.vocab_size
    dev = model.device
    K = params.n_canvases(C)
    input_ids = input_ids.to(dev)
    valid_BL = (
        torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.to(dev).bool()
    )
    # The last committed canvas is never encoded, so the cache needs L + (K - 1) * C slots.
    cache = model.new_cache(B, L + (K - 1) * C)
    head = ReferenceHead(ReferenceNoise())
    hook_states = [hook.initial_state() if hook is not None else None for _ in range(B)]
    finished = [False] * B
    pieces, lp_pieces = [input_ids], []
    new_BT, valid_BT = input_ids, valid_BL
    enc_pos0 = 0
    zeros_B = torch.zeros(B, dtype=torch.long, device=dev)
    for k in range(K):
        # (a) encode the new tokens (the prompt, then the last committed canvas) at the shared grid positions.
        T = new_BT.shape[1]
        pos_BT = torch.arange(enc_pos0, enc_pos0 + T, device=dev).expand(B, T)
        # Every row's cache length is the shared grid position, known here: no device read inside the model.
        model.encode(new_BT, cache, positions_BT=pos_BT, valid_BT=valid_BT, len_range=(enc_pos0, enc_pos0))
        counters.encoder_forwards += 1
        # (b) a fresh canvas of uniform noise (RNG #1), then (c) the denoising steps N..1.
        keys = RowKeys(zeros_B, zeros_B + k, zeros_B)
        tokens_left, last = params.max_new_tokens - k * C, k == K - 1
        rows = host_rows([params] * B, [L + k * C] * B, [hook] * B, hook_states, [tokens_left] * B,
                         [last] * B, [output_logprobs] * B)
        st = CanvasBatch.start(head.noise.init_canvas(keys, C, V, dev), keys, rows,
                               pin_tensor(pins, [k] * B, C, dev))
        for cur in range(params.max_denoising_steps, 0, -1):
            denoise_step(model, cache, st, head)
            counters.step(B, head.passes_per_step(not is_argmax(hook)))
            if on_step is not None:
                on_step(st.argmax_BC, k, cur)
            # The reference checks every step; checking less often would shift the RNG stream.
            if params.early_stopping and counters.host_bool(st.done_B.all()):
                break
        counters.live_forwards += int(st.live_B.sum())
        # (d) commit: the argmax of the last processed logits, or the hook's choice per row; (e) EOS / pad.
        argmax_BC, kept = st.argmax_BC.tolist(), st.kept
        logp_BC = st.logp_BC.tolist() if output_logprobs else None
        tokens_BC, lp_BC = [], []
        for b in range(B):
            c = commit_canvas(hook, hook_states[b], argmax_BC[b], lambda b=b, kept=kept: kept.row(b), params,
                              tokens_left=tokens_left, last_canvas=last, prev_finished=finished[b],
                              argmax_logprobs=(lambda b=b, lp=logp_BC: lp[b]) if output_logprobs else None,
                              pin_C=None if pins[b] is None else pins[b].canvas(k, C),
                              hold=0 if pins[b] is None else pins[b].hold_until(k, C))
            hook_states[b], finished[b] = c.state, c.finished
            tokens_BC.append(c.tokens)
            lp_BC.append(c.logprobs)
        new_BT = torch.tensor(tokens_BC, dtype=torch.long, device=dev)
        pieces.append(new_BT)
        if output_logprobs:
            lp_pieces.append(torch.tensor(lp_BC, dtype=torch.float32))
        counters.canvases += 1
        if all(finished):
            break
        # (f) next canvas: the committed canvas is encoded at exactly the positions it was denoised at.
        valid_BT = torch.ones(B, C, dtype=torch.bool, device=dev)
        enc_pos0 = L + k * C
    seqs = torch.cat(pieces, dim=1)
    if not output_logprobs:
        return seqs, None
    return seqs, _nan_from_eos(seqs[:, L:].cpu(), torch.cat(lp_pieces, dim=1), params.eos_token_ids)


def _generate_fast(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    params: GenerationParams,
    *,
    seed: int | None,
    commit_hook: CommitHook | None = None,
    on_step=None,
    counters: Counters | None = None,
    max_batch_rows: int | None = None,
    output_logprobs: bool = False,
    pins: list[Pins | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`generate(mode="fast")`: rows become Requests (left padding stripped), outputs laid out like
    `.sequences` ([B, L + K*C], the longest row's K; shorter rows filled with pad, or their EOS id)."""
    from engine.fast import Engine, Request

    B, L = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    base = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
    reqs = [
        Request(
            id=str(b),
            input_ids=input_ids[b][mask[b]].tolist(),
            seed=base + b,
            params=params,
            commit_hook=commit_hook,
            logprobs=output_logprobs,
            pins=None if pins is None else pins[b],
        )
        for b in range(B)
    ]
    step_cb = None if on_step is None else (lambda ids, am: on_step(am, -1, -1))
    eng = Engine(model, max_batch_rows=max_batch_rows or max(B, 1), counters=counters, on_step=step_cb)
    comps = eng.generate(reqs)
    for c in comps:
        if c.finish_reason == "error":
            raise ValueError(f"generate: row {c.id}: {c.error}")
    width = max(len(c.canvas_tokens) for c in comps)
    fill = (
        params.pad_token_id
        if params.pad_token_id is not None
        else (params.eos_token_ids[0] if params.eos_token_ids else 0)
    )
    new = torch.full((B, width), fill, dtype=torch.long)
    logprobs = torch.full((B, width), float("nan")) if output_logprobs else None
    for b, c in enumerate(comps):
        new[b, : len(c.canvas_tokens)] = torch.tensor(c.canvas_tokens, dtype=torch.long)
        if logprobs is not None:
            logprobs[b, : len(c.logprobs)] = torch.tensor(c.logprobs, dtype=torch.float32)
    return torch.cat([input_ids.cpu(), new], dim=1).to(input_ids.device), logprobs


def generate_text(
    model,
    tokenizer,
    prompts: list[str],
    *,
    chat: bool = True,
    mode: str = "fast",
    seed: int | None = 0,
    **params: Any,
) -> list[str]:
    """Strings in, strings out. chat=True applies the tokenizer's chat template (user turn, generation
    prompt); EOS and everything after it is dropped and special tokens are skipped when decoding."""
    if isinstance(prompts, str):
        prompts = [prompts]
    ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts]
    gp = GenerationParams.from_model(
        model, **{("eos_token_ids" if k == "eos_token_id" else k): v for k, v in params.items()}
    )
    if mode == "reference":
        input_ids, mask = left_pad(ids, gp.pad_token_id if gp.pad_token_id is not None else 0)
        L = input_ids.shape[1]
        out = generate(model, input_ids, mask, mode="reference", seed=seed, **params)
        news = [until_stop(out[b, L:].tolist(), gp.eos_token_ids) for b in range(len(ids))]
    else:
        from engine.fast import Engine, Request

        base = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
        reqs = [Request(id=str(i), input_ids=x, seed=base + i, params=gp) for i, x in enumerate(ids)]
        comps = Engine(model).generate(reqs)
        for c in comps:
            if c.finish_reason == "error":
                raise ValueError(f"generate_text: prompt {c.id}: {c.error}")
        news = [c.token_ids for c in comps]
    return [_decode(tokenizer, t) for t in news]


def _decode(tokenizer, ids: list[int]) -> str:
    try:
        return tokenizer.decode(ids, skip_special_tokens=True)
    except TypeError:
        return tokenizer.decode(ids)
