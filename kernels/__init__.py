"""Kernel dispatch: the ONE switch per op between a Triton kernel and its torch reference.

Public ops (shapes use the legend B batch, H heads or hidden, K KV heads, C canvas, S cache length, D head
dim, T flat tokens, E experts, k top-k, F = 2*Im gate+up rows, I = Im expert width, N rows, V vocab):
- `fused_sample(logits_NV, inv_temp_N, key_N, need_sample_N=None)`
      -> (argmax_N, entropy_N, sample_N, max_logit_N, logsumexp_N); see kernels/sampler.py.
- `head_sample(x_NV, cap, temperature_R, key_N, need_sample_N=None)`: fused_sample of the LM head's raw
      output, the logit epilogue's softcap and temperature applied in the same pass; see kernels/sampler.py.
- `derive_keys(seed_B, canvas_B, step_B, C) -> key_(B*C)`: per-position noise stream keys for fused_sample.
- `fused_moe(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI) -> y_TH`; see kernels/fused_moe.py.
- `quant_moe(x_TH, topk_idx_Tk, topk_w_Tk, gate_up, down) -> y_TH`: fused_moe with quantized expert weights
      (`QuantTensor`s [E, F, H] and [E, H, I], kernels/dequant.py); see kernels/quant_moe.py.
- `quant_linear(x, w) -> x @ w^T`: a dense linear with a quantized weight (`QuantTensor` [N, K]), x [..., K];
      see kernels/quant_linear.py.
- `canvas_attention(q_BHCD, k_ctx_BKSD, v_ctx_BKSD, ctx_visible_BS, k_can_BKCD, v_can_BKCD, scale=1.0,
      ctx_rows_B=None) -> o_BHCD`; see kernels/canvas_attention.py.
- `rms_norm(x, weight, eps, add=None, residual=None, scale=None, norm_x=None, norm_add=None) -> y`: RMSNorm
      with the adds and norms around it fused; see kernels/rms_norm.py.
- `norm_rope(x_BTHD, weight_D, eps, cos_BTD, sin_BTD) -> y_BTHD`: per-head RMSNorm then RoPE (q and k);
      see kernels/norm_rope.py.
- `logit_epilogue(x, cap, temperature_R=None, narrow_dtype=None, keep_fp32=True) -> (y fp32 or None,
      narrow or None)`: the LM head's softcap, the step's per-row temperature and the self-conditioning copy
      in one pass; see kernels/logit_epilogue.py.
- `route(r_TH, scale_H, proj_EH, per_expert_E, top_k, eps) -> (topk_idx_Tk, topk_w_Tk)`: the MoE router;
      see kernels/router.py.
- `rms_norm_pair(x, w1, w2, eps) -> (y1, y2)`: two scaled RMSNorms of one input (the block's two
      pre-feed-forward norms of r) in one launch; see kernels/rms_norm.py.
- `gelu_mul(g, u) -> gelu_tanh(g) * u`: the dense MLPs' gated GELU; see kernels/gelu_mul.py.
- `softmax(x, out_dtype, cap=None, temperature_R=None) -> p`: row softmax over the last dim in fp32,
      written in out_dtype (the self-conditioning input; with cap, of the LM head's raw output processed as
      the logit epilogue's copy); see kernels/softmax.py.

Alternatives: canvas_attention also runs as PyTorch's fused SDPA ("sdpa") and fused_moe as PyTorch's grouped
GEMM ("grouped"), chosen only by a per-op override, e.g. `use_backend("sdpa", ops=("canvas_attention",))`.

Backend rule ("auto", the default): Triton only for CUDA tensors, when triton imports, no input needs a
gradient (the kernels have no backward), the shape is not one where Triton measured slower on a GPU
(`measured_slower`), and the op's one-time self-check on that device (a small
comparison against the torch reference) passed. Everything else, including every CPU call, runs the torch
reference, so the CPU path is exactly the reference path. Override with `set_backend("torch"|"triton"|
"auto")`, the `use_backend(...)` context manager, or the env var DGBATCH_KERNELS at import; pass `ops=` to
either to override only some ops (benchmarks A/B one kernel inside the full model that way).

Measured launch settings: `use_tuned({op: [(size_key, kwargs), ...]})` (or `set_tuned`) hands the Triton
launcher of fused_moe, canvas_attention, fused_sample or head_sample extra keyword arguments (tiles, warps,
key splits, column chunks) by input size; "prefer_triton" in canvas_attention's kwargs also lifts
`measured_slower` for that size. Nothing is set by default. bench/gpu.py fills it from its own tile sweeps for
its "tuned" row. See `tuned_for` for how a size key is matched.

Note: `kernels.fused_moe`, `kernels.canvas_attention`, `kernels.rms_norm`, `kernels.norm_rope`,
`kernels.logit_epilogue`, `kernels.softmax`, `kernels.gelu_mul`, `kernels.quant_linear` and
`kernels.quant_moe` are the dispatching *functions*, named like their modules; reach a module with
`from kernels.fused_moe import fused_moe_torch` (or importlib), never `from kernels import fused_moe`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import types
from collections.abc import Iterator

import torch

from kernels import canvas_attention as _attn
from kernels import fused_moe as _moe
from kernels import gelu_mul as _gelu_mul
from kernels import logit_epilogue as _epilogue
from kernels import norm_rope as _norm_rope
from kernels import quant_linear as _qlinear
from kernels import quant_moe as _qmoe
from kernels import rms_norm as _rms_norm
from kernels import router as _router
from kernels import sampler as _sampler
from kernels import softmax as _softmax
from kernels import stream_keys as _stream_keys
from kernels._triton_compat import HAS_TRITON
from kernels.dequant import QuantTensor

__all__ = ["fused_sample", "head_sample", "derive_keys", "fused_moe", "canvas_attention", "rms_norm",
           "norm_rope", "logit_epilogue", "softmax", "route", "gelu_mul", "rms_norm_pair", "quant_linear",
           "quant_moe", "set_backend", "use_backend", "get_backend", "backend_for", "set_tuned", "use_tuned",
           "tuned_for"]

_CHOICES = ("auto", "torch", "triton")
_backend = os.environ.get("DGBATCH_KERNELS", "auto")
if _backend not in _CHOICES:
    raise ValueError(f"DGBATCH_KERNELS must be one of {_CHOICES}, got {_backend!r}")
_op_backend: dict[str, str] = {}  # per-op overrides, consulted before the global choice
_selfcheck: dict[tuple[str, str], bool] = {}  # (op, device) -> passed; resolved once per process

# Other implementations of an op, reachable by a per-op override (`set_backend("sdpa", ops=(
# "canvas_attention",))`): PyTorch's fused kernels, measured beside ours by bench/gpu.py. "auto" never picks
# them; once a GPU measurement says where they win, the auto rule (`backend_for`) names them there.
_ALTERNATIVES = {
    "canvas_attention": {"sdpa": _attn.canvas_attention_sdpa},
    "fused_moe": {"grouped": _moe.fused_moe_grouped},
}

_OPS = {
    "fused_sample": (_sampler.fused_sample_torch, _sampler.fused_sample_triton, _sampler),
    "derive_keys": (_stream_keys.derive_keys_torch, _stream_keys.derive_keys_triton, _stream_keys),
    "head_sample": (_sampler.head_sample_torch, _sampler.head_sample_triton,
                    types.SimpleNamespace(selfcheck=_sampler.selfcheck_head)),
    "fused_moe": (_moe.fused_moe_torch, _moe.fused_moe_triton, _moe),
    "canvas_attention": (_attn.canvas_attention_torch, _attn.canvas_attention_triton, _attn),
    "rms_norm": (_rms_norm.rms_norm_torch, _rms_norm.rms_norm_triton, _rms_norm),
    "norm_rope": (_norm_rope.norm_rope_torch, _norm_rope.norm_rope_triton, _norm_rope),
    "logit_epilogue": (_epilogue.logit_epilogue_torch, _epilogue.logit_epilogue_triton, _epilogue),
    "softmax": (_softmax.softmax_torch, _softmax.softmax_triton, _softmax),
    "route": (_router.route_torch, _router.route_triton, _router),
    "gelu_mul": (_gelu_mul.gelu_mul_torch, _gelu_mul.gelu_mul_triton, _gelu_mul),
    "quant_linear": (_qlinear.quant_linear_torch, _qlinear.quant_linear_triton, _qlinear),
    "quant_moe": (_qmoe.quant_moe_torch, _qmoe.quant_moe_triton, _qmoe),
    "rms_norm_pair": (_rms_norm.rms_norm_pair_torch, _rms_norm.rms_norm_pair_triton,
                      types.SimpleNamespace(selfcheck=_rms_norm.selfcheck_pair)),
}


def set_backend(name: str, ops: tuple[str, ...] | None = None) -> None:
    """Force every op (or just `ops`) to "torch" or "triton", or restore "auto"; a per-op override may also
    name one of that op's alternatives (`_ALTERNATIVES`: "sdpa" for canvas_attention, "grouped" for
    fused_moe)."""
    global _backend
    if ops is None:
        if name not in _CHOICES:
            raise ValueError(f"backend must be one of {_CHOICES}, got {name!r}")
        _backend = name
        return
    for op in ops:
        if op not in _OPS:
            raise ValueError(f"unknown kernel op {op!r}; expected one of {sorted(_OPS)}")
        allowed = _CHOICES + tuple(_ALTERNATIVES.get(op, ()))
        if name not in allowed:
            raise ValueError(f"backend for {op} must be one of {allowed}, got {name!r}")
        if name == "auto":
            _op_backend.pop(op, None)
        else:
            _op_backend[op] = name


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_backend(name: str, ops: tuple[str, ...] | None = None) -> Iterator[None]:
    """Temporarily force a backend, for every op or just `ops` (tests, benchmarks)."""
    old, old_ops = _backend, dict(_op_backend)
    set_backend(name, ops)
    try:
        yield
    finally:
        set_backend(old)
        _op_backend.clear()
        _op_backend.update(old_ops)


# op -> the size key of its first input: every part but the last must match an entry exactly (the head dim of
# attention), the last is a size (tokens, batch rows, sampler rows)
_SIZE_KEY = {
    "fused_moe": lambda x_TH: (x_TH.shape[0],),
    "canvas_attention": lambda q_BHCD: (q_BHCD.shape[-1], q_BHCD.shape[0]),
    "fused_sample": lambda logits_NV: (logits_NV.shape[0],),
    "head_sample": lambda x_NV: (x_NV.shape[0],),
}
_tuned: dict[str, list[tuple[tuple[int, ...], dict]]] = {}


def set_tuned(settings: dict[str, list] | None) -> None:
    """Replace the measured launch settings: {op: [(size_key, kwargs), ...]} (None or {}: none). Checked
    here, before any launch: a known op, keys of the right length, kwargs the op's Triton launcher takes."""
    new: dict[str, list[tuple[tuple[int, ...], dict]]] = {}
    for op, entries in (settings or {}).items():
        if op not in _SIZE_KEY:
            raise ValueError(f"tuned settings: {op!r} takes none; tunable ops are {sorted(_SIZE_KEY)}")
        allowed = set(inspect.signature(_OPS[op][1]).parameters)
        allowed |= {"prefer_triton"} if op == "canvas_attention" else set()
        n_key = 2 if op == "canvas_attention" else 1
        for key, kwargs in entries:
            key = tuple(int(k) for k in key)
            if len(key) != n_key:
                raise ValueError(f"tuned settings for {op}: key {key} must have {n_key} parts")
            bad = sorted(set(kwargs) - allowed)
            if bad:
                raise ValueError(f"tuned settings for {op} at {key}: {bad} are not keyword arguments of "
                                 f"{_OPS[op][1].__name__}")
            new.setdefault(op, []).append((key, dict(kwargs)))
    _tuned.clear()
    _tuned.update(new)


