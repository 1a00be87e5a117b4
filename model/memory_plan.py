"""Memory plan: does the model fit on a card, and how many canvases fit in one decoder forward.

Owns `plan_memory` -> `MemoryPlan` (weights by part and quantization scheme, KV cache per row, per-canvas
workspace, the prefill transient, a fixed reserve, `canvases_fit`), and `vocab_buffers`, the count of
vocabulary-wide buffers that tests/model/test_memory_plan.py checks against a traced CPU forward.

Weights: shapes from model/weights.py `checkpoint_layout` (nothing re-derived); byte costs per scheme from the
layout of kernels/dequant.py `QuantTensor` (built on the meta device, so its own check and `nbytes` count).
Quantized: routed experts, attention q/k/v/o, dense MLP and self-conditioning MLP. Kept in bf16: the tied
embedding / LM head, the router, norms and scalars.

What OUR engine allocates on a GPU (bf16 activations, a = 2 bytes; C canvas, V vocabulary, H hidden, L the
row's context, i.e. its cached tokens, A = C * top_k expert assignments). Each item is per canvas.
KV cache (model/cache.py KVCache, engine/scheduler.py SlotCache):
  k and v [KV_i, S, D_i] on global layers at S = L rounded up to whole canvases (SlotCache grows lengths in
  canvas steps); on sliding layers a ring of min(S, W - 1 + window_chunk) slots (the window plus one
  encoder chunk: 1535 for the full-size model at window_chunk 512), a fixed cost per row past it; plus
  valid_BS bool [S] and length_B. SlotCache._resize allocates the new cache before dropping the old, and
  copies the used rows layer by layer (an indexed gather: one layer's K of those rows, the largest being
  max over layers of slots x KV_i x D_i): from an empty batch rows double 1, 2, 4, ... N, so the first
  admission holds (previous + N) rows and that copy at once.
Vocabulary-wide buffers [C, V] (engine/denoise.py denoise_step, GPU head mode: engine/heads.py FusedHead):
  held between steps   sc        a     softmax of the last step, the self-conditioning state
                                       (CanvasBatch.sc, written by kernels/softmax.py softmax_triton)
                       kept      a     the raw LM head output kept for commit hooks (CanvasBatch.kept.x_BCV,
                                       rows whose hook reads logits)
  during a step        raw       a     model/transformer.py head_raw (F.linear into the tied embedding)
                       sc_next   a     kernels.softmax(raw, cap): next step's sc, the old one still alive
                       where     a     KeptLogits.where(done, raw): kept logits with adaptive stopping
                       proc      fp32  kernels.logit_epilogue(raw)[0]: steering hooks only
  kernels/sampler.py head_sample reads raw in place (its outputs are [C] per canvas): no [C, V] buffer.
  At a canvas boundary (engine/fast.py: batch.select, then CanvasBatch.cat) the old batch, the kept rows'
  copy, the zero fill of restarted rows and the concatenation of each held field are alive together: up to
  3 copies of each held buffer. A commit hook's row is processed once more at commit
  (engine/kept_logits.py KeptLogits.row: one fp32 [C, V] per batch).
  => argmax commits: 3 x a = 6 bytes per canvas position and vocabulary entry (402.7 MB per canvas at
     V = 262,144); commit hooks with adaptive stopping: max(5, 3 x 2) = 6 x a, plus the fp32 row.
  vLLM (https://github.com/vllm-project/vllm/issues/50699) materialises ~6 fp32 [seqs, 256, 262144]
  temporaries in its sampling step: 6 x 256 x 262,144 x 4 B = 1.61 GB (1.50 GiB) per sequence. The issue's
  "2.1 GiB" is one such tensor at 8 sequences (2.15 GB = 2.00 GiB), ">12 GiB" the six of them.
Canvas-scaled activations (decoder pass: model/transformer.py decode_hidden, model/layer.py Block):
  carried through the layers: emb and h [C, H] a, RoPE cos/sin [C, D] a per layer type.
  attention (model/attention.py attend, the eager torch form, which kernels.measured_slower keeps at head
  dim 512 and at 8 or more canvases): q [Hq, C, D], k, v [KV, C, D]; the context rows' K and V copied
  (index_select [KV, S, D]) and concatenated with the canvas' ([KV, S + C, D]), q's grouped copy; scores
  [Hq, C, S + C]: the masked copy a beside F.softmax's fp32 copy of it and fp32 output (ATen converts a
  bf16 input first): 10 bytes a score. S = L on full layers; on sliding ones min(L, W - 1) while the row
  fits its ring (L <= W - 1 + window_chunk), else the whole ring (slot order is not key order then).
  MLP and experts (q, k, v stay alive): r, both pre-norms, the dense MLP's [C, I] gate, up and product,
  kernels/fused_moe.py's h_AI [A, Im] and y_AH [A, H], the output [C, H].
  head: h, its norm and the vocabulary buffers above.
Prefill (model/transformer.py encode of a P-token prompt into a fresh slot; always the torch attend): a
  prompt that fits the sliding ring (P <= W - 1 + window_chunk) is one pass: two bool masks [P, P] held,
  scores [Hq, P, P] at 10 bytes a score, or the experts' [P * top_k, H + Im]. A longer one is encoded in
  chunks of T = window_chunk tokens: per chunk masks [T, S] per layer type and scores [Hq, T, S] with S the
  keys read (the chunk's end on full layers, the whole ring once it wraps): O(T x P), 0.38 GB at P = 4096
  instead of 2.9 GB. Prompts of equal length admitted together share one pass (engine/fast.py _prefill);
  the plan counts one.
canvases_fit: the largest N whose peak over the engine's phases (MemoryPlan.phases: a decode step, the commit
  of hook rows, a canvas boundary, one prompt's prefill beside N - 1 running rows, the cache's first growth)
  fits the card less the weights and RESERVE_BYTES.
Assumed: a card whose Triton kernels pass their self-checks (kernels/__init__.py), so the head mode runs
  and the quantized GEMMs (kernels/quant_linear.py, kernels/quant_moe.py) dequantize tiles in registers; their
  torch references dequantize a whole linear, or one expert, at a time.
Not counted: what a commit hook allocates itself (constraints copies its rows to the host), the
  regrowth of the cache length when a later row needs a longer cache than the first (old and new cache at
  once: up to twice the cache, depending on arrival order), and kernels' register/shared memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from kernels.dequant import NVFP4_GROUP, QuantTensor
from model.cache import WINDOW_CHUNK, kv_row_bytes, window_slots
from model.config import FULL, SLIDING, DiffusionGemmaConfig
from model.weights import checkpoint_layout

SCHEMES = ("bf16", "fp8", "w4a16", "nvfp4")
ACT = torch.bfloat16  # weights that stay unquantized, activations, KV cache
GIB = 2**30
# CUDA context (driver and runtime, cuBLAS handles, loaded kernel images: about 0.5 GiB for a PyTorch process
# on a recent card before its first tensor) plus caching-allocator slack (block rounding and fragmentation as
# batch shapes change): 1 GiB in all, subtracted from the card before anything is planned.
RESERVE_BYTES = 1 * GIB
# vLLM's sampling step (module doc): fp32 [seqs, canvas, V] temporaries per sequence
VLLM_FP32_TEMPORARIES = 6
PARTS = ("experts", "attention", "dense", "embeddings")
_QUANTIZED = {
    "experts": ("experts.gate_up_proj", "experts.down_proj"),
    "attention": tuple(f"self_attn.{p}_proj.weight" for p in "qkvo"),
    "dense": tuple(f"{m}.{p}_proj.weight" for m in ("mlp", "self_conditioning")
                   for p in ("gate", "up", "down")),
}


@dataclass(frozen=True)
class VocabBuffers:
    """[C, V] buffers per canvas: held between steps (activation dtype), the step's peak (activation dtype
    buffers, fp32 ones) and at a canvas boundary; fp32 buffers per batch at commit (see the module doc)."""

    held: int
    step_act: int
    step_fp32: int
    boundary_act: int
    commit_fp32: int


def vocab_buffers(keep_logits: bool = False, adaptive_stop: bool = True,
                  steering: bool = False) -> VocabBuffers:
    """The engine's vocabulary-wide buffers in the GPU head mode (engine/denoise.py, module doc)."""
    held = 1 + keep_logits  # sc_BCV (+ last_BCV)
    step = held + 2 + (keep_logits and adaptive_stop)  # + raw, sc_next (+ where)
    return VocabBuffers(held, step, int(steering), 3 * held, int(keep_logits))


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes on one card (see the module doc). Per row = per canvas: a row denoises one canvas a forward."""

    scheme: str
    group_size: int | None  # w4a16's columns per scale (None: per row, or another scheme)
    gpu_memory_bytes: int
    context: int
    prompt_tokens: int
    weights_by_part: dict[str, int]
    kv_cache_bytes: int  # per row at `context`
    resize_copy_bytes: int  # per used row while SlotCache._resize copies one layer
    held_bytes: int  # per canvas, between steps
    workspace_bytes: int  # per canvas, peak of a decoder step (held included)
    boundary_bytes: int  # per canvas, at a canvas boundary (held copies)
    batch_bytes: int  # once per batch (commit hooks' fp32 row)
    prefill_bytes: int  # one prompt of prompt_tokens joining the batch
    reserve_bytes: int
    canvases_fit: int
    limit: str  # what stops one canvas more: "weights" or a phase of `phases`

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"MemoryPlan.scheme: expected one of {SCHEMES}, got {self.scheme!r}")
        if set(self.weights_by_part) != set(PARTS):
            raise ValueError(f"MemoryPlan.weights_by_part: expected keys {PARTS}, got "
                             f"{sorted(self.weights_by_part)}")
        ints = {k: v for k, v in vars(self).items() if k.endswith("_bytes")} | dict(self.weights_by_part)
        bad = sorted(k for k, v in ints.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0)
        if bad:
            raise ValueError(f"MemoryPlan: byte counts must be non-negative ints: {bad}")
        if self.canvases_fit < 0 or self.context < 1 or not 1 <= self.prompt_tokens <= self.context:
            raise ValueError(f"MemoryPlan: need canvases_fit >= 0 and 1 <= prompt_tokens <= context, got "
                             f"{self.canvases_fit}, {self.prompt_tokens}, {self.context}")
        if self.workspace_bytes < self.held_bytes:
            raise ValueError("MemoryPlan.workspace_bytes: smaller than held_bytes, which it includes")
        n, room = self.canvases_fit, self.available_bytes
        if (n and self.peak_bytes(n) > room) or self.peak_bytes(n + 1) <= room:
            raise ValueError(f"MemoryPlan.canvases_fit: {n} is not the most canvases that fit {room} bytes")
        if self.limit not in ("weights", *PHASES):
            raise ValueError(f"MemoryPlan.limit: expected 'weights' or one of {PHASES}, got {self.limit!r}")

    @property
    def weights_bytes(self) -> int:
        return sum(self.weights_by_part.values())

    @property
    def available_bytes(self) -> int:
        """The card less weights and reserve: what the cache and the workspaces share (may be negative)."""
        return self.gpu_memory_bytes - self.weights_bytes - self.reserve_bytes

    @property
    def per_canvas_bytes(self) -> int:
        return self.kv_cache_bytes + self.workspace_bytes

    def phases(self, n: int) -> dict[str, int]:
        """Peak bytes (weights and reserve excluded) of each engine phase with n canvases per forward."""
        return _phases(vars(self), n)

    def peak_bytes(self, n: int) -> int:
        return max(self.phases(n).values())

    def to_dict(self) -> dict:
        """Every number of the plan (JSON-ready), derived ones included."""
        return {**asdict(self), "weights_bytes": self.weights_bytes, "available_bytes": self.available_bytes,
                "per_canvas_bytes": self.per_canvas_bytes}


PHASES = ("decode step", "commit", "canvas boundary", "prefill", "cache growth")


def _phases(p: dict, n: int) -> dict[str, int]:
    """MemoryPlan.phases over a mapping of its byte fields (also used before the plan exists)."""
    kv = p["kv_cache_bytes"]
    prev = 1 << ((n - 1).bit_length() - 1) if n > 1 else 0  # rows before the cache's last doubling
    return dict(zip(PHASES, (
        n * (kv + p["workspace_bytes"]),
        n * (kv + p["held_bytes"]) + p["batch_bytes"],
        n * (kv + p["boundary_bytes"]),
        n * kv + (n - 1) * p["held_bytes"] + p["prefill_bytes"],
        # from an empty batch SlotCache doubles its rows (no KV budget: the pipeline's case)
        (prev + n) * kv + prev * p["resize_copy_bytes"],
    )))


def vllm_workspace_bytes(config: DiffusionGemmaConfig, canvas_length: int | None = None) -> int:
    """vLLM's sampling temporaries per sequence (module doc): 6 fp32 [canvas, V]."""
    C = config.canvas_length if canvas_length is None else canvas_length
    return VLLM_FP32_TEMPORARIES * C * config.text.vocab_size * 4


