"""The block-diffusion sampler's pieces: temperature schedule, entropy-bounded commit rule, stop rule, and
the two noise sources (reference-exact global RNG, per-row counter-based streams).

Legend: B rows, C canvas length, V vocabulary, N = B*C flattened canvas positions.

Everything here is shared by the reference mode and the fast mode of the one denoising loop
(engine/generate.py: `denoise_step`). Where the math must equal transformers 5.23 bit for bit
(generation_diffusion_gemma.py: LinearTemperatureScheduleLogitsProcessor, EntropyBoundSampler,
StableAndConfidentStoppingCriteria) the same torch ops run in the same order; per-row parameters are
carried as tensors whose values are the fp32 casts the reference's python scalars get, so a batch of equal
rows computes exactly what the reference computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from engine.params import GenerationParams

_F32_MIN = torch.finfo(torch.float32).min


# ---- per-row schedule parameters --------------------------------------------------------------------------
@dataclass
class RowParams:
    """GenerationParams of the rows in a batch as device tensors (batch order).

    t_min_B / span_B hold fp32(t_min) and fp32(t_max - t_min) computed in double first: exactly the values
    the reference's `t_min + (t_max - t_min) * (cur_step / N)` sees. A row with no schedule has span 0,
    t_min 1 (temperature exactly 1). Rows without adaptive stopping get stab -1 and conf -inf (never stop).
    """

    n_steps_B: torch.Tensor  # int32, max_denoising_steps
    t_min_B: torch.Tensor  # fp32
    span_B: torch.Tensor  # fp32
    bound_B: torch.Tensor  # fp32, entropy bound
    stab_B: torch.Tensor  # long, stability threshold (-1: adaptive stopping off)
    conf_B: torch.Tensor  # fp32, confidence threshold (-inf: off)
    scheduled: bool  # False when no row has a schedule (skip the division, as the reference does)

    @classmethod
    def build(cls, params: list[GenerationParams], device: torch.device | str) -> RowParams:
        def t(vals, dtype):
            return torch.tensor(vals, dtype=dtype, device=device)

        # A row without a schedule in a scheduled batch divides by exactly 1.0, which changes nothing.
        sched = [p.t_max is not None for p in params]
        return cls(
            n_steps_B=t([p.max_denoising_steps for p in params], torch.int32),
            t_min_B=t([p.t_min if p.t_max is not None else 1.0 for p in params], torch.float32),
            span_B=t([(p.t_max - p.t_min) if p.t_max is not None else 0.0 for p in params], torch.float32),
            bound_B=t([float(p.entropy_bound) for p in params], torch.float32),
            stab_B=t([p.stability_threshold if p.early_stopping else -1 for p in params], torch.long),
            conf_B=t(
                [p.confidence_threshold if p.early_stopping else float("-inf") for p in params], torch.float32
            ),
            scheduled=any(sched),
        )

    def select(self, idx_B: torch.Tensor) -> RowParams:
        return RowParams(
            *(
                x.index_select(0, idx_B)
                for x in (self.n_steps_B, self.t_min_B, self.span_B, self.bound_B, self.stab_B, self.conf_B)
            ),
            scheduled=self.scheduled,
        )

    @staticmethod
    def cat(parts: list[RowParams]) -> RowParams:
        names = ("n_steps_B", "t_min_B", "span_B", "bound_B", "stab_B", "conf_B")
        return RowParams(
            *(torch.cat([getattr(p, n) for p in parts]) for n in names),
            scheduled=any(p.scheduled for p in parts),
        )


# ---- temperature schedule ---------------------------------------------------------------------------------
def temperature_B(steps_left_B: torch.Tensor, rp: RowParams) -> torch.Tensor:
    """Linear schedule T = t_min + (t_max - t_min) * (steps_left / N), fp32 [B].

    steps_left counts DOWN from N to 1 (the reference's `cur_step`): 0.8 at the first step of a canvas,
    t_min + span/N at the last.
    """
    return rp.t_min_B + rp.span_B * (steps_left_B.to(torch.int32) / rp.n_steps_B)


# ---- entropy and the commit rule --------------------------------------------------------------------------
def exact_entropy(proc_BCV: torch.Tensor) -> torch.Tensor:
    """Categorical(logits=proc).entropy() with torch.distributions' exact op sequence, fp32 [B, C]."""
    norm = proc_BCV - proc_BCV.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(norm, dim=-1)
    return -(torch.clamp(norm, min=_F32_MIN) * probs).sum(-1)


def accept_mask(entropy_BC: torch.Tensor, bound: torch.Tensor | float) -> torch.Tensor:
    """THE commit rule: which canvas positions keep their sampled token this step (bool [B, C]).

    Sort entropies ascending and keep the prefix where (sum of the entropies ranked before) <= bound, i.e.
    sum(H) - max(H) of the kept set stays within the bound; the lowest-entropy position is always kept.
    `bound` is a float or a per-row fp32 tensor [B]. torch.sort (unstable) as in the reference.
    """
    sorted_H, order = torch.sort(entropy_BC, dim=-1, descending=False)
    before = torch.cumsum(sorted_H, dim=-1) - sorted_H
    if isinstance(bound, torch.Tensor):
        bound = bound[:, None]
    keep_sorted = before <= bound
    return torch.scatter(torch.zeros_like(keep_sorted), -1, order, keep_sorted)


# ---- stop rule --------------------------------------------------------------------------------------------
def stop_update(
    argmax_BC: torch.Tensor,
    prev_argmax_BC: torch.Tensor,
    run_B: torch.Tensor,
    mean_entropy_B: torch.Tensor,
    rp: RowParams,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable-and-confident adaptive stop. Returns (run_B', stop_B).

    run_B counts consecutive steps (this one included) whose argmax canvas is identical; "stable" means the
    argmax equals each of the previous `stability_threshold` steps' argmax, i.e. run >= S + 1 (S = 0: always
    stable). This is the reference's -1-initialised history of S canvases, kept as a run length so that rows
    with different S share one tensor. "Confident": mean token entropy of the processed logits < threshold.
    """
    same = (argmax_BC == prev_argmax_BC).all(dim=-1)
    run_B = torch.where(same, run_B + 1, torch.ones_like(run_B))
    stable = (run_B >= rp.stab_B + 1) & (rp.stab_B >= 0)
    return run_B, stable & (mean_entropy_B < rp.conf_B)


# ---- noise sources ----------------------------------------------------------------------------------------
@dataclass
class RowKeys:
    """Where each row is in its own random stream: (seed, canvas index, step index within the canvas)."""

    seed_B: torch.Tensor  # int64
    canvas_B: torch.Tensor  # int64
    step_B: torch.Tensor  # int64, 0 at the first denoising step of a canvas

    def select(self, idx_B: torch.Tensor) -> RowKeys:
        return RowKeys(*(t.index_select(0, idx_B) for t in (self.seed_B, self.canvas_B, self.step_B)))

    @staticmethod
    def cat(parts: list[RowKeys]) -> RowKeys:
        return RowKeys(*(torch.cat([getattr(p, n) for p in parts]) for n in ("seed_B", "canvas_B", "step_B")))


class NoiseSource(Protocol):
    """How a mode draws its randomness and its per-position statistics (argmax, entropy)."""

    def init_canvas(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor: ...

    def stats(self, proc_BCV: torch.Tensor, keys: RowKeys) -> tuple[torch.Tensor, torch.Tensor]: ...

    def sample(self, proc_BCV: torch.Tensor, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor: ...

    def renoise(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor: ...

    passes_per_step: float


class ReferenceNoise:
    """The global torch RNG consumed exactly as transformers does: randint(B, C) per canvas, then per step
    multinomial over all B*C x V probabilities and randint(B, C), for every row (frozen ones included).

    Statistics use the reference's exact ops (argmax of proc, Categorical entropy). Passes over the [B, C, V]
    logits per step: temperature 1 (r/w), softmax 3, multinomial ~3, argmax 1, entropy ~7.
    """

    passes_per_step = 15.0

    def init_canvas(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, V, (keys.seed_B.shape[0], C), device=device)

    def stats(self, proc_BCV: torch.Tensor, keys: RowKeys) -> tuple[torch.Tensor, torch.Tensor]:
        return proc_BCV.argmax(dim=-1), exact_entropy(proc_BCV)

    def sample(self, proc_BCV: torch.Tensor, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        B, C, V = proc_BCV.shape
        probs = torch.softmax(proc_BCV, dim=-1, dtype=torch.float32)
        return torch.multinomial(probs.view(-1, V), num_samples=1).view(B, C)

    def renoise(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, V, (keys.seed_B.shape[0], C), device=device)


def lean_stats(x_NV: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPU path of the fused statistics in three row-wise sweeps: (argmax_N, entropy_N, probs_NV).

    The torch reference of kernels.fused_sample is the spec and works in many elementwise passes; on a CPU
    the row-wise ATen kernels (max, softmax) keep a vocabulary row in cache, so this costs about three
    memory passes. H = logsumexp(x) - sum(p * x), with logsumexp recovered from the softmax at the argmax
    (p_max = exp(max - lse) >= 1/V, so the log is well conditioned).
    """
    m, am = x_NV.max(dim=-1)
    p = torch.softmax(x_NV, dim=-1)
    px = torch.bmm(p.unsqueeze(1), x_NV.unsqueeze(2)).view(-1)  # sum_v p*x without a [N, V] temporary
    lse = m - p.gather(1, am[:, None]).squeeze(1).log()
    return am, lse - px, p


def key_uniform(key_K: torch.Tensor) -> torch.Tensor:
    """fp64 uniforms in [0, 1) from 53 random bits of 62-bit stream keys."""
    return (key_K >> 9).to(torch.float64) * 2.0**-53


def inverse_cdf_sample(p_KV: torch.Tensor, key_K: torch.Tensor) -> torch.Tensor:
    """One draw per row from p_KV by inverting its CDF at u = hash-derived uniform of key_K (CPU path).

    Exact sampling from the same law as the Gumbel-max draw of the GPU kernel (different numbers): one
    cumulative sum over only the rows that are sampled, in float64 so the CDF's tail stays accurate.
    """
    u = key_uniform(key_K)
    cdf = p_KV.to(torch.float64).cumsum(dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
    return idx.clamp_(max=p_KV.shape[1] - 1)


# Stream tags fed to derive_keys' step slot: each (canvas, step) has distinct init / sample / renoise streams.
_TAG_INIT = 1


def _tag_sample(step_B: torch.Tensor) -> torch.Tensor:
    return 2 * step_B + 2


def _tag_renoise(step_B: torch.Tensor) -> torch.Tensor:
    return 2 * step_B + 3


class RowNoise:
    """Per-row counter-based streams (fast mode): every random number is a hash of (row seed, canvas index,
    step index, position, vocabulary column), so a row's draws do not depend on its batch mates or order.

    On the GPU (where `fused` holds), statistics and the Gumbel-max sample come from `kernels.fused_sample`
    (one tiled pass for argmax, entropy and log-sum-exp; the sample only where the commit rule keeps it). On
    the CPU, where the hash-per-vocabulary-entry of Gumbel-max is costly, `lean_stats` and an inverse-CDF
    draw over the kept rows sample the same law from the same per-position keys (CPU and GPU numbers
    differ; neither depends on the batch).
    Passes over the logits per step on the GPU: in head mode (`head_mode`: the fused sampler and its head
    mode both run as kernels) the head writes only the self-conditioning copy and stats / sample read the
    raw LM head output (`raw_stats`, `raw_sample`), both at the model dtype's width, with no [B, C, V] fp32
    tensor; commit hooks get their rows processed at commit (CanvasBatch.last_logits). Otherwise the head
    writes the fp32 logits once (softcap, temperature and the self-conditioning copy in one kernel,
    `model.head`), stats read them once, sample reads the kept rows.
    On the CPU the fast loop does not build the logits at all: `sample_head` samples from
    engine/vocab_head.py's ChunkedHead (statistics come from its cache-resident sweep; only the kept
    positions' logits are recomputed).
    """

    passes_per_step = 2.0  # + the kept fraction for the sample pass, measured by the loop

    def __init__(self) -> None:
        import kernels

        self._fused = kernels.fused_sample
        self._derive = kernels.derive_keys
        self.kept = self.positions = 0  # CPU path: how many positions the sample pass touched (bench)
        self._probs: tuple[int, torch.Tensor] | None = None

    def _tokens(self, keys: RowKeys, tag: torch.Tensor | int, C: int, V: int) -> torch.Tensor:
        k = self._derive(keys.seed_B, keys.canvas_B, tag, C)  # int64 in [0, 2**62): modulo bias < 2**-40
        return (k % V).view(-1, C)

    def init_canvas(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor:
        return self._tokens(keys, _TAG_INIT, C, V).to(device)

    def stats(self, proc_BCV: torch.Tensor, keys: RowKeys) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, V = proc_BCV.shape
        x_NV = proc_BCV.view(B * C, V)
        if not self.fused(x_NV.device):
            am, h, p = lean_stats(x_NV)
            self._probs = (x_NV.data_ptr(), p)  # reused by sample() on the same logits
            return am.view(B, C), h.view(B, C)
        ones = torch.ones(B * C, dtype=torch.float32, device=x_NV.device)
        key = torch.zeros(B * C, dtype=torch.int64, device=x_NV.device)
        none = torch.zeros(B * C, dtype=torch.bool, device=x_NV.device)
        am, h, _, _, _ = self._fused(x_NV, ones, key, none)
        return am.view(B, C), h.view(B, C)

    def sample(self, proc_BCV: torch.Tensor, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        B, C, V = proc_BCV.shape
        x_NV = proc_BCV.view(B * C, V)
        key_N = self._derive(keys.seed_B, keys.canvas_B, _tag_sample(keys.step_B), C).to(x_NV.device)
        keep_N = keep_BC.reshape(-1)
        if self.fused(x_NV.device):
            # No host sync on the GPU: the kernel skips the Gumbel work on rows that are not kept.
            ones = torch.ones(B * C, dtype=torch.float32, device=x_NV.device)
            # sample_only: the kernel reads only the kept rows (their statistics came from stats())
            return self._fused(x_NV, ones, key_N, keep_N, sample_only=True)[2].view(B, C)
        # CPU: gather the kept rows (a host read, harmless without a device to stall) and invert their CDF,
        # reusing the softmax of stats().
        idx = keep_N.nonzero().squeeze(1)
        self.kept += idx.numel()
        self.positions += B * C
        ptr, p = self._probs if self._probs is not None else (None, None)
        if ptr != x_NV.data_ptr():
            p = torch.softmax(x_NV, dim=-1)
        self._probs = None
        out = torch.zeros(B * C, dtype=torch.long)
        out[idx] = inverse_cdf_sample(p.index_select(0, idx), key_N.index_select(0, idx))
        return out.view(B, C)

    def renoise(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor:
        return self._tokens(keys, _tag_renoise(keys.step_B), C, V).to(device)

    @staticmethod
    def fused(device: torch.device) -> bool:
        """Whether `kernels.fused_sample` runs as its Triton kernel on `device` (the one dispatch switch:
        a GPU that passed the kernel's self-check, or a test forcing the Triton backend). Then the step
        materialises the logits and `stats` / `sample` make one fused pass each; otherwise `chunked_head`
        is the path."""
        import kernels

        return kernels.backend_for("fused_sample", torch.empty(0, device=device)) == "triton"

    # -- the GPU path's head mode: statistics and samples straight from the raw LM head output ----------
    @staticmethod
    def head_mode(device: torch.device) -> bool:
        """Whether the step may skip the fp32 logits on `device`: the fused sampler runs as its kernel and so
        does its head mode (kernels.head_sample, which applies the softcap and temperature itself)."""
        import kernels

        probe = torch.empty(0, device=device)
        return RowNoise.fused(device) and kernels.backend_for("head_sample", probe) == "triton"

    def raw_stats(
        self, raw_BCV: torch.Tensor, cap: float, temp_B: torch.Tensor | None, keys: RowKeys
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`stats` of the processed logits softcap(raw) / temp_B, from the raw LM head output (same bits)."""
        import kernels

        B, C, V = raw_BCV.shape
        dev = raw_BCV.device
        key = torch.zeros(B * C, dtype=torch.int64, device=dev)
        none = torch.zeros(B * C, dtype=torch.bool, device=dev)
        am, h, _, _, _ = kernels.head_sample(raw_BCV.view(B * C, V), cap, temp_B, key, none)
        return am.view(B, C), h.view(B, C)

    def raw_sample(
        self, raw_BCV: torch.Tensor, cap: float, temp_B: torch.Tensor | None, keep_BC: torch.Tensor,
        keys: RowKeys,
    ) -> torch.Tensor:
        """`sample` of the same processed logits: the kernel reads only the kept rows of the raw output."""
        import kernels

        B, C, V = raw_BCV.shape
        key_N = self._derive(keys.seed_B, keys.canvas_B, _tag_sample(keys.step_B), C).to(raw_BCV.device)
        out = kernels.head_sample(raw_BCV.view(B * C, V), cap, temp_B, key_N, keep_BC.reshape(-1),
                                  sample_only=True)
        return out[2].view(B, C)

    # -- the CPU path over a chunked vocabulary pass (engine/vocab_head.py) --------------------------------
    def chunked_head(self, device: torch.device) -> bool:
        """denoise_step uses ChunkedHead + sample_head instead of stats/sample (the CPU path)."""
        return not self.fused(device)

    def sample_head(self, head, sweep, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        """Like `sample`, for logits that exist only as a ChunkedHead (engine/vocab_head.py): the same key
        per position gives u, and the head inverts the CDF of the kept positions chunk-wise."""
        B, C = keep_BC.shape
        key_N = self._derive(keys.seed_B, keys.canvas_B, _tag_sample(keys.step_B), C).to(keep_BC.device)
        idx = keep_BC.reshape(-1).nonzero().squeeze(1)
        self.kept += idx.numel()
        self.positions += B * C
        out = torch.zeros(B * C, dtype=torch.long, device=keep_BC.device)
        out[idx] = head.inverse_cdf(sweep, idx, key_uniform(key_N.index_select(0, idx)))
        return out.view(B, C)