@contextlib.contextmanager
def use_tuned(settings: dict[str, list] | None) -> Iterator[None]:
    """Temporarily use these measured launch settings (benchmarks)."""
    old = {op: list(v) for op, v in _tuned.items()}
    set_tuned(settings)
    try:
        yield
    finally:
        _tuned.clear()
        _tuned.update(old)


def tuned_for(op: str, first: torch.Tensor) -> dict:
    """The measured settings for this call: among the op's entries whose key matches all but its last part,
    the one with the largest size not above the call's, else the smallest size ({} when there are none)."""
    if op not in _tuned:
        return {}
    key = _SIZE_KEY[op](first)
    same = sorted((k[-1], kw) for k, kw in _tuned[op] if k[:-1] == key[:-1])
    if not same:
        return {}
    below = [kw for size, kw in same if size <= key[-1]]
    return below[-1] if below else same[0][1]


def measured_slower(op: str, first: torch.Tensor) -> bool:
    """Shapes where the Triton kernel measured slower than its torch reference on a GPU ("auto" keeps torch).

    canvas_attention at head_dim 512 (the global layers): 0.4-0.7x of the eager torch reference at 1 and 8
    canvases on an H100 (bench/RESULTS.md, "Kernels at real shapes on an H100"); at head_dim 256: 1.2-1.4x at
    one canvas but 0.9x at 8 canvases, so batches of 8 or more canvases keep torch too (2-7 were not
    measured; Triton stays there).
    All measured before the kernel's 2026-11-27 rewrite; the next GPU run's attention rows revisit this.
    """
    return op == "canvas_attention" and (first.shape[-1] >= 512 or first.shape[0] >= 8)


