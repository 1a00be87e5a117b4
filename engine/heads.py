"""The vocabulary head of a denoising step: how the decoder's hidden states become the step's statistics,
samples, next self-conditioning state and (for commit hooks) kept logits. One strategy per device and mode,
chosen once when a loop starts (`fast_head` for the fast mode, `ReferenceHead` for the reference mode);
engine/denoise.py's step calls it through `VocabHead` / `VocabPass`, so the commit rule, steering and the
stop rule are written once, there.

  ReferenceHead     reference mode: fp32 logits materialised (model.head), the reference's exact ops and
                    global RNG (engine/sampler.py ReferenceNoise); frozen rows keep their self-conditioning
                    input, as transformers keeps their logits.
  MaterialisedHead  fast mode where the fused sampler runs as a kernel but its head mode does not: the same
                    fp32 logits, statistics and samples from RowNoise's fused sampler.
  FusedHead         fast mode on a GPU (the head mode): the sampler and the self-conditioning softmax read the
                    raw LM head output (kernels/sampler.py head_sample, kernels/softmax.py), no fp32 logits
                    unless a steering hook asks; commit hooks get a row processed at commit.
  ChunkedSweepHead  fast mode on a CPU: engine/vocab_head.py's cache-resident sweep, never a [B, C, V] tensor
                    unless a commit hook reads the logits; samples invert the CDF of the kept positions.

Each pass also gives the log-probability of its argmax (`argmax_logprob`: log_softmax at the argmax = -log of
the softmax normaliser around the max), what a row reporting logprobs commits with the argmax
(engine/commit_hook.py): the fused and sweep heads have it in their statistics already (max - logsumexp,
-log sum e^(x - max)), the materialised head gets it in one more pass of the fused sampler, the reference
head with torch's log_softmax; never a kept [B, C, V] copy.

Self-conditioning state (CanvasBatch.sc, kept between steps): softmax probabilities in the model dtype
[B, C, V] (materialised and fused heads) or the soft embedding [B, C, H] (the sweep); `sc_soft` turns it into
decode_hidden's one input, probs @ E * sqrt(H). A zero row is exactly "no self-conditioning" in both forms,
so a batch mixes rows at different steps without a mask.

Legend: B rows, C canvas, V vocabulary, H hidden, N = B*C positions.
"""

from __future__ import annotations

from typing import Protocol

import torch

import kernels
from engine.kept_logits import KeptLogits
from engine.sampler import NoiseSource, RowKeys, RowNoise
from engine.vocab_head import ChunkedHead


