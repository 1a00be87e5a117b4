"""THE denoising step, shared by the reference loop (engine/generate.py) and the fast engine (engine/fast.py).

Owns: the per-step update of a batch of canvases (`denoise_step`: decoder forward, temperature schedule, the
vocabulary head's statistics, the entropy-bounded commit rule, sampling, renoising, the adaptive stop rule,
self-conditioning, the argmax's log-probability for rows that report logprobs), the state it updates
(`CanvasBatch`: device tensors, and per row what the host knows, `RowHost`), and the optional per-step
steering by commit hooks (`RowSteer`, `steer_rows`). The two loops only differ in how they form batches and
which vocabulary head they choose once (engine/heads.py); neither has a copy of this math, and the step takes
no mode flags: what differs between rows or batches is data on the batch (each row's parameters, cache
length, steps left, whether its hook reads logits or steers, whether it reports logprobs).

Steering: a SteeringHook (engine/commit_hook.py) with `steering_on` may rewrite the first step's input
canvas (`seed_canvas`) and each step's argmax (what the stop rule compares) and kept tokens (`steer`). A row
without one costs nothing (same tokens, same RNG use).

Legend: B rows in the decoder batch, C canvas length, V vocabulary, H hidden.
Order of operations and RNG use follow transformers 5.23 `_denoising_step` (generation_diffusion_gemma.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import pins as pinning
from engine.commit_hook import CommitHook, SteeringHook, is_argmax, steers
from engine.heads import VocabHead
from engine.kept_logits import KeptLogits
from engine.params import GenerationParams
from engine.sampler import RowKeys, RowParams, accept_mask, order_mask, stop_update, temperature_B


@dataclass
class RowSteer:
    """One row's steering context for the canvas being denoised: its hook, the hook state carried into this
    canvas (the commit's), and the budget arguments its commit will get."""

    hook: SteeringHook
    state: object
    tokens_left: int
    last_canvas: bool
    seeded: bool = False  # seed_canvas already ran for this canvas


def steer_rows(hooks, states, tokens_left, last_canvas) -> list[RowSteer | None] | None:
    """Per-row steering contexts (batch order); None when no hook steers."""
    rows = [
        RowSteer(h, s, int(t), bool(last)) if steers(h) else None
        for h, s, t, last in zip(hooks, states, tokens_left, last_canvas)
    ]
    return rows if any(r is not None for r in rows) else None


@dataclass
class RowHost:
    """What the host knows about one row of a batch, so that the step reads nothing back from the device."""

    params: GenerationParams
    cache_len: int  # tokens in its cache: its prompt and committed canvases (= the canvas' first position)
    steps_left: int  # denoising steps left in this canvas (the reference's cur_step)
    reads_logits: bool = False  # its commit hook reads the last step's logits (CanvasBatch.kept)
    steer: RowSteer | None = None
    argmax_logprobs: bool = False  # an argmax row reporting logprobs: the step tracks CanvasBatch.logp_BC


# per-row device tensors of CanvasBatch (all lead with B)
_ROW_TENSORS = ("canvas_BC", "argmax_BC", "logp_BC", "done_B", "run_B", "steps_left_B", "live_B", "pos0_B")


@dataclass
class CanvasBatch:
    """The canvases of one decoder batch (batch order)."""

    canvas_BC: torch.Tensor  # long, the noised canvas fed to the decoder next
    argmax_BC: torch.Tensor  # long, argmax of the last processed step: the commit candidate (-1 before any)
    logp_BC: torch.Tensor  # fp32, its log-probability under that step's processed logits; updated only while
    # some row of the batch has argmax_logprobs (other rows' values are stale, never read; steering rows'
    # argmax may be the hook's, they are scored at commit instead)
    done_B: torch.Tensor  # bool, frozen by adaptive stopping (state no longer updated)
    run_B: torch.Tensor  # long, stability run length
    steps_left_B: torch.Tensor  # int32, N..1: RowHost.steps_left on the device (temperature, stop)
    live_B: torch.Tensor  # int32, decoder forwards taken while not frozen
    pos0_B: torch.Tensor  # long, RowHost.cache_len on the device: position of the canvas' first token
    keys: RowKeys  # per-row random stream position (fast mode)
    rp: RowParams
    rows: list[RowHost]
    sc: torch.Tensor | None = None  # the head's self-conditioning state (engine/heads.py); None: no row has
    # one yet, a zero row: that row has none
    kept: KeptLogits | None = None  # the last live step's logits, for commit hooks (rows that read them)
    pin_BC: torch.Tensor | None = None  # long, each position's pinned token or pins.FREE (engine/pins.py);
    # None: no row of the batch pins anything in its canvas

    @classmethod
    def start(
        cls, canvas_BC: torch.Tensor, keys: RowKeys, rows: list[RowHost], pin_BC: torch.Tensor | None = None
    ) -> CanvasBatch:
        """Fresh canvases (noise already drawn) for rows at the first step of a canvas; pinned positions
        start as their pins (engine/pins.py rule 1)."""
        B, C = canvas_BC.shape
        dev = canvas_BC.device
        rp = RowParams.build([r.params for r in rows], dev)
        return cls(
            canvas_BC=pinning.apply(pin_BC, canvas_BC),
            argmax_BC=torch.full((B, C), -1, dtype=torch.long, device=dev),
            logp_BC=torch.zeros((B, C), dtype=torch.float32, device=dev),
            done_B=torch.zeros(B, dtype=torch.bool, device=dev),
            run_B=torch.zeros(B, dtype=torch.long, device=dev),
            steps_left_B=rp.n_steps_B.clone(),
            live_B=torch.zeros(B, dtype=torch.int32, device=dev),
            pos0_B=torch.tensor([r.cache_len for r in rows], dtype=torch.long, device=dev),
            keys=keys,
            rp=rp,
            rows=list(rows),
            pin_BC=pin_BC,
        )

    @property
    def size(self) -> int:
        return self.canvas_BC.shape[0]

    def select(self, idx: list[int]) -> CanvasBatch:
        """Rows idx of this batch (a new batch)."""
        idx_B = torch.tensor(idx, dtype=torch.long, device=self.canvas_BC.device)
        return CanvasBatch(
            **{n: getattr(self, n).index_select(0, idx_B) for n in _ROW_TENSORS},
            keys=self.keys.select(idx_B),
            rp=self.rp.select(idx_B),
            rows=[self.rows[i] for i in idx],
            sc=None if self.sc is None else self.sc.index_select(0, idx_B),
            kept=None if self.kept is None else self.kept.select(idx_B),
            pin_BC=None if self.pin_BC is None else self.pin_BC.index_select(0, idx_B),
        )

    @staticmethod
    def cat(parts: list[CanvasBatch]) -> CanvasBatch:
        """Concatenate batches; rows without a self-conditioning state get zeros (exactly none), rows without
        kept logits get zeros too (overwritten by their next step, before any commit)."""
        parts = [p for p in parts if p.size]
        if len(parts) == 1:
            return parts[0]
        return CanvasBatch(
            **{n: torch.cat([getattr(p, n) for p in parts]) for n in _ROW_TENSORS},
            keys=RowKeys.cat([p.keys for p in parts]),
            rp=RowParams.cat([p.rp for p in parts]),
            rows=[r for p in parts for r in p.rows],
            sc=_cat_zero_filled([(p.sc, p.size) for p in parts]),
            kept=KeptLogits.cat([(p.kept, p.size) for p in parts]),
            pin_BC=_cat_free_filled([(p.pin_BC, p.size, p.canvas_BC.shape[1]) for p in parts]),
        )


def _cat_zero_filled(parts: list[tuple[torch.Tensor | None, int]]) -> torch.Tensor | None:
    """Concatenate (tensor, rows) parts, zeros for parts without one (None when no part has one). The zero
    fill lives only inside this call: a canvas boundary holds at most 3 copies of a [C, V] buffer
    (model/memory_plan.py)."""
    ref = next((t for t, _ in parts if t is not None), None)
    if ref is None:
        return None
    return torch.cat([t if t is not None else ref.new_zeros((n, *ref.shape[1:])) for t, n in parts])


def _cat_free_filled(parts: list[tuple[torch.Tensor | None, int, int]]) -> torch.Tensor | None:
    """Concatenate (pin_BC, rows, C) parts, FREE rows for parts without pins (None when no part has any)."""
    ref = next((t for t, _, _ in parts if t is not None), None)
    if ref is None:
        return None
    return torch.cat([t if t is not None else ref.new_full((n, c), pinning.FREE) for t, n, c in parts])


def denoise_step(model, cache, st: CanvasBatch, head: VocabHead, rows_B: torch.Tensor | None = None) -> None:
    """One denoising step for every row of `st` (updated in place) with the loop's vocabulary head.

    rows_B: each row's cache slot (None: cache row b is batch row b). The host-known facts it needs come
    from st.rows: the rows' cache lengths (the decoder then reads nothing from the device), whether a step of
    this canvas follows (else no self-conditioning state is built), whether a commit hook reads the logits,
    whether some row uses adaptive stopping (else the stop rule is skipped) or steering.
    """
    C = st.canvas_BC.shape[1]
    V = model.config.text.vocab_size
    positions_BC = st.pos0_B[:, None] + torch.arange(C, device=st.pos0_B.device)
    st.live_B += (~st.done_B).to(torch.int32)
    steering = any(r.steer is not None for r in st.rows)
    if steering:
        _seed_canvases(st)
    lens = [r.cache_len for r in st.rows]
    soft = None if st.sc is None else head.sc_soft(model, st.sc)
    h = model.decode_hidden(
        st.canvas_BC, cache, positions_BC=positions_BC, sc_soft_BCH=soft, rows_B=rows_B,
        len_range=(min(lens), max(lens)),
    )
    temp = temperature_B(st.steps_left_B, st.rp) if st.rp.scheduled else None
    want_sc = any(r.steps_left > 1 for r in st.rows)
    keep_logits = any(r.reads_logits for r in st.rows)
    out = head.run(model, h, temp, st.keys, want_sc=want_sc, keep_logits=keep_logits)
    pin = st.pin_BC
    pinned = None if pin is None else pin >= 0
    # a pin is its position's only allowed token: entropy 0, so it is kept and costs the bound nothing
    entropy = out.entropy_BC if pinned is None else out.entropy_BC.masked_fill(pinned, 0.0)
    keep = order_mask(accept_mask(entropy, st.rp.bound_B), st.rp, st.steps_left_B)  # the commit rule
    if pinned is not None:
        keep = keep | pinned
    sampled = pinning.apply(pin, out.sample(keep, st.keys))
    argmax = pinning.apply(pin, out.argmax_BC)
    logp = out.argmax_logprob() if any(r.argmax_logprobs for r in st.rows) else st.logp_BC
    if pinned is not None:
        logp = logp.masked_fill(pinned, 0.0)
    if steering:
        argmax, sampled = _steer(st, out.logits(), argmax, keep, sampled)
    sc = out.sc_next() if want_sc else None
    canvas = torch.where(keep, sampled, head.noise.renoise(st.keys, C, V, st.canvas_BC.device))
    frozen = st.done_B
    kept = out.kept() if keep_logits else st.kept
    if any(r.params.early_stopping for r in st.rows):
        # the stop rule: frozen rows keep their argmax, canvas and the logits their argmax came from
        d = frozen[:, None]
        argmax = torch.where(d, st.argmax_BC, argmax)
        logp = torch.where(d, st.logp_BC, logp)
        canvas = torch.where(d, st.canvas_BC, canvas)
        st.run_B, stop = stop_update(argmax, st.argmax_BC, st.run_B, entropy.mean(dim=-1), st.rp)
        st.done_B = frozen | stop
        if sc is not None and st.sc is not None:
            sc = head.carry_sc(st.sc, sc, frozen)
        if keep_logits and st.kept is not None:
            kept = st.kept.where(frozen, kept)
    st.argmax_BC, st.logp_BC, st.canvas_BC, st.sc, st.kept = argmax, logp, canvas, sc, kept
    st.steps_left_B = st.steps_left_B - 1
    st.keys = RowKeys(st.keys.seed_B, st.keys.canvas_B, st.keys.step_B + 1)
    for r in st.rows:
        r.steps_left -= 1


def _seed_canvases(st: CanvasBatch) -> None:
    """First step of a canvas: let each steering hook rewrite its row's input canvas (seed_canvas)."""
    for b, r in enumerate(st.rows):
        rs = r.steer
        if rs is None or rs.seeded:
            continue
        rs.seeded = True
        new = rs.hook.seed_canvas(
            st.canvas_BC[b], rs.state, tokens_left=rs.tokens_left, last_canvas=rs.last_canvas
        )
        if new is not None:
            st.canvas_BC[b] = new if st.pin_BC is None else pinning.apply(st.pin_BC[b], new)


def _steer(
    st: CanvasBatch,
    proc_BCV: torch.Tensor,
    argmax_BC: torch.Tensor,
    keep_BC: torch.Tensor,
    sampled_BC: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each live steering row's hook may replace its argmax (the stop rule's canvas) and sampled tokens; it
    reads logits where its pins are the only allowed tokens, and cannot move a pin."""
    live = (~st.done_B).tolist()  # frozen rows keep their argmax and canvas anyway: no work for them
    argmax_BC, sampled_BC = argmax_BC.clone(), sampled_BC.clone()
    for b, r in enumerate(st.rows):
        rs = r.steer
        if rs is None or not live[b]:
            continue
        pin_C = None if st.pin_BC is None else st.pin_BC[b]
        out = rs.hook.steer(
            pinning.mask_logits(proc_BCV[b], pin_C),
            argmax_BC[b],
            keep_BC[b],
            sampled_BC[b],
            rs.state,
            tokens_left=rs.tokens_left,
            last_canvas=rs.last_canvas,
        )
        if out is not None:
            argmax_BC[b], sampled_BC[b] = (out if pin_C is None else (pinning.apply(pin_C, t) for t in out))
    return argmax_BC, sampled_BC


def host_rows(
    params: list[GenerationParams],
    cache_len: list[int],
    hooks: list[CommitHook | None],
    states: list[object],
    tokens_left: list[int],
    last_canvas: list[bool],
    logprobs: list[bool],
) -> list[RowHost]:
    """The RowHost of each row starting a canvas (its hook reads logits unless it is the argmax commit; an
    argmax row reporting logprobs has its argmax's log-probability tracked)."""
    steer = steer_rows(hooks, states, tokens_left, last_canvas) or [None] * len(params)
    return [
        RowHost(p, n, p.max_denoising_steps, not is_argmax(h), s, lp and is_argmax(h))
        for p, n, h, s, lp in zip(params, cache_len, hooks, steer, logprobs)
    ]