def backend_for(op: str, *tensors: torch.Tensor | None) -> str:
    """Which implementation `op` uses for these inputs: "torch", "triton", or an alternative's name when a
    per-op override chose one."""
    if op in _op_backend:
        return _op_backend[op]
    if _backend != "auto":
        return _backend
    ts = [t for t in tensors if t is not None]
    if not HAS_TRITON or not ts or ts[0].device.type != "cuda":
        return "torch"
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        return "torch"
    if measured_slower(op, ts[0]) and not tuned_for(op, ts[0]).get("prefer_triton"):
        return "torch"
    key = (op, str(ts[0].device))
    if key not in _selfcheck:
        try:
            _selfcheck[key] = bool(_OPS[op][2].selfcheck(ts[0].device))
        except Exception:  # a kernel that cannot compile on this card must not take the model down
            _selfcheck[key] = False
    return "triton" if _selfcheck[key] else "torch"


def _impl(op: str, *tensors):
    ref, tri, _ = _OPS[op]
    name = backend_for(op, *tensors)
    if name == "triton" and op in _tuned:
        kw = {k: v for k, v in tuned_for(op, tensors[0]).items() if k != "prefer_triton"}
        return functools.partial(tri, **kw) if kw else tri
    return tri if name == "triton" else ref if name == "torch" else _ALTERNATIVES[op][name]


