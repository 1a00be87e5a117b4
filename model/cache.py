"""KV cache: a slot cache with per-row lengths, whose sliding-window layers keep only a bounded ring of slots
per row.

Legend: B slots (rows), KV key/value heads, S cache capacity, D head dim, R selected rows, T new tokens,
N = window_slots (the sliding layers' ring), W the sliding window.
Every row has logical indices 0..length-1 (left-pad slots included); the logical index *is* the position
the window masks use (the reference's DynamicSlidingWindowLayer keeps the last W-1 tokens, pads included).
  * Global layers: `k[i]`, `v[i]` are [B, KV_i, S, D_i] with logical index j at slot j (S = max_len).
  * Sliding layers: [B, KV_i, N, D_i] with N = min(max_len, W - 1 + window_chunk); logical index j sits at
    ring slot j % N. The decoder reads the last W-1 tokens and an encoder pass of at most window_chunk new
    tokens reads the W-1 before them, so N slots always hold every key a pass can see (model/transformer.py
    splits longer encodes into chunks). While a row's length is at most N, slot = logical index, exactly
    the full-length layout: only rows longer than N wrap, and only then do masks come from `held_positions`
    (the logical index each ring slot holds) instead of slot indices.
Keys are post k_norm+RoPE, values v_normed. `valid_BS` [B, S] is per logical index: False at left-pad
(and never-written) indices; `length_B` counts written tokens.
"""

from __future__ import annotations

import torch

from model.config import DiffusionGemmaConfig

# New tokens one encoder pass may add beyond the window on sliding layers: the ring's slack. Larger means
# fewer prefill passes over a long prompt (better expert GEMM shapes) but more ring slots per row (memory)
# and more keys per sliding layer once a row wraps (the decoder reads the whole ring then).
WINDOW_CHUNK = 512


def window_slots(config: DiffusionGemmaConfig, max_len: int, window_chunk: int = WINDOW_CHUNK) -> int:
    """Ring slots per row on sliding layers for a cache of max_len tokens."""
    return min(max_len, config.text.sliding_window - 1 + window_chunk)


def kv_row_bytes(
    config: DiffusionGemmaConfig, dtype: torch.dtype, max_len: int, window_chunk: int = WINDOW_CHUNK
) -> int:
    """K and V bytes of one cache row of max_len tokens over all layers (sliding layers: their ring)."""
    t = config.text
    esize = torch.empty((), dtype=dtype).element_size()
    n = window_slots(config, max_len, window_chunk)
    return sum(
        2 * t.layer_kv_heads(i) * t.layer_head_dim(i) * esize * (n if t.is_sliding(i) else max_len)
        for i in range(t.num_hidden_layers)
    )