class VocabPass(Protocol):
    """One step's vocabulary results (batch order)."""

    argmax_BC: torch.Tensor  # long: the commit candidate and the stop rule's canvas
    entropy_BC: torch.Tensor  # fp32: what the commit rule bounds and the stop rule averages

    def sample(self, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        """A draw from softmax(processed logits) at the kept positions (others: any value) -> long [B, C]."""
        ...

    def logits(self) -> torch.Tensor:
        """The step's fp32 processed logits [B, C, V] (steering hooks; built here when not yet built)."""
        ...

    def argmax_logprob(self) -> torch.Tensor:
        """log_softmax(processed logits) at argmax_BC -> fp32 [B, C] (rows that report logprobs)."""
        ...

    def sc_next(self) -> torch.Tensor:
        """The next step's self-conditioning state (see the module doc)."""
        ...

    def kept(self) -> KeptLogits:
        """What a commit hook will read of this step's logits."""
        ...


class VocabHead(Protocol):
    """The strategy: one object per loop run; `run` once per step."""

    noise: NoiseSource

    def run(
        self, model, h_BCH: torch.Tensor, temp_B: torch.Tensor | None, keys: RowKeys, *, want_sc: bool,
        keep_logits: bool,
    ) -> VocabPass:
        """The head over the decoder output h_BCH at per-row temperatures temp_B (None: 1). want_sc: a step
        of this canvas follows (sc_next will be read); keep_logits: some row's commit hook reads the logits
        (kept / logits will be read)."""
        ...

    def sc_soft(self, model, sc: torch.Tensor) -> torch.Tensor:
        """decode_hidden's self-conditioning input [B, C, H] from the state the last step left."""
        ...

    def carry_sc(self, old: torch.Tensor, new: torch.Tensor, frozen_B: torch.Tensor) -> torch.Tensor:
        """The state the next step reads when frozen_B rows had stopped before this step."""
        ...

    def passes_per_step(self, keep_logits: bool) -> float:
        """Passes over a [B, C, V] logits tensor in memory per step (engine/counters.py)."""
        ...


class _Head:
    """What the heads share: their noise source, a self-conditioning state of softmax probabilities, and no
    state kept for frozen rows (the fast mode drops them at its next check: what they would read next is
    never used)."""

    def __init__(self, noise: NoiseSource):
        self.noise = noise

    def sc_soft(self, model, sc: torch.Tensor) -> torch.Tensor:
        return model.soft_embedding(sc)

    def carry_sc(self, old: torch.Tensor, new: torch.Tensor, frozen_B: torch.Tensor) -> torch.Tensor:
        return new

    def passes_per_step(self, keep_logits: bool) -> float:
        return self.noise.passes_per_step


# ---- materialised fp32 logits: the reference mode, and the GPU without the sampler's head mode -----------
class _MaterialisedPass:
    def __init__(self, model, noise: NoiseSource, proc_BCV: torch.Tensor, narrow_BCV: torch.Tensor,
                 keys: RowKeys):
        self.model, self.noise, self.proc, self.narrow = model, noise, proc_BCV, narrow_BCV
        self.argmax_BC, self.entropy_BC = noise.stats(proc_BCV, keys)

    def sample(self, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        return self.noise.sample(self.proc, keep_BC, keys)

    def logits(self) -> torch.Tensor:
        return self.proc

    def argmax_logprob(self) -> torch.Tensor:
        # max - logsumexp from the fused sampler's one pass (no [B, C, V] temporary)
        B, C, V = self.proc.shape
        x_NV = self.proc.view(B * C, V)
        ones = torch.ones(B * C, dtype=torch.float32, device=x_NV.device)
        key = torch.zeros(B * C, dtype=torch.int64, device=x_NV.device)
        _, _, _, m, lse = kernels.fused_sample(x_NV, ones, key, torch.zeros_like(key, dtype=torch.bool))
        return (m - lse).view(B, C)

    def sc_next(self) -> torch.Tensor:
        # fp32 softmax of the embedding-dtype copy, as the reference feeds its next step
        return kernels.softmax(self.narrow, self.model.dtype)

    def kept(self) -> KeptLogits:
        return KeptLogits(self.proc.float())


class MaterialisedHead(_Head):
    """fp32 processed logits (softcap, temperature and their model-dtype copy in one epilogue), statistics
    and samples from the noise source."""

    def run(self, model, h_BCH, temp_B, keys, *, want_sc, keep_logits) -> _MaterialisedPass:
        proc, narrow = model.head(h_BCH, temp_B, narrow=True)
        return _MaterialisedPass(model, self.noise, proc, narrow, keys)


class _ReferencePass(_MaterialisedPass):
    def argmax_logprob(self) -> torch.Tensor:
        # the definition, in torch's own op: log_softmax of the processed logits at the argmax
        return torch.log_softmax(self.proc, dim=-1).gather(-1, self.argmax_BC[..., None])[..., 0]


class ReferenceHead(MaterialisedHead):
    """The reference mode's head: frozen rows keep their self-conditioning input (transformers keeps a
    frozen row's logits), one more pass over the state on steps where some row is frozen; the argmax's
    log-probability by torch.log_softmax."""

    def run(self, model, h_BCH, temp_B, keys, *, want_sc, keep_logits) -> _ReferencePass:
        proc, narrow = model.head(h_BCH, temp_B, narrow=True)
        return _ReferencePass(model, self.noise, proc, narrow, keys)

    def carry_sc(self, old: torch.Tensor, new: torch.Tensor, frozen_B: torch.Tensor) -> torch.Tensor:
        return torch.where(frozen_B[:, None, None], old, new)


# ---- the GPU head mode: statistics, samples and the softmax straight from the raw LM head output ---------
class _FusedPass:
    def __init__(self, model, noise: RowNoise, raw_BCV: torch.Tensor, temp_B: torch.Tensor | None):
        self.model, self.noise, self.raw, self.temp = model, noise, raw_BCV, temp_B
        self.cap = model.config.text.final_logit_softcapping
        B, C, V = raw_BCV.shape
        key = torch.zeros(B * C, dtype=torch.int64, device=raw_BCV.device)
        none = torch.zeros(B * C, dtype=torch.bool, device=raw_BCV.device)
        am, h, _, m, lse = kernels.head_sample(raw_BCV.view(B * C, V), self.cap, temp_B, key, none)
        self.argmax_BC, self.entropy_BC = am.view(B, C), h.view(B, C)
        self._max_BC, self._lse_BC = m.view(B, C), lse.view(B, C)
        self._proc: torch.Tensor | None = None

    def sample(self, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        # the kernel reads only the kept rows of the raw output (the same bits as the materialised path)
        B, C, V = self.raw.shape
        key_N = self.noise.sample_keys(keys, C).to(self.raw.device)
        out = kernels.head_sample(self.raw.view(B * C, V), self.cap, self.temp, key_N, keep_BC.reshape(-1),
                                  sample_only=True)
        return out[2].view(B, C)

    def logits(self) -> torch.Tensor:
        if self._proc is None:  # the epilogue the materialised path runs: the same fp32 logits
            self._proc = kernels.logit_epilogue(self.raw, self.cap, self.temp)[0]
        return self._proc

    def argmax_logprob(self) -> torch.Tensor:
        return self._max_BC - self._lse_BC  # the kernel's statistics of the processed logits

    def sc_next(self) -> torch.Tensor:
        # the softmax head mode: the epilogue's narrow copy, then softmax, without writing either logits
        return kernels.softmax(self.raw, self.model.dtype, cap=self.cap, temperature_R=self.temp)

    def kept(self) -> KeptLogits:
        # raw, processed per row at commit (KeptLogits.row): no fp32 [B, C, V] per step
        return KeptLogits(self.raw, self.temp, self.cap)


class FusedHead(_Head):
    """The GPU step's head mode: the LM head's raw output in the model dtype is all the step writes."""

    noise: RowNoise

    def run(self, model, h_BCH, temp_B, keys, *, want_sc, keep_logits) -> _FusedPass:
        return _FusedPass(model, self.noise, model.head_raw(h_BCH), temp_B)


# ---- the CPU sweep over vocabulary chunks (engine/vocab_head.py) ------------------------------------------
class _SweepPass:
    def __init__(self, model, noise: RowNoise, h_BCH: torch.Tensor, temp_B: torch.Tensor | None,
                 want_sc: bool, keep_logits: bool):
        B, C = h_BCH.shape[:2]
        self.noise, self.shape = noise, (B, C, model.config.text.vocab_size)
        inv_t = 1.0 / temp_B if temp_B is not None else torch.ones(B)
        self.head = ChunkedHead(model, h_BCH.reshape(B * C, -1), inv_t.to(h_BCH.device).repeat_interleave(C))
        self.sweep = self.head.sweep(want_soft=want_sc, keep_full=keep_logits)
        self.argmax_BC = self.sweep.argmax_N.view(B, C)
        self.entropy_BC = self.sweep.entropy_N.view(B, C)

    def sample(self, keep_BC: torch.Tensor, keys: RowKeys) -> torch.Tensor:
        # the same key per position gives u; the head inverts the CDF of the kept positions chunk-wise
        idx, u = self.noise.kept_uniforms(keys, keep_BC)
        out = torch.zeros(keep_BC.numel(), dtype=torch.long, device=keep_BC.device)
        out[idx] = self.head.inverse_cdf(self.sweep, idx, u)
        return out.view(keep_BC.shape)

    def logits(self) -> torch.Tensor:
        if self.sweep.full_NV is None:
            raise ValueError("ChunkedSweepHead: the logits were not kept (run with keep_logits)")
        return self.sweep.full_NV.view(self.shape)

    def argmax_logprob(self) -> torch.Tensor:
        # x at the argmax is the max: log_softmax there is -log sum e^(x - max), the chunk masses' sum
        return (-self.sweep.mass_NJ.sum(dim=-1).log()).float().view(self.shape[:2])

    def sc_next(self) -> torch.Tensor:
        if self.sweep.soft_NH is None:
            raise ValueError("ChunkedSweepHead: no self-conditioning was computed (run with want_sc)")
        return self.sweep.soft_NH.view(*self.shape[:2], -1)

    def kept(self) -> KeptLogits:
        return KeptLogits(self.logits())


class ChunkedSweepHead(_Head):
    """The CPU step's head: one cache-resident sweep for argmax, entropy and the next soft embedding."""

    noise: RowNoise

    def run(self, model, h_BCH, temp_B, keys, *, want_sc, keep_logits) -> _SweepPass:
        return _SweepPass(model, self.noise, h_BCH, temp_B, want_sc, keep_logits)

    def sc_soft(self, model, sc: torch.Tensor) -> torch.Tensor:
        return sc  # the sweep's state is the soft embedding itself

    def passes_per_step(self, keep_logits: bool) -> float:
        return float(keep_logits)  # the sweep writes [B, C, V] only for commit hooks


def fast_head(noise: RowNoise, device: torch.device) -> VocabHead:
    """The fast mode's head on `device`, from the kernels' one dispatch switch (kernels.backend_for): the
    head mode where the fused sampler and its head form both run as kernels (a GPU that passed their
    self-checks, or a test forcing the Triton backend), the materialised logits where only the sampler does,
    else the CPU sweep."""
    probe = torch.empty(0, device=device)
    if kernels.backend_for("fused_sample", probe) != "triton":
        return ChunkedSweepHead(noise)
    if kernels.backend_for("head_sample", probe) == "triton":
        return FusedHead(noise)
    return MaterialisedHead(noise)