def fused_sample(logits_NV: torch.Tensor, inv_temp_N: torch.Tensor, key_N: torch.Tensor,
                 need_sample_N: torch.Tensor | None = None, *, sample_only: bool = False):
    """One pass over x = logits_NV * inv_temp_N[:, None] (logits already softcapped, fp32).

    Returns (argmax_N long, entropy_N fp32, sample_N long, max_logit_N fp32, logsumexp_N fp32).
    sample_N is a Gumbel-max draw from softmax(x) driven by key_N (int64, see `derive_keys`); it is -1 for
    rows where need_sample_N (bool [N]) is False. Same keys and logits give the same sample on either backend
    up to last-ulp differences in log(). sample_only: the caller reads only sample_N, so the kernel skips
    unsampled rows entirely (their other outputs are then unspecified).
    """
    _sampler.check_sample_args(logits_NV, inv_temp_N, key_N, need_sample_N)
    return _impl("fused_sample", logits_NV)(logits_NV, inv_temp_N, key_N, need_sample_N,
                                            sample_only=sample_only)


def head_sample(x_NV: torch.Tensor, cap: float, temperature_R: torch.Tensor | None, key_N: torch.Tensor,
                need_sample_N: torch.Tensor | None = None, *, sample_only: bool = False):
    """`fused_sample` of logit_epilogue(x_NV, cap, temperature_R) straight from the LM head's raw output x_NV
    (temperature_R: one per N / R rows, or None); the Triton form applies the softcap and temperature in its
    one pass, as the epilogue kernel does, so its statistics are those of the materialised fp32 logits."""
    _sampler.check_head_sample_args(x_NV, temperature_R, key_N, need_sample_N)
    return _impl("head_sample", x_NV)(x_NV, cap, temperature_R, key_N, need_sample_N, sample_only=sample_only)


