"""KV-cache slots and the memory budget of the fast engine: who may join the decoder batch, and where.

Owns: `SlotCache`, which owns the engine's KVCache, hands out row slots, grows the cache (rows and length)
only while the budget allows, and refuses a request that could never fit. The budget counts what a row
holds while it is in the batch: its cache slots (prompt + all canvases but the last, every layer's K and V)
plus its per-step vocabulary buffers (fp32 logits and the self-conditioning copy, C x V each).

Legend: R slots (cache rows), S cache length (tokens per slot), N sliding ring slots, C canvas, V vocabulary.
The cache is dense ([R, KV, S, D] per global layer, [R, KV, N, D] per sliding layer with
N = min(S, W - 1 + window_chunk): model/cache.py), so its bytes are R * model/cache.py kv_row_bytes(S):
a fixed cost per row on sliding layers once S passes N, S tokens' worth on global ones. Admission checks the
cache the batch would need after growing, not the sum of the rows' own needs.
"""

from __future__ import annotations

import torch

from model.cache import KVCache, kv_row_bytes


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """K and V bytes of one cached token over all layers (what a row costs per token while it is shorter
    than the sliding ring; model/cache.py kv_row_bytes is the cost of a row of any length)."""
    t = config.text
    esize = torch.empty((), dtype=dtype).element_size()
    return sum(2 * t.layer_kv_heads(i) * t.layer_head_dim(i) * esize for i in range(t.num_hidden_layers))


class SlotCache:
    """The engine's KVCache plus slot bookkeeping under a byte budget (None: unlimited)."""

    def __init__(self, model, *, max_rows: int, budget_bytes: int | None, length_step: int):
        self.model = model
        self.max_rows = max_rows
        self.budget = budget_bytes
        self.step = max(1, length_step)  # grow the length in canvas multiples (fewer reallocations)
        V, C = model.config.text.vocab_size, model.config.canvas_length
        esize = torch.empty((), dtype=model.dtype).element_size()
        self.per_row_work = C * V * (4 + esize + 4)  # logits, self-conditioning copy, the proc temporaries
        self.cache: KVCache | None = None
        self.free: list[int] = []
        self.used: set[int] = set()

    def bytes_for(self, rows: int, length: int) -> int:
        kv = kv_row_bytes(self.model.config, self.model.dtype, length, self.model.window_chunk)
        return rows * (kv + self.per_row_work)

    def fits_alone(self, need: int) -> bool:
        return self.budget is None or self.bytes_for(1, need) <= self.budget

    def try_admit(self, need: int) -> int | None:
        """A slot with room for `need` tokens, growing the cache if the budget allows; None: wait."""
        rows = 0 if self.cache is None else self.cache.batch_size
        length = 0 if self.cache is None else self.cache.max_len
        active = len(self.used)
        if active >= self.max_rows:
            return None
        want_rows = rows if self.free else min(self.max_rows, max(rows * 2, active + 1, 1))
        want_len = length if need <= length else -(-need // self.step) * self.step
        if want_rows != rows or want_len != length:
            if self.budget is not None and self.bytes_for(want_rows, want_len) > self.budget:
                # Grow by just one row (or to the exact length) before giving up.
                want_rows = rows if self.free else active + 1
                want_len = max(length, need)
                if self.bytes_for(max(want_rows, active + 1), want_len) > self.budget:
                    return None
            self._resize(max(want_rows, rows), want_len)
        slot = self.free.pop(0)
        self.used.add(slot)
        self.cache.reset(torch.tensor([slot], device=self.cache.device))
        return slot

    def release(self, slot: int) -> None:
        self.used.discard(slot)
        self.free.append(slot)
        self.free.sort()
        if not self.used and self.budget is not None:
            self.cache, self.free = None, []  # an empty batch gives its memory back

    def _resize(self, rows: int, length: int) -> None:
        new = self.model.new_cache(rows, length)
        old = self.cache
        if old is not None and self.used:
            # layer by layer (one layer's rows gathered at a time); sliding rings keep their slot layout
            new.copy_rows(old, torch.tensor(sorted(self.used), device=new.device))
        old_rows = 0 if old is None else old.batch_size
        self.free = sorted(set(self.free) | set(range(old_rows, rows)) - self.used)
        self.cache = new
