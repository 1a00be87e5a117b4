"""KV cache: a slot cache with per-row lengths (the contract in model_api.md).

Legend: B slots (rows), KV key/value heads, S cache capacity, D head dim, R selected rows, T new tokens.
Per layer `k[i]`, `v[i]` are [B, KV_i, S, D_i] (post k_norm+RoPE keys, v_normed values). Tokens of a row
sit left-aligned at indices 0..length-1 and the cache index *is* the row's position index used by the window
masks. Sliding layers store everything; their window is applied by masks: the encoder lets query i see
keys i-W < j <= i, the decoder lets the canvas see context keys j >= length-(W-1). That is exactly what the
reference's DynamicSlidingWindowLayer (which keeps the last W-1 tokens) produces.
`valid_BS` is False at left-pad slots (and at never-written slots); `length_B` counts written tokens.
"""

from __future__ import annotations

import torch

from model.config import DiffusionGemmaConfig


class KVCache:
    def __init__(
        self,
        config: DiffusionGemmaConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        t = config.text
        self.config = config
        self.batch_size, self.max_len = batch_size, max_len
        self.dtype, self.device = dtype, torch.device(device)
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        for i in range(t.num_hidden_layers):
            shape = (batch_size, t.layer_kv_heads(i), max_len, t.layer_head_dim(i))
            self.k.append(torch.zeros(shape, dtype=dtype, device=self.device))
            self.v.append(torch.zeros(shape, dtype=dtype, device=self.device))
        self.valid_BS = torch.zeros(batch_size, max_len, dtype=torch.bool, device=self.device)
        self.length_B = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    def rows(self, rows_B: torch.Tensor | None) -> torch.Tensor:
        """Slot ids as a long tensor on the cache device (all slots when None)."""
        if rows_B is None:
            return torch.arange(self.batch_size, device=self.device)
        return torch.as_tensor(rows_B, dtype=torch.long, device=self.device)

    def write(
        self,
        layer: int,
        rows_R: torch.Tensor,
        idx_RT: torch.Tensor,
        k_RKTD: torch.Tensor,
        v_RKTD: torch.Tensor,
    ) -> None:
        """Store new K/V at cache indices idx_RT of rows_R.

        Under no_grad this is an in-place slot write; when autograd is tracking (training) the layer's tensors
        are replaced out of place so gradients flow from later reads back into the keys/values.
        """
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

    def reset(self, rows_B: torch.Tensor | None = None) -> None:
        """Forget rows (slot reuse): length 0 and nothing valid. Stale K/V stay but are never visible."""
        r = self.rows(rows_B)
        self.valid_BS[r] = False
        self.length_B[r] = 0