def derive_keys(seed_B: torch.Tensor | int, canvas_B: torch.Tensor | int, step_B: torch.Tensor | int,
                C: int) -> torch.Tensor:
    """Per-position stream keys key_(B*C) int64 for fused_sample (see kernels/stream_keys.py); ints broadcast.
    The same bits on either backend; the Triton form is one launch instead of ~130 small integer ops."""
    ts = [t for t in (seed_B, canvas_B, step_B) if isinstance(t, torch.Tensor)]
    impl = _impl("derive_keys", *ts) if ts else _stream_keys.derive_keys_torch
    return impl(seed_B, canvas_B, step_B, C)


def fused_moe(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor,
              gate_up_EFH: torch.Tensor, down_EHI: torch.Tensor) -> torch.Tensor:
    """Routed experts: y = sum_k w_k * down[e_k](gelu_tanh(gate[e_k] x) * up[e_k] x); fp32 sum, x dtype."""
    _moe.check_moe_args(x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI)
    return _impl("fused_moe", x_TH, topk_w_Tk, gate_up_EFH, down_EHI)(
        x_TH, topk_idx_Tk, topk_w_Tk, gate_up_EFH, down_EHI)


def quant_moe(x_TH: torch.Tensor, topk_idx_Tk: torch.Tensor, topk_w_Tk: torch.Tensor, gate_up: QuantTensor,
              down: QuantTensor) -> torch.Tensor:
    """fused_moe with quantized expert weights (each weight dequantized as kernels/dequant.py rounds it)."""
    _qmoe.check_quant_moe_args(x_TH, topk_idx_Tk, topk_w_Tk, gate_up, down)
    return _impl("quant_moe", x_TH, topk_w_Tk, gate_up.data, down.data)(
        x_TH, topk_idx_Tk, topk_w_Tk, gate_up, down)


def quant_linear(x: torch.Tensor, w: QuantTensor) -> torch.Tensor:
    """y = x @ w^T in x's dtype for a quantized weight w [N, K] and x [..., K]."""
    _qlinear.check_quant_linear_args(x, w)
    return _impl("quant_linear", x, w.data)(x, w)