class KVCache:
    def __init__(
        self,
        config: DiffusionGemmaConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        window_chunk: int = WINDOW_CHUNK,
    ):
        if window_chunk < 1:
            raise ValueError(f"KVCache.window_chunk: expected an int >= 1, got {window_chunk}")
        t = config.text
        self.config = config
        self.batch_size, self.max_len = batch_size, max_len
        self.dtype, self.device = dtype, torch.device(device)
        self.window_chunk = window_chunk
        self.window_slots = window_slots(config, max_len, window_chunk)
        self.sliding = [t.is_sliding(i) for i in range(t.num_hidden_layers)]
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        for i in range(t.num_hidden_layers):
            shape = (batch_size, t.layer_kv_heads(i), self.layer_slots(i), t.layer_head_dim(i))
            self.k.append(torch.zeros(shape, dtype=dtype, device=self.device))
            self.v.append(torch.zeros(shape, dtype=dtype, device=self.device))
        self.valid_BS = torch.zeros(batch_size, max_len, dtype=torch.bool, device=self.device)
        self.length_B = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    def layer_slots(self, layer: int) -> int:
        """Slots per row of a layer: the ring on sliding layers, max_len on global ones."""
        return self.window_slots if self.sliding[layer] else self.max_len

    def wraps(self, length_max: int) -> bool:
        """Whether a row of this length has wrapped its sliding ring (slot != logical index)."""
        return length_max > self.window_slots

    def rows(self, rows_B: torch.Tensor | None) -> torch.Tensor:
        """Slot ids as a long tensor on the cache device (all slots when None)."""
        if rows_B is None:
            return torch.arange(self.batch_size, device=self.device)
        return torch.as_tensor(rows_B, dtype=torch.long, device=self.device)

    def held_positions(self, length_R: torch.Tensor) -> torch.Tensor:
        """pos_RN: the logical index each ring slot of rows with these lengths holds (negative: never
        written), i.e. the largest j < length with j % N == slot."""
        N = self.window_slots
        s_N = torch.arange(N, device=self.device)
        laps = torch.div(length_R[:, None] - 1 - s_N, N, rounding_mode="floor")
        return s_N + N * laps

    def held_valid(self, rows_R: torch.Tensor | None, pos_RN: torch.Tensor) -> torch.Tensor:
        """valid_RN of the tokens the ring slots hold (False at never-written slots and left pads)."""
        valid = self.valid_BS if rows_R is None else self.valid_BS.index_select(0, rows_R)
        return (pos_RN >= 0) & valid.gather(1, pos_RN.clamp(min=0))

    def write(
        self,
        layer: int,
        rows_R: torch.Tensor,
        idx_RT: torch.Tensor,
        k_RKTD: torch.Tensor,
        v_RKTD: torch.Tensor,
        ring_RT: torch.Tensor | None = None,
    ) -> None:
        """Store new K/V of logical indices idx_RT of rows_R (sliding layers: at their ring slots, `ring_RT`
        when the caller computed them once for all layers, else idx_RT % N where the cache can wrap).

        Under no_grad this is an in-place slot write; when autograd is tracking (training) the layer's tensors
        are replaced out of place so gradients flow from later reads back into the keys/values.
        """
        if self.sliding[layer]:
            if ring_RT is not None:
                idx_RT = ring_RT
            elif self.window_slots < self.max_len:
                idx_RT = idx_RT % self.window_slots
        where = (rows_R[:, None], idx_RT)
        k_new, v_new = k_RKTD.transpose(1, 2), v_RKTD.transpose(1, 2)  # [R, T, KV, D] to match the index
        if k_new.requires_grad or self.k[layer].requires_grad:
            self.k[layer] = (
                self.k[layer].transpose(1, 2).index_put(where, k_new.to(self.dtype)).transpose(1, 2)
            )
            self.v[layer] = (
                self.v[layer].transpose(1, 2).index_put(where, v_new.to(self.dtype)).transpose(1, 2)
            )
        else:
            self.k[layer].transpose(1, 2).index_put_(where, k_new.to(self.dtype))
            self.v[layer].transpose(1, 2).index_put_(where, v_new.to(self.dtype))

    def copy_rows(self, src: KVCache, rows_R: torch.Tensor) -> None:
        """Copy rows (same slot ids) from a smaller or equal cache of the same window_chunk, layer by layer.

        Rings keep their layout: a source ring smaller than ours belongs to a cache that cannot wrap (its
        rows hold slot = logical index < its capacity), and equal rings map slot to slot.
        """
        if src.window_chunk != self.window_chunk or src.max_len > self.max_len:
            raise ValueError(
                f"KVCache.copy_rows: source (max_len {src.max_len}, window_chunk {src.window_chunk}) does "
                f"not fit this cache (max_len {self.max_len}, window_chunk {self.window_chunk})"
            )
        for i in range(len(self.k)):
            n = src.layer_slots(i)
            self.k[i][rows_R, :, :n] = src.k[i][rows_R, :, :n]
            self.v[i][rows_R, :, :n] = src.v[i][rows_R, :, :n]
        self.valid_BS[rows_R, : src.max_len] = src.valid_BS[rows_R]
        self.length_B[rows_R] = src.length_B[rows_R]

    def reset(self, rows_B: torch.Tensor | None = None) -> None:
        """Forget rows (slot reuse): length 0 and nothing valid. Stale K/V stay but are never visible."""
        r = self.rows(rows_B)
        self.valid_BS[r] = False
        self.length_B[r] = 0