# ---- weights ---------------------------------------------------------------------------------------------
def _part(name: str) -> tuple[str, bool]:
    """(part, quantized) of one of our state_dict names."""
    if name == "embed_tokens.weight":
        return "embeddings", False
    for part, suffixes in _QUANTIZED.items():
        if name.endswith(suffixes):
            return part, True
    return "dense", False  # norms, router, scalars


def weight_bytes(shape: tuple[int, ...], scheme: str, group_size: int | None = 128,
                 asymmetric: bool = False) -> int:
    """Bytes of one weight [*, N, K] in a scheme (w4a16 group_size None: one scale per row): the
    kernels/dequant.py layout, counted by QuantTensor."""
    if scheme == "bf16":
        return 2 * torch.Size(shape).numel()
    *lead, n, k = shape
    meta = dict(device="meta")

    def t(*s, dtype):
        return torch.empty(*lead, *s, dtype=dtype, **meta)

    if scheme == "fp8":
        q = QuantTensor("fp8", t(n, k, dtype=torch.float8_e4m3fn), t(n, dtype=torch.float32), k, k)
    elif scheme == "w4a16":
        G = k if group_size is None else group_size
        g = -(-k // G)
        q = QuantTensor("w4a16", t(n, -(-k // 8), dtype=torch.int32), t(n, g, dtype=torch.bfloat16), k, G,
                        zero=t(n, g, dtype=torch.int8) if asymmetric else None)
    else:
        q = QuantTensor("nvfp4", t(n, -(-k // 2), dtype=torch.uint8),
                        t(n, -(-k // NVFP4_GROUP), dtype=torch.float8_e4m3fn), k, NVFP4_GROUP,
                        global_scale=t(n, dtype=torch.float32))
    return q.nbytes()


def weights_by_part(config: DiffusionGemmaConfig, scheme: str, group_size: int | None = 128,
                    asymmetric: bool = False) -> tuple[dict[str, int], dict[str, int]]:
    """({part: bytes}, {part: parameters}) over every tensor of model/weights.py checkpoint_layout."""
    nbytes, params = dict.fromkeys(PARTS, 0), dict.fromkeys(PARTS, 0)
    for ours, shape in checkpoint_layout(config).values():
        part, quantized = _part(ours)
        nbytes[part] += weight_bytes(shape, scheme if quantized else "bf16", group_size, asymmetric)
        params[part] += torch.Size(shape).numel()
    return nbytes, params


# ---- activations ---------------------------------------------------------------------------------------
def _layer_geometry(config: DiffusionGemmaConfig) -> dict[str, tuple[int, int]]:
    """{layer type: (head dim, kv heads)} of the layer types present."""
    t = config.text
    return {lt: (t.layer_head_dim(i), t.layer_kv_heads(i))
            for lt in (SLIDING, FULL) if lt in t.layer_types for i in [t.layer_types.index(lt)]}


def _score_bytes(heads: int, a: int) -> int:
    """Peak bytes per (query, key) pair of `attend`: F.softmax(dtype=float32) converts a non-fp32 input to an
    fp32 copy before its fp32 output (ATen's softmax takes the fused path for fp16 only), all beside the
    masked scores; or the scores, their masked copy and the inverted mask."""
    return max(heads * (a + 4 + (4 if a != 4 else 0)), 2 * heads * a + 1)


def _sliding_keys(config: DiffusionGemmaConfig, context: int, window_chunk: int) -> int:
    """Keys a decoder pass reads per row on sliding layers (module doc): the window, or the wrapped ring."""
    ring = config.text.sliding_window - 1 + window_chunk
    return ring if context > ring else min(context, config.text.sliding_window - 1)


def decode_bytes(config: DiffusionGemmaConfig, context: int, canvas: int, a: int = 2,
                 window_chunk: int = WINDOW_CHUNK) -> tuple[int, int]:
    """(layer phase, carry) bytes per canvas of one decoder pass: the larger of the attention and the
    MLP+experts peak over layer types, and what the pass carries through its layers."""
    t = config.text
    C, H, Hq = canvas, t.hidden_size, t.num_attention_heads
    geo = _layer_geometry(config)
    carry = 2 * C * H * a + sum(2 * C * d * a for d, _ in geo.values())  # emb, h, cos/sin per layer type
    peak = 0
    for lt, (D, KV) in geo.items():
        S = context if lt == FULL else _sliding_keys(config, context, window_chunk)
        qkv = (Hq + 2 * KV) * C * D * a
        ctx = 2 * KV * D * a * (2 * S + C)  # k and v: the rows' copy [S] and the concatenation [S + C]
        # + attend's grouped reshape of the transposed q (a copy)
        attn = qkv + Hq * C * D * a + ctx + C * (S + C) * _score_bytes(Hq, a)
        A = C * t.top_k_experts
        mlp = qkv + 4 * C * H * a + 3 * C * t.intermediate_size * a  # r, pre_d, pre_m, d; gate, up, product
        moe = qkv + 4 * C * H * a + A * (t.moe_intermediate_size + H) * a + C * H * a
        peak = max(peak, attn, mlp, moe)
    return peak, carry


def prefill_bytes(config: DiffusionGemmaConfig, prompt: int, a: int = 2,
                  window_chunk: int = WINDOW_CHUNK) -> int:
    """Peak bytes of encoding one P-token prompt into a fresh slot of a cache with room for it
    (model/transformer.py encode: one pass, or chunks of window_chunk once the prompt passes the ring)."""
    t = config.text
    P, H, Hq, W = prompt, t.hidden_size, t.num_attention_heads, t.sliding_window
    geo = _layer_geometry(config)
    ring = window_slots(config, P, window_chunk)  # a cache of more than P tokens has the same ring here
    step = P if P <= ring else window_chunk
    worst = 0
    for start in range(0, P, step):
        T = min(step, P - start)
        end = start + T
        keys = {FULL: end, SLIDING: ring if end > ring else end - max(0, start - W + 1)}
        masks = sum(T * keys[lt] for lt in geo)  # bool [T, S] per layer type, held through the pass
        carry = T * H * a + sum(2 * T * d * a for d, _ in geo.values())
        peak = 0
        for lt, (D, KV) in geo.items():
            S = keys[lt]
            qkv = (Hq + 2 * KV) * T * D * a
            # q's grouped copy, the row's K/V copy, the scores
            attn = qkv + Hq * T * D * a + 2 * KV * S * D * a + T * S * _score_bytes(Hq, a)
            moe = qkv + 4 * T * H * a + T * t.top_k_experts * (t.moe_intermediate_size + H) * a + T * H * a
            peak = max(peak, attn, moe)
        worst = max(worst, masks + carry + peak)
    return worst


# ---- the plan ------------------------------------------------------------------------------------------
def plan_memory(config: DiffusionGemmaConfig, scheme: str | None, gpu_memory_bytes: int, context: int,
                group_size: int | None = 128, canvas_length: int | None = None, *,
                prompt_tokens: int | None = None,
                keep_logits: bool = False, adaptive_stop: bool = True, steering: bool = False,
                asymmetric: bool = False, reserve_bytes: int = RESERVE_BYTES,
                window_chunk: int = WINDOW_CHUNK) -> MemoryPlan:
    """Plan one card for `config` with weights in `scheme` (None: bf16), rows of `context` cached tokens,
    prompts of `prompt_tokens` (None: the whole context) and commit behaviour: keep_logits (commit hooks,
    i.e. structured output), adaptive_stop (the sampler's stop rule is on), steering (per-step steering).
    group_size: w4a16's columns per scale (None: one scale per row). asymmetric: w4a16 with zero points.
    window_chunk: the caches' sliding ring slack (model/cache.py; DiffusionGemma.window_chunk).
    Raises ValueError naming a bad argument."""
    scheme = scheme or "bf16"
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: expected one of {SCHEMES}, got {scheme!r}")
    C = config.canvas_length if canvas_length is None else canvas_length
    P = context if prompt_tokens is None else prompt_tokens
    for name, v in (("gpu_memory_bytes", gpu_memory_bytes), ("context", context), ("canvas_length", C),
                    ("prompt_tokens", P), ("group_size", 1 if group_size is None else group_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if P > context:
        raise ValueError(f"prompt_tokens: {P} is more than the context ({context})")
    parts, _ = weights_by_part(config, scheme, group_size, asymmetric)
    a, V = torch.empty((), dtype=ACT).element_size(), config.text.vocab_size
    S = -(-context // C) * C  # SlotCache grows lengths in whole canvases
    kv = kv_row_bytes(config, ACT, S, window_chunk) + S + 8  # + valid_BS, length_B
    t = config.text
    N = window_slots(config, S, window_chunk)
    copy = max((N if t.is_sliding(i) else S) * t.layer_kv_heads(i) * t.layer_head_dim(i) * a
               for i in range(t.num_hidden_layers))
    vb = vocab_buffers(keep_logits, adaptive_stop, steering)
    layer, carry = decode_bytes(config, context, C, a, window_chunk)
    head = 2 * C * config.text.hidden_size * a  # h and its norm
    held = vb.held * C * V * a
    vocab_step = (vb.step_act - vb.held) * C * V * a + vb.step_fp32 * C * V * 4
    plan = dict(scheme=scheme, group_size=group_size if scheme == "w4a16" else None,
                gpu_memory_bytes=gpu_memory_bytes, context=context, prompt_tokens=P, weights_by_part=parts,
                kv_cache_bytes=kv, resize_copy_bytes=copy, held_bytes=held,
                workspace_bytes=held + max(layer + carry, head + vocab_step),
                boundary_bytes=vb.boundary_act * C * V * a, batch_bytes=vb.commit_fp32 * C * V * 4,
                prefill_bytes=prefill_bytes(config, P, a, window_chunk), reserve_bytes=reserve_bytes)
    n, limit = _fit(plan, gpu_memory_bytes - sum(parts.values()) - reserve_bytes)
    return MemoryPlan(**plan, canvases_fit=n, limit=limit)


def _fit(p: dict, room: int) -> tuple[int, str]:
    """The most canvases whose peak fits `room` (every phase grows with n: doubling, then bisection), and
    the phase that stops one more ("weights" when nothing is left)."""
    peak = lambda n: max(_phases(p, n).values())  # noqa: E731
    lo, hi = 0, 1
    while peak(hi) <= room:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if peak(mid) <= room else (lo, mid)
    if room <= 0:
        return lo, "weights"
    return lo, max(_phases(p, hi).items(), key=lambda kv: kv[1])[0]