def canvas_attention(q_BHCD: torch.Tensor, k_ctx_BKSD: torch.Tensor, v_ctx_BKSD: torch.Tensor,
                     ctx_visible_BS: torch.Tensor, k_can_BKCD: torch.Tensor, v_can_BKCD: torch.Tensor,
                     scale: float = 1.0, *, ctx_rows_B: torch.Tensor | None = None) -> torch.Tensor:
    """Canvas queries over visible cached context keys plus the whole canvas (bidirectional), GQA.
    ctx_rows_B: row b's context is row ctx_rows_B[b] of k_ctx / v_ctx (read in place by the kernel)."""
    _attn.check_attention_args(q_BHCD, k_ctx_BKSD, v_ctx_BKSD, ctx_visible_BS, k_can_BKCD, v_can_BKCD,
                               ctx_rows_B)
    return _impl("canvas_attention", q_BHCD, k_ctx_BKSD, v_ctx_BKSD, k_can_BKCD, v_can_BKCD)(
        q_BHCD, k_ctx_BKSD, v_ctx_BKSD, ctx_visible_BS, k_can_BKCD, v_can_BKCD, scale, ctx_rows_B=ctx_rows_B)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float, *, add: torch.Tensor | None = None,
             residual: torch.Tensor | None = None, scale: torch.Tensor | None = None,
             norm_x: torch.Tensor | None = None, norm_add: torch.Tensor | None = None) -> torch.Tensor:
    """[residual +] rms_norm(x [+ add]) [* w], [* scale]: DiffusionGemma's fp32-math norm, in x's dtype;
    norm_x / norm_add normalise x / add first with those weights (the block tail's two inner norms)."""
    impl = _impl("rms_norm", x, weight, add, residual, norm_x, norm_add)
    return impl(x, weight, eps, add=add, residual=residual, scale=scale, norm_x=norm_x, norm_add=norm_add)


def norm_rope(x_BTHD: torch.Tensor, weight_D: torch.Tensor, eps: float, cos_BTD: torch.Tensor,
              sin_BTD: torch.Tensor) -> torch.Tensor:
    """Per-head scaled RMSNorm over D, then rotate-half RoPE with cos/sin of shape [B, T, D]."""
    _norm_rope.check_norm_rope_args(x_BTHD, weight_D, cos_BTD, sin_BTD)
    return _impl("norm_rope", x_BTHD, weight_D)(x_BTHD, weight_D, eps, cos_BTD, sin_BTD)


def logit_epilogue(x: torch.Tensor, cap: float, temperature_R: torch.Tensor | None = None,
                   narrow_dtype: torch.dtype | None = None, *, keep_fp32: bool = True
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(fp32 tanh(x / cap) * cap [/ temperature_R per leading row] or None without keep_fp32, its copy in
    narrow_dtype or None)."""
    _epilogue.check_epilogue_args(x, temperature_R, narrow_dtype, keep_fp32)
    return _impl("logit_epilogue", x)(x, cap, temperature_R, narrow_dtype, keep_fp32=keep_fp32)


def softmax(x: torch.Tensor, out_dtype: torch.dtype, *, cap: float | None = None,
            temperature_R: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(x, dim=-1) computed in fp32 and written in out_dtype. Head mode (cap given): x is the LM head's
    raw output, processed first as the logit epilogue's narrow copy (softcap, / temperature_R per leading row,
    rounded to out_dtype): the self-conditioning input straight from the LM head."""
    _softmax.check_softmax_args(x, cap, temperature_R)
    return _impl("softmax", x)(x, out_dtype, cap=cap, temperature_R=temperature_R)


def route(r_TH: torch.Tensor, scale_H: torch.Tensor, proj_EH: torch.Tensor, per_expert_E: torch.Tensor,
          top_k: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MoE router on the raw residual -> (topk_idx_Tk long, topk_w_Tk fp32), weights in top-k order."""
    return _impl("route", r_TH, scale_H, proj_EH, per_expert_E)(r_TH, scale_H, proj_EH, per_expert_E, top_k,
                                                                 eps)


def gelu_mul(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(g) * u, elementwise, in g's dtype."""
    return _impl("gelu_mul", g, u)(g, u)


def rms_norm_pair(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x, w1), rms_norm(x, w2)) in x's dtype."""
    return _impl("rms_norm_pair", x, w1, w2)(x, w1, w2, eps)
