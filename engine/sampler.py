"""The block-diffusion sampler's pieces: temperature schedule, entropy-bounded commit rule, stop rule, and
the two noise sources (reference-exact global RNG, per-row counter-based streams).

Legend: B rows, C canvas length, V vocabulary, N = B*C flattened canvas positions.

Everything here is shared by the reference mode and the fast mode of the one denoising step
(engine/denoise.py `denoise_step`; the vocabulary work around it is engine/heads.py's). Where the math must
equal transformers 5.23 bit for bit (generation_diffusion_gemma.py: LinearTemperatureScheduleLogitsProcessor,
EntropyBoundSampler, StableAndConfidentStoppingCriteria) the same torch ops run in the same order; per-row
parameters are carried as tensors whose values are the fp32 casts the reference's python scalars get, so a
batch of equal rows computes exactly what the reference computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

import kernels
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
    ltr_B: torch.Tensor | None = None  # bool, commit_order "left_to_right"; None: no such row

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
            ltr_B=(t([p.commit_order == "left_to_right" for p in params], torch.bool)
                   if any(p.commit_order == "left_to_right" for p in params) else None),
        )

    def select(self, idx_B: torch.Tensor) -> RowParams:
        return RowParams(
            *(
                x.index_select(0, idx_B)
                for x in (self.n_steps_B, self.t_min_B, self.span_B, self.bound_B, self.stab_B, self.conf_B)
            ),
            scheduled=self.scheduled,
            ltr_B=None if self.ltr_B is None else self.ltr_B.index_select(0, idx_B),
        )

    @staticmethod
    def cat(parts: list[RowParams]) -> RowParams:
        names = ("n_steps_B", "t_min_B", "span_B", "bound_B", "stab_B", "conf_B")
        return RowParams(
            *(torch.cat([getattr(p, n) for p in parts]) for n in names),
            scheduled=any(p.scheduled for p in parts),
            ltr_B=(None if all(p.ltr_B is None for p in parts) else torch.cat([
                p.ltr_B if p.ltr_B is not None else torch.zeros_like(p.n_steps_B, dtype=torch.bool)
                for p in parts
            ])),
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


def order_mask(keep_BC: torch.Tensor, rp: RowParams, steps_left_B: torch.Tensor) -> torch.Tensor:
    """The commit order (engine/params.py COMMIT_ORDERS): `keep_BC` (the confidence rule's) for most rows;
    for "left_to_right" rows at step s = N - steps_left + 1 of N, the first ceil(C * s / N) positions."""
    if rp.ltr_B is None:
        return keep_BC
    C = keep_BC.shape[1]
    n_B = rp.n_steps_B.long()
    frontier_B = (C * (n_B - steps_left_B.long() + 1) + n_B - 1) // n_B
    ltr_BC = torch.arange(C, device=keep_BC.device)[None, :] < frontier_B[:, None]
    return torch.where(rp.ltr_B[:, None], ltr_BC, keep_BC)


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
    """How a mode draws its randomness: the canvas' initial and renoised tokens, and the statistics (argmax,
    entropy) and samples of materialised logits (engine/heads.py MaterialisedHead). Everything the step and
    the heads call on a noise source is declared here."""

    passes_per_step: float  # passes over the [B, C, V] logits its stats + sample make (Counters)

    def init_canvas(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor: ...

    def renoise(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor: ...

    def stats(self, proc_BCV: torch.Tensor, keys: RowKeys) -> tuple[torch.Tensor, torch.Tensor]: ...

    def sample(self, proc_BCV: torch.Tensor, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor: ...


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


def key_uniform(key_K: torch.Tensor) -> torch.Tensor:
    """fp64 uniforms in [0, 1) from 53 random bits of 62-bit stream keys."""
    return (key_K >> 9).to(torch.float64) * 2.0**-53


# Stream tags fed to derive_keys' step slot: each (canvas, step) has distinct init / sample / renoise streams.
_TAG_INIT = 1


def _tag_sample(step_B: torch.Tensor) -> torch.Tensor:
    return 2 * step_B + 2


def _tag_renoise(step_B: torch.Tensor) -> torch.Tensor:
    return 2 * step_B + 3


class RowNoise:
    """Per-row counter-based streams (fast mode): every random number is a hash of (row seed, canvas index,
    step index, position, vocabulary column), so a row's draws do not depend on its batch mates or order.

    `stats` / `sample` are `kernels.fused_sample` over materialised logits (one tiled pass for argmax and
    entropy; the Gumbel-max sample only where the commit rule keeps a position): the sampler of
    engine/heads.py MaterialisedHead, and, in its torch form, the spec of the GPU head mode. The fast mode's
    other heads draw from the same per-position keys (`sample_keys`): the GPU head mode in the kernel's head
    form, the CPU sweep by inverting the CDF at `kept_uniforms` (CPU and GPU numbers differ; neither depends
    on the batch).
    """

    passes_per_step = 2.0  # + the kept fraction for the sample pass, measured by the loop

    def __init__(self) -> None:
        self.kept = self.positions = 0  # CPU sweep: how many positions the sample pass touched (bench)

    def _tokens(self, keys: RowKeys, tag: torch.Tensor | int, C: int, V: int) -> torch.Tensor:
        k = kernels.derive_keys(keys.seed_B, keys.canvas_B, tag, C)  # int64 in [0, 2**62): bias < 2**-40
        return (k % V).view(-1, C)

    def init_canvas(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor:
        return self._tokens(keys, _TAG_INIT, C, V).to(device)

    def renoise(self, keys: RowKeys, C: int, V: int, device: torch.device) -> torch.Tensor:
        return self._tokens(keys, _tag_renoise(keys.step_B), C, V).to(device)

    def sample_keys(self, keys: RowKeys, C: int) -> torch.Tensor:
        """The stream key of each position's sample this step -> int64 [B*C] (kernels/sampler.py keys)."""
        return kernels.derive_keys(keys.seed_B, keys.canvas_B, _tag_sample(keys.step_B), C)

    def kept_uniforms(self, keys: RowKeys, keep_BC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx_K, u_K): the flat indices of the kept positions and a uniform in [0, 1) from each one's sample
        key (the CPU sweep's inverse-CDF draw). Reads the kept count: CPU path only."""
        B, C = keep_BC.shape
        key_N = self.sample_keys(keys, C).to(keep_BC.device)
        idx = keep_BC.reshape(-1).nonzero().squeeze(1)
        self.kept += idx.numel()
        self.positions += B * C
        return idx, key_uniform(key_N.index_select(0, idx))

    def stats(self, proc_BCV: torch.Tensor, keys: RowKeys) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, V = proc_BCV.shape
        x_NV = proc_BCV.view(B * C, V)
        ones = torch.ones(B * C, dtype=torch.float32, device=x_NV.device)
        key = torch.zeros(B * C, dtype=torch.int64, device=x_NV.device)
        none = torch.zeros(B * C, dtype=torch.bool, device=x_NV.device)
        am, h, _, _, _ = kernels.fused_sample(x_NV, ones, key, none)
        return am.view(B, C), h.view(B, C)

    def sample(self, proc_BCV: torch.Tensor, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        B, C, V = proc_BCV.shape
        x_NV = proc_BCV.view(B * C, V)
        key_N = self.sample_keys(keys, C).to(x_NV.device)
        ones = torch.ones(B * C, dtype=torch.float32, device=x_NV.device)
        # No host sync: the kernel reads only the kept rows (their statistics came from stats()).
        return kernels.fused_sample(x_NV, ones, key_N, keep_BC.reshape(-1), sample_only=True)[2].view(B, C)
