"""THE denoising step and the canvas finalisation rule, shared by the reference loop and the fast engine.

Owns: the per-step update of a batch of canvases (`denoise_step`: decoder forward, temperature schedule,
statistics, entropy-bounded commit rule, sampling, renoising, adaptive stop, self-conditioning), the device
state it updates (`CanvasBatch`), and what happens to a committed canvas (`finish_row`: EOS / length / pad).
engine/generate.py (reference mode, lockstep batch) and engine/fast.py (fast mode, continuous batching) only
differ in how they form batches and which NoiseSource they pass; neither has its own copy of this math.

Also owns the optional per-step steering extension point (`RowSteer`, `steer_rows`): a CommitHook that
defines `steering_on` (true) and the methods `seed_canvas` / `steer` (constraints/hook.py) may
rewrite the first step's input canvas and each step's argmax (what the stop rule compares) and kept tokens.
Callers attach it with `st.steer_rows = steer_rows(...)`; it is None unless some row's hook asks for it,
and then the step does nothing extra (same tokens, same RNG use).

Legend: B rows in the decoder batch, C canvas length, V vocabulary, S cache slots.
Order of operations and RNG use follow transformers 5.23 `_denoising_step` (generation_diffusion_gemma.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

import kernels
from engine.params import GenerationParams
from engine.sampler import (
    NoiseSource,
    RowKeys,
    RowParams,
    accept_mask,
    stop_update,
    temperature_B,
)
from engine.vocab_head import ChunkedHead


@dataclass
class RowSteer:
    """One row's steering context for the canvas being denoised: its hook, the hook state carried into this
    canvas (the commit's), and the budget arguments its commit will get."""

    hook: Any
    state: object
    tokens_left: int
    last_canvas: bool
    seeded: bool = False  # seed_canvas already ran for this canvas


def steer_rows(hooks, states, tokens_left, last_canvas) -> list[RowSteer | None] | None:
    """Per-row steering contexts (batch order) for CanvasBatch.steer_rows; None when no hook steers."""
    rows = [
        RowSteer(h, s, int(t), bool(last)) if getattr(h, "steering_on", False) else None
        for h, s, t, last in zip(hooks, states, tokens_left, last_canvas)
    ]
    return rows if any(r is not None for r in rows) else None


@dataclass
class CanvasBatch:
    """Device state of the canvases in one decoder batch (batch order; all tensors lead with B)."""

    canvas_BC: torch.Tensor  # long, the noised canvas fed to the decoder next
    argmax_BC: torch.Tensor  # long, argmax of the last processed step: the commit candidate (-1 before any)
    sc_BCV: torch.Tensor | None  # processed logits of the last step in the embedding dtype (or their softmax:
    # sc_probs); None: no step yet
    has_sc_B: torch.Tensor  # bool, rows whose sc_BCV is real (False: first step of a canvas -> soft = 0)
    done_B: torch.Tensor  # bool, frozen by adaptive stopping (state no longer updated)
    run_B: torch.Tensor  # long, stability run length
    steps_left_B: torch.Tensor  # int32, N..1: the reference's cur_step (temperature, stop)
    live_B: torch.Tensor  # int32, decoder forwards taken while not frozen
    keys: RowKeys  # per-row random stream position (fast mode)
    rp: RowParams
    pos0_B: torch.Tensor  # long, position of the canvas' first token
    # the last live step's logits for commit hooks (read them with `last_logits`): fp32 processed logits, or
    # in the GPU head mode the raw LM head output, with last_cap / last_temp_B to process it at commit
    last_BCV: torch.Tensor | None = None
    last_cap: float | None = None  # set: last_BCV is raw (head mode); the model's final softcap
    last_temp_B: torch.Tensor | None = None  # head mode: each row's temperature of that step (None: none)
    soft_BCH: torch.Tensor | None = None  # chunked path: self-conditioning soft embedding (replaces sc_BCV)
    sc_probs: bool = False  # sc_BCV holds softmax(logits) already (the GPU head mode), not the logits
    steer_rows: list[RowSteer | None] | None = None  # optional steering (see module doc); None: off

    @classmethod
    def start(
        cls, canvas_BC: torch.Tensor, keys: RowKeys, rp: RowParams, pos0_B: torch.Tensor
    ) -> CanvasBatch:
        B, C = canvas_BC.shape
        dev = canvas_BC.device
        return cls(
            canvas_BC=canvas_BC,
            argmax_BC=torch.full((B, C), -1, dtype=torch.long, device=dev),
            sc_BCV=None,
            has_sc_B=torch.zeros(B, dtype=torch.bool, device=dev),
            done_B=torch.zeros(B, dtype=torch.bool, device=dev),
            run_B=torch.zeros(B, dtype=torch.long, device=dev),
            steps_left_B=rp.n_steps_B.clone(),
            live_B=torch.zeros(B, dtype=torch.int32, device=dev),
            keys=keys,
            rp=rp,
            pos0_B=pos0_B,
        )

    @property
    def size(self) -> int:
        return self.canvas_BC.shape[0]

    def last_logits(self, b: int) -> torch.Tensor:
        """Row b's fp32 processed logits [C, V] of its last live step (what a commit hook reads). In head mode
        the raw output is processed here, by the same epilogue as the materialised path (the same bits)."""
        if self.last_BCV is None:
            raise ValueError("last_logits: no step kept its logits (keep_logits was off)")
        if self.last_cap is None:
            return self.last_BCV[b]
        temp = None if self.last_temp_B is None else self.last_temp_B[b : b + 1]
        return kernels.logit_epilogue(self.last_BCV[b : b + 1], self.last_cap, temp)[0][0]

    def select(self, idx_B: torch.Tensor) -> CanvasBatch:
        """Rows idx_B of this batch (a new batch; sc/last gathered only when present)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = v.index_select(0, idx_B)
            elif f.name == "steer_rows" and v is not None:
                out[f.name] = [v[i] for i in idx_B.tolist()]
            elif isinstance(v, (RowKeys, RowParams)):
                out[f.name] = v.select(idx_B)
            else:
                out[f.name] = v
        return CanvasBatch(**out)

    @staticmethod
    def cat(parts: list[CanvasBatch], V: int, sc_dtype: torch.dtype) -> CanvasBatch:
        """Concatenate batches; rows without self-conditioning get zero logits (masked by has_sc_B) or a
        zero soft embedding (which is exactly no self-conditioning); rows without a kept step's temperature
        get 1."""
        parts = [p for p in parts if p.size]
        if len(parts) == 1:
            return parts[0]
        out = {}
        for f in fields(CanvasBatch):
            vals = [getattr(p, f.name) for p in parts]
            if f.name == "last_cap":  # one model per engine: the same cap wherever it is set
                out[f.name] = next((v for v in vals if v is not None), None)
                continue
            if f.name == "sc_probs":  # what sc_BCV holds: one kind per step path, so per batch
                kinds = {p.sc_probs for p in parts if p.sc_BCV is not None}
                if len(kinds) > 1:
                    raise ValueError("CanvasBatch.cat: parts hold self-conditioning logits and probabilities")
                out[f.name] = kinds.pop() if kinds else False
                continue
            if f.name in ("sc_BCV", "last_BCV", "soft_BCH", "last_temp_B"):
                if all(v is None for v in vals):
                    out[f.name] = None
                    continue
                ref = next(v for v in vals if v is not None)
                # a missing temperature is 1 (none); missing logits are zero (masked by has_sc_B, or
                # overwritten by the row's next step before anything reads them)
                fill = ref.new_ones if f.name == "last_temp_B" else ref.new_zeros
                out[f.name] = torch.cat(
                    [v if v is not None else fill((p.size, *ref.shape[1:])) for v, p in zip(vals, parts)]
                )
            elif f.name == "steer_rows":
                out[f.name] = (
                    None
                    if all(v is None for v in vals)
                    else [r for v, p in zip(vals, parts) for r in (v if v is not None else [None] * p.size)]
                )
            elif f.name == "keys":
                out[f.name] = RowKeys.cat(vals)
            elif f.name == "rp":
                out[f.name] = RowParams.cat(vals)
            else:
                out[f.name] = torch.cat(vals)
        return CanvasBatch(**out)


def uses_chunked_head(noise: NoiseSource, device: torch.device) -> bool:
    """Whether the step on `device` takes the chunked vocabulary path (see denoise_step's Path)."""
    chunked = getattr(noise, "chunked_head", None)
    return chunked is not None and chunked(device)


def uses_head_mode(noise: NoiseSource, device: torch.device) -> bool:
    """Whether the step on `device` samples from the raw LM head output instead of materialised fp32 logits
    (RowNoise on a GPU: see RowNoise.head_mode)."""
    head_mode = getattr(noise, "head_mode", None)
    return head_mode is not None and head_mode(device)


def denoise_step(
    model,
    cache,
    st: CanvasBatch,
    noise: NoiseSource,
    *,
    rows_B: torch.Tensor | None,
    freeze: bool,
    exact_frozen: bool,
    keep_logits: bool,
    all_have_sc: bool | None = None,
    len_range: tuple[int, int] | None = None,
    want_sc: bool = True,
) -> torch.Tensor | None:
    """One denoising step for every row of `st` (updated in place). Returns the processed logits (B, C, V),
    or None when they were never materialised (the chunked path without keep_logits; the GPU head mode
    without steering or exact frozen rows: commit hooks then read `st.last_logits`).

    freeze: some row uses adaptive stopping (else the stop rule is skipped entirely).
    exact_frozen: keep frozen rows' self-conditioning logits as the reference does (an extra pass over the
      logits; the fast engine drops frozen rows instead, so it only needs their argmax).
    keep_logits: maintain st.last_BCV for commit hooks (fp32 processed logits, or in the GPU head mode the
      raw LM head output; hooks read either through st.last_logits).
    all_have_sc: host-known hint that every row (True) or no row (False) has self-conditioning; None: mixed.
    len_range: host-known (min, max) cache length of the rows (then the decoder reads nothing from the
      device).
    want_sc: False when no row takes another step of this canvas, so the chunked path skips the
      self-conditioning GEMM and the head mode its softmax, whose result no step would read.
    Path: a noise source whose `chunked_head(device)` holds (the fast mode without the fused Triton sampler,
    i.e. on a CPU) never builds [B, C, V] logits (engine/vocab_head.py); one whose `head_mode(device)` holds
    (the fast mode on a GPU) samples from the raw LM head output and builds fp32 logits only for steering or
    exact frozen rows; every other case runs the reference's op sequence on materialised logits.
    """
    C = st.canvas_BC.shape[1]
    V = model.config.text.vocab_size
    positions_BC = st.pos0_B[:, None] + torch.arange(C, device=st.pos0_B.device)
    st.live_B += (~st.done_B).to(torch.int32)
    if st.steer_rows is not None:
        _seed_canvases(st)
    kw = dict(positions_BC=positions_BC, rows_B=rows_B, len_range=len_range)
    soft, chunked, sc_next, head_mode, sc_probs = None, False, None, False, False
    if uses_chunked_head(noise, st.canvas_BC.device):
        if all_have_sc is not False and st.soft_BCH is not None:
            soft = st.soft_BCH if all_have_sc else st.soft_BCH * st.has_sc_B[:, None, None]
        h = model.decode_hidden(st.canvas_BC, cache, sc_soft_BCH=soft, **kw)
        B = h.shape[0]
        inv_t = 1.0 / temperature_B(st.steps_left_B, st.rp) if st.rp.scheduled else torch.ones(B)
        head = ChunkedHead(model, h.reshape(B * C, -1), inv_t.to(h.device).repeat_interleave(C))
        sw = head.sweep(want_soft=want_sc, keep_full=keep_logits)
        argmax, entropy = sw.argmax_N.view(B, C), sw.entropy_N.view(B, C)
        keep = accept_mask(entropy, st.rp.bound_B)
        sampled = noise.sample_head(head, sw, keep, st.keys)
        proc = None if sw.full_NV is None else sw.full_NV.view(B, C, V)
        soft = None if sw.soft_NH is None else sw.soft_NH.view(B, C, -1)
        chunked = True
    else:
        sc, sc_mask = st.sc_BCV, None
        if all_have_sc is False:
            sc = None
        elif all_have_sc is None and sc is not None:
            sc_mask = st.has_sc_B
        sc_kw = {"sc_probs_BCV" if st.sc_probs else "sc_logits_BCV": sc}
        h = model.decode_hidden(st.canvas_BC, cache, sc_mask_B=sc_mask, **sc_kw, **kw)
        temp = temperature_B(st.steps_left_B, st.rp) if st.rp.scheduled else None
        if uses_head_mode(noise, st.canvas_BC.device):
            # The sampler reads the raw LM head output (the same statistics and samples, bit for bit:
            # kernels/sampler.py head mode) and commit hooks keep it raw (`last_logits`): the fp32 logits are
            # built only for steering or the reference's exact frozen rows.
            raw = model.head_raw(h)
            cap = model.config.text.final_logit_softcapping
            argmax, entropy = noise.raw_stats(raw, cap, temp, st.keys)
            keep = accept_mask(entropy, st.rp.bound_B)
            sampled = noise.raw_sample(raw, cap, temp, keep, st.keys)
            if freeze and exact_frozen:
                # the reference's frozen rows keep their self-conditioning logits as their logits: keep logits
                proc, sc_next = kernels.logit_epilogue(raw, cap, temp, model.dtype)
            else:
                # the next step's self-conditioning input straight from the LM head (softmax head mode), only
                # when a step of this canvas follows
                proc = kernels.logit_epilogue(raw, cap, temp)[0] if st.steer_rows is not None else None
                sc_next = kernels.softmax(raw, model.dtype, cap=cap, temperature_R=temp) if want_sc else None
                sc_probs = True
            head_mode = True
        else:
            # softcap, temperature and the next step's self-conditioning copy: one pass on the GPU
            proc, sc_next = model.head(h, temp, narrow=True)
            argmax, entropy = noise.stats(proc, st.keys)
            keep = accept_mask(entropy, st.rp.bound_B)
            sampled = noise.sample(proc, keep, st.keys)
    if st.steer_rows is not None and proc is not None:
        argmax, sampled = _steer(st, proc, argmax, keep, sampled)
    fresh = noise.renoise(st.keys, C, V, st.canvas_BC.device)
    canvas = torch.where(keep, sampled, fresh)
    done_before = st.done_B
    if freeze:
        d = st.done_B[:, None]
        argmax = torch.where(d, st.argmax_BC, argmax)
        canvas = torch.where(d, st.canvas_BC, canvas)
        if exact_frozen and st.sc_BCV is not None and proc is not None:
            proc = torch.where(d[..., None], st.sc_BCV, proc)
            sc_next = torch.where(d[..., None], st.sc_BCV, sc_next)  # == proc.to(model.dtype)
        st.run_B, stop = stop_update(argmax, st.argmax_BC, st.run_B, entropy.mean(dim=-1), st.rp)
        st.done_B = st.done_B | stop
    if keep_logits:
        # Frozen rows keep the logits of the step they froze at: that is what their argmax came from.
        last, last_temp = (raw, temp) if head_mode else (proc.float(), None)
        if freeze and st.last_BCV is not None:
            last = torch.where(done_before[:, None, None], st.last_BCV, last)
            if head_mode and (last_temp is not None or st.last_temp_B is not None):
                # no temperature is a temperature of 1 (x / 1 is exact) where frozen and live rows mix
                ones = torch.ones_like(done_before, dtype=torch.float32)
                last_temp = torch.where(
                    done_before,
                    st.last_temp_B if st.last_temp_B is not None else ones,
                    last_temp.float() if last_temp is not None else ones,
                )
        st.last_BCV, st.last_temp_B = last, last_temp
        st.last_cap = model.config.text.final_logit_softcapping if head_mode else None
    st.argmax_BC, st.canvas_BC = argmax, canvas
    if chunked:  # soft is None only when no step of this canvas follows (want_sc False)
        st.soft_BCH, st.sc_BCV = soft, None
    else:
        st.sc_BCV, st.sc_probs = sc_next, sc_probs
    st.has_sc_B = torch.ones_like(st.has_sc_B)
    st.steps_left_B = st.steps_left_B - 1
    st.keys = RowKeys(st.keys.seed_B, st.keys.canvas_B, st.keys.step_B + 1)
    return proc


def _seed_canvases(st: CanvasBatch) -> None:
    """First step of a canvas: let each steering hook rewrite its row's input canvas (seed_canvas)."""
    for b, rs in enumerate(st.steer_rows):
        if rs is None or rs.seeded:
            continue
        rs.seeded = True
        if hasattr(rs.hook, "seed_canvas"):
            new = rs.hook.seed_canvas(
                st.canvas_BC[b], rs.state, tokens_left=rs.tokens_left, last_canvas=rs.last_canvas
            )
            if new is not None:
                st.canvas_BC[b] = new


def _steer(
    st: CanvasBatch,
    proc_BCV: torch.Tensor,
    argmax_BC: torch.Tensor,
    keep_BC: torch.Tensor,
    sampled_BC: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each live steering row's hook may replace its argmax (the stop rule's canvas) and sampled tokens."""
    live = (~st.done_B).tolist()  # frozen rows keep their argmax and canvas anyway: no work for them
    argmax_BC, sampled_BC = argmax_BC.clone(), sampled_BC.clone()
    for b, rs in enumerate(st.steer_rows):
        if rs is None or not live[b] or not hasattr(rs.hook, "steer"):
            continue
        out = rs.hook.steer(
            proc_BCV[b],
            argmax_BC[b],
            keep_BC[b],
            sampled_BC[b],
            rs.state,
            tokens_left=rs.tokens_left,
            last_canvas=rs.last_canvas,
        )
        if out is not None:
            argmax_BC[b], sampled_BC[b] = out
    return argmax_BC, sampled_BC


def finish_row(
    tokens: list[int],
    params: GenerationParams,
    *,
    prev_finished: bool,
    last_canvas: bool,
    hook_done: bool = False,
) -> tuple[list[int], bool, bool]:
    """Apply the reference's end-of-canvas rule to one row's committed canvas.

    Returns (tokens as they enter the sequence, finished, hit_eos). Rows finished before get a canvas of pad
    (when pad is set); a canvas with EOS has everything after its first EOS replaced by pad (when set); the
    last canvas of the budget finishes every row; a commit hook may finish the row itself.
    """
    pad, eos = params.pad_token_id, set(params.eos_token_ids)
    if prev_finished and pad is not None:
        tokens = [pad] * len(tokens)
    first = next((i for i, t in enumerate(tokens) if t in eos), None)
    hit_eos = first is not None
    if hit_eos and pad is not None:
        tokens = tokens[: first + 1] + [pad] * (len(tokens) - first - 1)
    finished = prev_finished or hit_eos or last_canvas or hook_done
    return tokens, finished, hit_eos
