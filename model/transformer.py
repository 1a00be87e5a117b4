"""DiffusionGemma: one text stack used twice, as the causal cache-writing encoder and the bidirectional
canvas decoder (reference: DiffusionGemmaForBlockDiffusion, transformers 5.23).

Legend: B rows, T new tokens, C canvas, H hidden, V vocab, S key length, R selected cache rows.
  encode(ids_BT, cache, positions_BT, valid_BT, rows_B): causal (+ sliding window on sliding layers,
      + key padding) pass that writes K/V at cache indices length..length+T-1 and advances length.
      Uses the ENCODER layer_scalar copies. Diffusion does not need its hidden states; `return_hidden`
      gives them (an autoregressive baseline of the same backbone reads its next token from them).
  decode(canvas_BC, cache, positions_BC, sc_logits_BCV, rows_B) -> fp32 logits_BCV: bidirectional over
      [context ; canvas], read-only on the cache; sliding layers see the last W-1 context tokens. Uses the
      DECODER layer_scalar copies, self-conditioning on its input, tied LM head and softcap.
      `decode_hidden` is the same pass without the LM head (engine/heads.py applies a head of its own), its
      one self-conditioning input the soft embedding (`soft_embedding`: softmax(previous logits) @ E).
Key ranges are trimmed on the host so sliding layers only touch the last window. They come from the cache
lengths (one device read per pass) unless the caller, who knows every row's length, passes `len_range`
= (min, max) over the pass's rows: then the pass reads nothing from the device. Sliding layers keep a ring
of cache.window_slots slots per row (model/cache.py): while no row of a pass is longer than the ring, slot
= position and the pass is the full-length one; past it the ring is read whole, with masks from the
positions its slots hold, and encode splits more new tokens than the ring takes into causal chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from model.attention import attend
from model.cache import WINDOW_CHUNK, KVCache
from model.config import FULL, SLIDING, DiffusionGemmaConfig, embed_scale
from model.layer import Block
from model.norm import RMSNorm
from model.rope import cos_sin, inv_freq
from model.self_conditioning import SelfConditioning


def _check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")


class TokenEmbedding(nn.Module):
    """Embedding table without nn.Embedding's init (initialising on the meta device imports torch._dynamo,
    about 5 s). padding_idx only affects gradients, as in the reference."""

    def __init__(self, vocab: int, hidden: int, padding_idx: int | None):
        super().__init__()
        self.padding_idx = padding_idx
        self.weight = nn.Parameter(torch.empty(vocab, hidden))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight, self.padding_idx)


class DiffusionGemma(nn.Module):
    def __init__(self, config: DiffusionGemmaConfig):
        super().__init__()
        self.config = config
        t = self.text = config.text
        self.embed_tokens = TokenEmbedding(t.vocab_size, t.hidden_size, t.pad_token_id)
        self.layers = nn.ModuleList(Block(t, i) for i in range(t.num_hidden_layers))
        self.norm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.self_conditioning = SelfConditioning(t.hidden_size, t.intermediate_size, t.rms_norm_eps)
        # new tokens per encoder pass beyond the window, i.e. the sliding ring's slack of caches made here
        self.window_chunk = WINDOW_CHUNK
        self._inv_freq = {}  # CPU masters; per-device copies in _device_consts
        self._consts: dict[tuple, tuple] = {}
        for lt in set(t.layer_types):
            i = t.layer_types.index(lt)
            self._inv_freq[lt] = inv_freq(t.rope(i), t.layer_head_dim(i))
        if not self.embed_tokens.weight.is_meta:
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Random init like the reference (normal(0, std) matrices, unit norms/scales)."""
        for p in self.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
            else:
                p.fill_(1.0)
        for b in self.buffers():
            b.fill_(1.0)

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def _device_consts(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(embedding scale, {layer type: inv_freq}) on the weights' device, made once per (device, dtype):
        no host->device copy per forward (each is a stall, and one inside CUDA-graph capture is an error)."""
        key = (self.device, self.dtype)
        if key not in self._consts:
            # sqrt(H) cast to the weight dtype first, as the reference (bf16: 53.07 -> 53.0)
            scale = torch.tensor(embed_scale(self.text.hidden_size), device=self.device).to(self.dtype)
            self._consts[key] = (scale, {lt: f.to(self.device) for lt, f in self._inv_freq.items()})
        return self._consts[key]

    def _scale(self) -> torch.Tensor:
        return self._device_consts()[0]

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids) * self._scale()

    def _rope(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {lt: cos_sin(positions, f, dtype) for lt, f in self._device_consts()[1].items()}

    @staticmethod
    def _ctx(cache_t: torch.Tensor, rows: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
        """Cache slice [R, KV, hi-lo, D] (a view when all rows are used)."""
        x = cache_t[:, :, lo:hi]
        return x if rows is None else x.index_select(0, rows)

    @staticmethod
    def _len_range(length_R: torch.Tensor, given: tuple[int, int] | None) -> tuple[int, int]:
        """(min, max) of the rows' cache lengths: the caller's host-known values, else one device read."""
        if given is not None:
            return int(given[0]), int(given[1])
        if length_R.numel() == 0:
            return 0, 0
        lo, hi = torch.aminmax(length_R)
        return int(lo), int(hi)

    @staticmethod
    def _valid(cache: KVCache, rows: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
        """valid_BS restricted to rows and key range -> [R, hi-lo]."""
        x = cache.valid_BS[:, lo:hi]
        return x if rows is None else x.index_select(0, rows)

    # -- encoder pass ------------------------------------------------------------------------------
    def encode(
        self,
        input_ids_BT: torch.Tensor,
        cache: KVCache,
        *,
        positions_BT: torch.Tensor,
        valid_BT: torch.Tensor | None = None,
        rows_B: torch.Tensor | None = None,
        len_range: tuple[int, int] | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | None:
        """Causal pass over T new tokens per row; writes their K/V to the cache (see module doc).

        len_range: host-known (min, max) of the rows' cache lengths before this pass (skips a device read;
        must be exact). return_hidden: return the last layer's output h_BTH (before the final norm).
        More new tokens than the sliding layers' ring can take beside the window (model/cache.py) are encoded
        in causal chunks of cache.window_chunk, the same function with O(chunk x context) attention memory.
        """
        R, T = input_ids_BT.shape
        _check_shape("positions_BT", positions_BT, (R, T))
        if valid_BT is not None:
            _check_shape("valid_BT", valid_BT, (R, T))
        if R == 0 or T == 0:
            return None
        rows = cache.rows(rows_B)
        _check_shape("rows_B", rows, (R,))
        if valid_BT is None:
            valid_BT = torch.ones(R, T, dtype=torch.bool, device=cache.device)
        l0 = cache.length_B.index_select(0, rows)
        l0_min, l0_max = self._len_range(l0, len_range)
        if l0_max + T > cache.max_len:
            raise ValueError(
                f"encode: cache capacity {cache.max_len} exceeded (length {l0_max} + {T} new tokens)"
            )
        step = T if not cache.wraps(l0_max + T) else cache.window_chunk
        hs = []
        for a in range(0, T, step):
            b = min(T, a + step)
            h = self._encode_pass(
                input_ids_BT[:, a:b], cache, positions_BT[:, a:b], valid_BT[:, a:b], rows,
                None if rows_B is None else rows, l0 + a if a else l0, (l0_min + a, l0_max + a))
            if return_hidden:  # else each chunk's output is freed before the next (prefill memory)
                hs.append(h)
        if not return_hidden:
            return None
        return hs[0] if len(hs) == 1 else torch.cat(hs, dim=1)

    def _encode_pass(
        self,
        input_ids_BT: torch.Tensor,
        cache: KVCache,
        positions_BT: torch.Tensor,
        valid_BT: torch.Tensor,
        rows: torch.Tensor,
        sel: torch.Tensor | None,
        l0: torch.Tensor,
        len_range: tuple[int, int],
    ) -> torch.Tensor:
        """One causal pass whose new tokens fit the sliding ring beside the window -> h_BTH."""
        T = input_ids_BT.shape[1]
        l0_min, l0_max = len_range
        q_idx_RT = l0[:, None] + torch.arange(T, device=cache.device)
        cache.valid_BS[rows[:, None], q_idx_RT] = valid_BT.to(device=cache.device, dtype=torch.bool)
        W, hi = self.text.sliding_window, l0_max + T
        wrapped = cache.wraps(hi)
        # sliding layers' ring slots of the new tokens, once for all layers (the identity before any wrap)
        ring_RT = q_idx_RT % cache.window_slots if wrapped else q_idx_RT
        # key slot ranges read per layer type; a wrapped ring is read whole (slot order is not key order)
        sliding = (0, cache.window_slots) if wrapped else (max(0, l0_min - W + 1), hi)
        ranges = {FULL: (0, hi), SLIDING: sliding}
        masks = {}
        for lt, (lo, top) in ranges.items():
            if lt == SLIDING and wrapped:
                pos_RN = cache.held_positions(l0 + T)  # after this pass's writes, which precede every read
                j, vis = pos_RN[:, None, :], cache.held_valid(sel, pos_RN)[:, None, :]
            else:
                j = torch.arange(lo, top, device=cache.device)
                vis = self._valid(cache, sel, lo, top)[:, None, :]
            vis = vis & (j <= q_idx_RT[..., None])
            if lt == SLIDING:
                vis = vis & (j > q_idx_RT[..., None] - W)
            masks[lt] = vis  # [R, T, S]

        h = self._embed(input_ids_BT)
        rope = self._rope(positions_BT, h.dtype)
        for i, layer in enumerate(self.layers):
            lt = self.text.layer_types[i]
            lo, top = ranges[lt]

            def attend_enc(q, k, v, i=i, lo=lo, top=top, lt=lt):
                cache.write(i, rows, q_idx_RT, k, v, ring_RT=ring_RT)
                return attend(
                    q, self._ctx(cache.k[i], sel, lo, top), self._ctx(cache.v[i], sel, lo, top), masks[lt]
                )

            h = layer(h, *rope[lt], attend_enc, encoder=True)
        cache.length_B[rows] = l0 + T
        return h

    # -- decoder pass ------------------------------------------------------------------------------
    def decode(
        self,
        canvas_BC: torch.Tensor,
        cache: KVCache,
        *,
        positions_BC: torch.Tensor,
        sc_logits_BCV: torch.Tensor | None = None,
        rows_B: torch.Tensor | None = None,
        sc_mask_B: torch.Tensor | None = None,
        len_range: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Bidirectional canvas pass over [context ; canvas]; the cache is not modified -> fp32 logits_BCV.
        sc_logits_BCV: the previous step's processed logits, for self-conditioning (sc_mask_B: the rows that
        use them)."""
        h = self.decode_hidden(
            canvas_BC, cache, positions_BC=positions_BC, sc_soft_BCH=self.sc_soft(sc_logits_BCV, sc_mask_B),
            rows_B=rows_B, len_range=len_range,
        )
        return self.logits(h)

    def sc_soft(self, sc_logits_BCV: torch.Tensor | None, sc_mask_B: torch.Tensor | None = None
                ) -> torch.Tensor | None:
        """The self-conditioning input from the previous step's processed logits (None: no self-conditioning;
        sc_mask_B: the rows that use them, a zero row is "none" for that row)."""
        if sc_logits_BCV is None:
            return None
        # fp32 softmax written in the embedding dtype (the reference feeds embedding-dtype logits)
        soft = self.soft_embedding(kernels.softmax(sc_logits_BCV.to(self.dtype), self.dtype))
        if sc_mask_B is not None:
            soft = soft * sc_mask_B.to(soft.dtype)[:, None, None]
        return soft

    def soft_embedding(self, probs_BCV: torch.Tensor) -> torch.Tensor:
        """The self-conditioning input of the next decoder pass, softmax(previous logits) @ E * sqrt(H), from
        those probabilities in the embedding dtype (model/self_conditioning.py's formula, the same ops)."""
        return torch.matmul(probs_BCV, self.embed_tokens.weight) * self._scale()

    def decode_hidden(
        self,
        canvas_BC: torch.Tensor,
        cache: KVCache,
        *,
        positions_BC: torch.Tensor,
        sc_soft_BCH: torch.Tensor | None = None,
        rows_B: torch.Tensor | None = None,
        len_range: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """`decode` without the LM head -> the last layer's output h_BCH (before the final norm).

        sc_soft_BCH: the self-conditioning input, softmax(previous logits) @ E * sqrt(H) (`soft_embedding`;
        the fast mode's CPU sweep computes it inside its vocabulary pass, engine/vocab_head.py). A zero row is
        exactly "no self-conditioning" for that row; None: no row has any.
        len_range: host-known (min, max) of the rows' cache lengths (skips a device read; must be exact).
        """
        R, C = canvas_BC.shape
        _check_shape("positions_BC", positions_BC, (R, C))
        rows = cache.rows(rows_B)
        _check_shape("rows_B", rows, (R,))
        sel = None if rows_B is None else rows
        length = cache.length_B.index_select(0, rows)
        l_min, l_max = self._len_range(length, len_range)
        W = self.text.sliding_window
        wrapped = cache.wraps(l_max)
        # a wrapped ring is read whole: its slot order is not key order, masks come from held positions
        sliding = (0, cache.window_slots) if wrapped else (max(0, l_min - (W - 1)), l_max)
        ranges = {FULL: (0, l_max), SLIDING: sliding}
        masks = {}
        for lt, (lo, hi) in ranges.items():
            if lt == SLIDING and wrapped:
                pos_RN = cache.held_positions(length)  # every held position is < length
                j, vis = pos_RN, cache.held_valid(sel, pos_RN)
            else:
                j = torch.arange(lo, hi, device=cache.device)
                vis = self._valid(cache, sel, lo, hi) & (j < length[:, None])
            if lt == SLIDING:
                vis = vis & (j >= length[:, None] - (W - 1))
            canvas = torch.ones(R, C, dtype=torch.bool, device=cache.device)
            masks[lt] = torch.cat([vis, canvas], dim=-1)[:, None, :]  # [R, 1, S + C]

        emb = self._embed(canvas_BC)
        h = self.self_conditioning(emb, sc_soft_BCH)
        rope = self._rope(positions_BC, h.dtype)
        for i, layer in enumerate(self.layers):
            lt = self.text.layer_types[i]
            lo, hi = ranges[lt]

            def attend_dec(q, k, v, i=i, lo=lo, hi=hi, lt=lt):
                kc, vc = cache.k[i][:, :, lo:hi], cache.v[i][:, :, lo:hi]  # views over every cache slot
                fused = kernels.backend_for("canvas_attention", q, kc, vc, k, v) != "torch"
                if fused and kc.dtype == k.dtype:
                    # The fused kernel reads the rows' context and the canvas K/V in place: no gathered copy
                    # of the selected slots, no concatenation (an alternative such as SDPA does its own).
                    vis = masks[lt][:, 0, : hi - lo]
                    return kernels.canvas_attention(q, kc, vc, vis, k, v, ctx_rows_B=sel)
                ck = self._ctx(cache.k[i], sel, lo, hi).to(k.dtype)
                cv = self._ctx(cache.v[i], sel, lo, hi).to(v.dtype)
                return attend(q, torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2), masks[lt])

            h = layer(h, *rope[lt], attend_dec, encoder=False)
        return h

    def logits(self, h_BCH: torch.Tensor) -> torch.Tensor:
        """Final norm, tied LM head, fp32 softcap."""
        return self.head(h_BCH)[0]

    def head(
        self, h_BCH: torch.Tensor, temperature_B: torch.Tensor | None = None, narrow: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`logits` divided by a per-row temperature (the step's processed logits, optional) and, with
        `narrow`, also their copy in the model dtype (the next step's self-conditioning input). One pass over
        the [B, C, V] logits after the LM head on the GPU (kernels/logit_epilogue.py); the reference's op
        sequence on the CPU."""
        return kernels.logit_epilogue(
            F.linear(self.norm(h_BCH), self.embed_tokens.weight),
            self.text.final_logit_softcapping,
            temperature_B,
            self.dtype if narrow else None,
        )

    def head_raw(self, h_BCH: torch.Tensor) -> torch.Tensor:
        """The GPU step's head when its kernels read the LM head's output themselves: final norm and the
        tied LM head only, in the model dtype (softcap and temperature are applied by kernels.head_sample and
        by kernels.softmax's head mode, as kernels/logit_epilogue.py would)."""
        return F.linear(self.norm(h_BCH), self.embed_tokens.weight)

    # -- weights -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path_or_url: str, *, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu",
        quantization: str | None = None,
    ) -> DiffusionGemma:
        """Load a released checkpoint dir (local or fsspec URL): meta build, then tensor-by-tensor load.
        Compressed-tensors checkpoints load quantized; `quantization` ("fp8" | "w4a16") quantizes a bf16
        checkpoint as it loads (model/quant/)."""
        from model.weights import load_pretrained

        return load_pretrained(cls, path_or_url, dtype=dtype, device=device, quantization=quantization)

    def save_pretrained(self, directory: str) -> None:
        """Write config.json (+ generation_config.json) and model.safetensors with the released key names."""
        from model.weights import save_pretrained

        save_pretrained(self, directory)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty cache in the model's dtype and device, its sliding ring sized by self.window_chunk."""
        return KVCache(self.config, batch_size, max_len, dtype=self.dtype, device=self.device,
                       window_chunk=self.window_chunk)
