"""The fast-mode engine: continuous batching at canvas granularity over the one denoising step.

Owns: `Request` / `Completion` (engine/request.py), per-row host state (`_Row`), and `Engine.run`, the
production loop: rows join when a slot and budget are free (prefill), rows at different canvases share one
decoder forward (per-row positions and cache lengths), a finished canvas is committed (argmax or the row's
CommitHook) and encoded, a finished row leaves and yields its Completion. Frozen rows (adaptive stop) are
dropped from the decoder batch at the next check.

Randomness is per row (engine/sampler.py RowNoise): a row's tokens depend only on (model, prompt, params,
seed, hook), not on its batch mates or their order (up to floating-point batch variance of the model).

The vocabulary head (engine/heads.py) is chosen once per run for the model's device.

Per-row options: `Request.logprobs` (the committed tokens' log-probabilities, engine/commit_hook.py; argmax
rows read theirs back with the canvas, one more read per event that commits such a row) and `Request.stop`
(after each committed canvas the row's output is decoded with the engine's `detokenize` and the row ends at
the first stop string: engine/stop_strings.py).

Host synchronisation: the step loop reads nothing from the device (the host knows every row's cache length
and hands the model its key range, so model.decode/encode do not read lengths back either). The host knows
every row's remaining steps (CanvasBatch.rows), so it runs straight to the next canvas end; with adaptive
stopping on it also stops every `check_every` steps to read the frozen flags. Each such event costs one read
(Counters.host_syncs).

Legend: B rows in the decoder batch, C canvas, V vocabulary, P prompt length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from engine.commit_hook import commit_canvas
from engine.counters import Counters
from engine.denoise import CanvasBatch, denoise_step, host_rows
from engine.heads import fast_head
from engine.params import GenerationParams, first_stop
from engine.pins import Pins, pin_tensor
from engine.request import Completion, Request
from engine.sampler import RowKeys, RowNoise
from engine.scheduler import SlotCache
from engine.stop_strings import Detokenize, StopHit, find_stop, stop_problem


@dataclass
class _Row:
    req: Request
    slot: int
    n_canvases: int
    canvas: int = 0  # index of the canvas being denoised
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # per token of `tokens` (Request.logprobs)
    forwards: int = 0
    hook_state: object | None = None


def _error(req: Request, msg: str) -> Completion:
    return Completion(
        id=req.id,
        token_ids=[],
        finish_reason="error",
        num_tokens=0,
        canvases=0,
        denoising_steps=0,
        tokens_per_forward=0.0,
        error=msg,
    )


class Engine:
    """Fast-mode generation over a stream of Requests (see module doc)."""

    def __init__(
        self,
        model,
        *,
        max_batch_rows: int = 16,
        kv_budget_bytes: int | None = None,
        check_every: int = 4,
        counters: Counters | None = None,
        on_step: Callable[[list[str], torch.Tensor], None] | None = None,
        detokenize: Detokenize | None = None,
    ):
        if max_batch_rows < 1 or check_every < 1:
            raise ValueError("Engine: max_batch_rows and check_every must be >= 1")
        self.model = model
        self.C = model.config.canvas_length
        self.V = model.config.text.vocab_size
        self.max_pos = model.config.text.max_position_embeddings
        self.max_rows = max_batch_rows
        self.budget = kv_budget_bytes
        self.check_every = check_every
        self.counters = counters or Counters()
        self.on_step = on_step  # (request ids in batch order, argmax_BC) after every step; reads the device
        self.detokenize = detokenize  # token ids -> text, for rows with stop strings
        self.noise = RowNoise()
        self.peak_rows = 0  # most rows ever in the decoder batch (tests, bench)
        self.peak_bytes = 0  # largest cache + work-buffer footprint admitted (SlotCache.bytes_for)

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Run all requests; completions in input order."""
        by_id = {}
        for c in self.run(requests):
            by_id.setdefault(c.id, []).append(c)
        return [by_id[r.id].pop(0) for r in requests]

    # -- the loop ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, requests: Iterable[Request]) -> Iterator[Completion]:
        slots = SlotCache(self.model, max_rows=self.max_rows, budget_bytes=self.budget, length_step=self.C)
        head = fast_head(self.noise, self.model.device)
        incoming = iter(requests)
        waiting: deque[Request] = deque()
        rows: list[_Row] = []  # batch order
        batch: CanvasBatch | None = None
        exhausted = False
        while True:
            # Admission: fill free slots from the queue, in arrival order (head-of-line waits for memory).
            new_rows: list[_Row] = []
            while len(rows) + len(new_rows) < self.max_rows:
                if not waiting and not exhausted:
                    nxt = next(incoming, None)
                    if nxt is None:
                        exhausted = True
                    else:
                        waiting.append(nxt)
                if not waiting:
                    break
                req = waiting[0]
                problem = self._check(req, slots)
                if problem is not None:
                    waiting.popleft()
                    yield _error(req, problem)
                    continue
                slot = slots.try_admit(self._need(req))
                if slot is None:
                    if not rows and not new_rows:  # cannot happen: fits_alone was checked
                        raise RuntimeError("engine: admission stalled with an empty batch")
                    break
                waiting.popleft()
                new_rows.append(
                    _Row(
                        req=req,
                        slot=slot,
                        n_canvases=req.params.n_canvases(self.C),
                        hook_state=req.commit_hook.initial_state() if req.commit_hook else None,
                    )
                )
            if new_rows:
                self._prefill(new_rows, slots)
                part = self._start(new_rows, slots)
                batch = part if batch is None else CanvasBatch.cat([batch, part])
                rows += new_rows
                self.peak_rows = max(self.peak_rows, len(rows))
                c = slots.cache
                self.peak_bytes = max(self.peak_bytes, slots.bytes_for(c.batch_size, c.max_len))
            if not rows:
                if exhausted and not waiting:
                    return
                continue
            # Steps until the next event: the first host-known canvas end, or a frozen-flag check.
            n = min(h.steps_left for h in batch.rows)
            if any(r.req.params.early_stopping for r in rows):
                n = min(n, self.check_every)
            # passes over [rows, C, V] logits in memory, as the head makes them
            passes = head.passes_per_step(any(h.reads_logits for h in batch.rows))
            rows_B = torch.tensor([r.slot for r in rows], device=slots.cache.device)
            for _ in range(n):
                denoise_step(self.model, slots.cache, batch, head, rows_B)
                self.counters.step(len(rows), passes)
                if self.on_step is not None:
                    self.on_step([r.req.id for r in rows], batch.argmax_BC)
            # Event: one device read for frozen flags, live-forward counts and argmax canvases.
            host = self.counters.host_list(
                torch.cat(
                    [batch.done_B[:, None].long(), batch.live_B[:, None].long(), batch.argmax_BC], dim=1
                ),
                steady=False,
            )
            ending = [j for j, h in enumerate(batch.rows) if h.steps_left == 0 or host[j][0]]
            if not ending:
                continue
            # argmax rows reporting logprobs: their argmax's log-probabilities, one more read
            lp_rows = [j for j in ending if batch.rows[j].argmax_logprobs]
            logp = dict(zip(lp_rows, self.counters.host_list(batch.logp_BC[lp_rows]))) if lp_rows else {}
            cont: list[_Row] = []
            for j in ending:
                r = rows[j]
                r.forwards += host[j][1]
                done = self._commit(r, host[j][2:], logp.get(j), batch, j)
                if done is not None:
                    slots.release(r.slot)
                    yield done
                else:
                    cont.append(r)
            end_set = set(ending)
            keep = [j for j in range(len(rows)) if j not in end_set]
            if cont:
                self._encode_committed(cont, slots)
                for r in cont:
                    r.canvas += 1
            parts = []
            if keep:
                parts.append(batch.select(keep))
            if cont:
                parts.append(self._start(cont, slots))
            rows = [rows[j] for j in keep] + cont
            batch = CanvasBatch.cat(parts) if parts else None

    # -- pieces -------------------------------------------------------------------------------------------
    def _cached(self, r: _Row) -> int:
        """Tokens in row r's cache while it denoises canvas r.canvas: its prompt and committed canvases."""
        return len(r.req.input_ids) + r.canvas * self.C

    def _need(self, req: Request) -> int:
        """Cache tokens a row holds at most: the prompt and every canvas but the last (never encoded)."""
        return len(req.input_ids) + (req.params.n_canvases(self.C) - 1) * self.C

    def _check(self, req: Request, slots: SlotCache) -> str | None:
        """Per-row problems that make a request impossible (an error Completion, never an exception)."""
        ids = req.input_ids
        if not isinstance(req.params, GenerationParams):
            return f"request {req.id}: params must be a GenerationParams"
        if not ids:
            return f"request {req.id}: input_ids is empty"
        if not all(isinstance(t, int) and 0 <= t < self.V for t in ids):
            return f"request {req.id}: input_ids must be ints in [0, {self.V})"
        try:
            req.params.check_vocab(self.V)
        except ValueError as e:
            return f"request {req.id}: {e}"
        problem = stop_problem(req.stop)
        if problem is None and req.pins is not None:
            p = req.params
            problem = (req.pins.problem(self.V, p.max_new_tokens, p.eos_token_ids)
                       if isinstance(req.pins, Pins) else "pins must be an engine.pins.Pins")
        if problem is not None:
            return f"request {req.id}: {problem}"
        if req.stop and self.detokenize is None:
            return f"request {req.id}: stop strings need an Engine with a detokenize callable"
        total = len(ids) + req.params.n_canvases(self.C) * self.C
        if total > self.max_pos:
            return (
                f"request {req.id}: prompt ({len(ids)} tokens) + {req.params.n_canvases(self.C)} canvases of "
                f"{self.C} = {total} tokens exceeds the model maximum of {self.max_pos}"
            )
        if not slots.fits_alone(self._need(req)):
            need = slots.bytes_for(1, self._need(req))
            return (
                f"request {req.id}: prompt ({len(ids)} tokens) + max_new_tokens {req.params.max_new_tokens} "
                f"needs {need} bytes of KV cache and work buffers, over the engine's KV budget of "
                f"{self.budget} bytes"
            )
        return None

    def _prefill(self, new_rows: list[_Row], slots: SlotCache) -> None:
        # Rows keep their own 0-based positions, so prompts of equal length share one encoder pass.
        dev = slots.cache.device
        by_len: dict[int, list[_Row]] = {}
        for r in new_rows:
            by_len.setdefault(len(r.req.input_ids), []).append(r)
        for P, rs in by_len.items():
            ids = torch.tensor([r.req.input_ids for r in rs], dtype=torch.long, device=dev)
            self.model.encode(
                ids,
                slots.cache,
                positions_BT=torch.arange(P, device=dev).expand(len(rs), P),
                rows_B=torch.tensor([r.slot for r in rs], device=dev),
                len_range=(0, 0),  # fresh slots
            )
            self.counters.encoder_forwards += 1

    def _start(self, rs: list[_Row], slots: SlotCache) -> CanvasBatch:
        """Fresh canvases (per-row noise keyed by the canvas index) for rows at a canvas boundary."""
        dev = slots.cache.device
        keys = RowKeys(
            torch.tensor([r.req.seed for r in rs], dtype=torch.long, device=dev),
            torch.tensor([r.canvas for r in rs], dtype=torch.long, device=dev),
            torch.zeros(len(rs), dtype=torch.long, device=dev),
        )
        rows = host_rows(
            [r.req.params for r in rs],
            [self._cached(r) for r in rs],
            [r.req.commit_hook for r in rs],
            [r.hook_state for r in rs],
            [r.req.params.max_new_tokens - len(r.tokens) for r in rs],
            [r.canvas == r.n_canvases - 1 for r in rs],
            [r.req.logprobs for r in rs],
        )
        pin_BC = pin_tensor([r.req.pins for r in rs], [r.canvas for r in rs], self.C, dev)
        return CanvasBatch.start(self.noise.init_canvas(keys, self.C, self.V, dev), keys, rows, pin_BC)

    def _commit(
        self, r: _Row, argmax: list[int], logp: list[float] | None, batch: CanvasBatch, j: int
    ) -> Completion | None:
        """Commit row r's canvas (logp: its argmax's log-probabilities, when tracked); returns its Completion
        when the row is finished: by EOS, length or its hook, or by a stop string in its output so far."""
        p, req = r.req.params, r.req
        try:
            c = commit_canvas(
                req.commit_hook,
                r.hook_state,
                argmax,
                lambda: batch.kept.row(j),
                p,
                tokens_left=p.max_new_tokens - len(r.tokens),
                last_canvas=r.canvas == r.n_canvases - 1,
                argmax_logprobs=(lambda: logp) if req.logprobs else None,
                pin_C=None if req.pins is None else req.pins.canvas(r.canvas, self.C),
                hold=0 if req.pins is None else req.pins.hold_until(r.canvas, self.C),
            )
        except Exception as e:  # a bad hook fails its row, not the batch
            return _error(req, f"request {req.id}: commit hook failed: {type(e).__name__}: {e}")
        r.hook_state = c.state
        r.tokens += c.tokens
        r.logprobs += c.logprobs or []
        self.counters.canvases += 1
        if not (c.finished or req.stop):
            return None
        cut = first_stop(r.tokens, p.eos_token_ids)
        out = r.tokens if cut is None else r.tokens[:cut]
        if cut is None and c.hook_done and p.pad_token_id is not None:
            while out and out[-1] == p.pad_token_id:
                out = out[:-1]
        hit = None
        if req.stop:
            try:
                hit = find_stop(out, req.stop, self.detokenize)
            except Exception as e:  # a failing decode fails its row, not the batch
                return _error(req, f"request {req.id}: detokenize failed: {type(e).__name__}: {e}")
        if hit is None and not c.finished:
            return None
        return self._completion(r, out, cut is not None, c.hit_eos or c.hook_done, hit)

    def _completion(self, r: _Row, out: list[int], eos: bool, ended: bool, hit: StopHit | None) -> Completion:
        """Row r's Completion: `out` (its tokens before any EOS), or the part a stop string keeps."""
        counted = len(out) + int(eos)  # the reference counts the EOS token
        reason = "eos" if ended else "length"
        if hit is not None:
            out, counted, reason = out[: hit.n_tokens], hit.n_tokens, "stop"
        return Completion(
            id=r.req.id,
            token_ids=list(out),
            finish_reason=reason,
            num_tokens=len(out),
            canvases=r.canvas + 1,
            denoising_steps=r.forwards,
            tokens_per_forward=counted / max(r.forwards, 1),
            hook_state=r.hook_state,
            canvas_tokens=list(r.tokens),
            logprobs=r.logprobs[: len(out)] if r.req.logprobs else None,
            text=None if hit is None else hit.text,
            stop_reason=None if hit is None else hit.stop,
        )

    def _encode_committed(self, rs: list[_Row], slots: SlotCache) -> None:
        """Encode the rows' committed canvases (one batched pass) at the positions they were denoised at."""
        dev = slots.cache.device
        ids = torch.tensor([r.tokens[-self.C :] for r in rs], dtype=torch.long, device=dev)
        lens = [self._cached(r) for r in rs]  # the committed canvas lands right after them
        pos = torch.tensor(lens, device=dev)
        self.model.encode(
            ids,
            slots.cache,
            positions_BT=pos[:, None] + torch.arange(self.C, device=dev),
            rows_B=torch.tensor([r.slot for r in rs], device=dev),
            len_range=(min(lens), max(lens)),
        )
        self.counters.encoder_forwards += 1
