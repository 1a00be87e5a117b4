"""The fast mode's vocabulary pass on the CPU: LM head, softcap, temperature, argmax, entropy and the next
step's self-conditioning embedding in one sweep over vocabulary chunks, never holding a [N, V] tensor.

Owns: `ChunkedHead` (the sweep, and the processed logits of selected positions for sampling), the math
behind engine/heads.py ChunkedSweepHead, the fast mode's head on a CPU.

Why: with the real vocabulary (V = 262,144) a [N, V] fp32 tensor lives in DRAM, and the unfused step makes
about ten memory-bound passes over it (LM head write, softcap divide/tanh/multiply, temperature, max,
softmax, sum p*x, and the next step's self-conditioning softmax and GEMM). Here each [N, Vc] chunk comes out
of the LM head GEMM and is consumed while it is still in cache, with an online (flash-style) softmax:
    x   = tanh(z / cap) * (cap / T)         softcap and temperature: one tanh, one multiply (1/cap is
                                            folded into the fp32 hidden state before the GEMM)
    m   = max x,  S = sum e^(x-m),  Q = sum e^(x-m) (x-m),  acc = sum e^(x-m) E_v
    entropy = log S - Q / S
    soft    = acc / S * sqrt(H)  = softmax(x) @ E * sqrt(H): the next step's self-conditioning input, which
                                   the decoder would otherwise rebuild from [N, V] logits (softmax + GEMM).
When a chunk raises a row's running max by d >= 0 the old sums are rescaled: S <- S e^-d,
Q <- e^-d (Q - d S), acc <- acc e^-d.
argmax: torch.argmax costs about ten times torch.amax on the CPU, so a chunk only takes the argmax of the
rows whose max it raises (about ln(#chunks) chunks per row); ties keep the lowest index, like torch.argmax.
The math is the reference's up to fp32 rounding (multiply by 1/T instead of dividing by T, summation order);
every quantity is a function of its own row, so batch composition does not change a row's results beyond
the GEMM's own rounding.

Legend: N canvas positions (rows x C), V vocabulary, Vc vocabulary chunk, H hidden, K selected positions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

# 4096 columns x 128 positions x 4 bytes = 2 MiB per buffer: cache-resident on the development box
# (1-2 MiB L2 per core, large shared L3); measured 2-3x faster than 1024 and no worse than 8192.
DEFAULT_CHUNK = 4096
MAX_ROWS = 512  # positions per sweep block: buffers of at most MAX_ROWS x chunk fp32 (8 MiB)


@dataclass
class SweepResult:
    argmax_N: torch.Tensor  # long
    entropy_N: torch.Tensor  # fp32, entropy of softmax(x) in nats
    max_N: torch.Tensor  # fp32, max x (the sampler's shift for exp)
    soft_NH: torch.Tensor | None  # softmax(x) @ E * sqrt(H) in the model dtype (None: not requested)
    full_NV: torch.Tensor | None  # the processed logits x (fp32), only when requested (commit hooks)
    mass_NJ: torch.Tensor  # fp64, sum of e^(x - max_N) per vocabulary chunk: the coarse CDF for sampling


_FIELDS = tuple(f.name for f in fields(SweepResult))


class ChunkedHead:
    """The processed logits x = softcap(LM head(norm(h))) / T of N positions, produced chunk by chunk.
    Inference only (no autograd: the chunks are written in place)."""

    def __init__(self, model, h_NH: torch.Tensor, inv_temp_N: torch.Tensor, chunk: int = DEFAULT_CHUNK):
        if chunk < 1:
            raise ValueError(f"ChunkedHead: chunk must be >= 1, got {chunk}")
        self.W_VH = model.embed_tokens.weight  # tied LM head / embedding
        self.V = self.W_VH.shape[0]
        self.cap = float(model.text.final_logit_softcapping)
        self.scale = model._scale().float()  # sqrt(H) rounded to the weight dtype, as the reference
        self.chunk = chunk
        with torch.no_grad():
            hn = model.norm(h_NH)
        # Folding 1/cap into the hidden state saves a pass; only in fp32, where it costs one rounding.
        self.fold = hn.dtype == torch.float32 and self.W_VH.dtype == torch.float32
        self.hn_NH = hn * (1.0 / self.cap) if self.fold else hn
        self.mul_N1 = (self.cap * inv_temp_N.to(torch.float32))[:, None]

    def _proc(self, hn: torch.Tensor, mul: torch.Tensor, a: int, b: int, out: torch.Tensor) -> torch.Tensor:
        """x for vocabulary columns [a, b) of the given positions, written into `out` [n, b-a] fp32."""
        W = self.W_VH[a:b]
        if self.fold:
            torch.mm(hn, W.t(), out=out)
        else:
            out.copy_(F.linear(hn, W)).mul_(1.0 / self.cap)
        return out.tanh_().mul_(mul)

    @torch.no_grad()
    def sweep(self, *, want_soft: bool = True, keep_full: bool = False) -> SweepResult:
        """One pass over the vocabulary for all positions (see the module doc), in blocks of at most
        MAX_ROWS positions so that the chunk buffers stay small however large the batch."""
        N = self.hn_NH.shape[0]
        parts = [
            self._sweep_rows(r, min(N, r + MAX_ROWS), want_soft, keep_full)
            for r in range(0, max(N, 1), MAX_ROWS)
        ]
        if len(parts) == 1:
            return parts[0]
        return SweepResult(
            *(
                None if getattr(parts[0], f) is None else torch.cat([getattr(p, f) for p in parts])
                for f in _FIELDS
            )
        )

    def _sweep_rows(self, r0: int, r1: int, want_soft: bool, keep_full: bool) -> SweepResult:
        hn, mul = self.hn_NH[r0:r1], self.mul_N1[r0:r1]
        N, V, Vc = hn.shape[0], self.V, self.chunk
        dev = hn.device
        f32 = torch.float32
        z_buf = torch.empty(N, min(Vc, V), dtype=f32, device=dev)
        e_buf = torch.empty_like(z_buf)
        full = torch.empty(N, V, dtype=f32, device=dev) if keep_full else None
        acc = torch.zeros(N, self.W_VH.shape[1], dtype=f32, device=dev) if want_soft else None
        m = S = Q = am = None
        sums, maxes = [], []  # per chunk: sum of e^(x - running max), and that running max
        for a in range(0, V, Vc):
            b = min(V, a + Vc)
            n = b - a
            z = z_buf if n == z_buf.shape[1] else torch.empty(N, n, dtype=f32, device=dev)
            e = e_buf if n == e_buf.shape[1] else torch.empty(N, n, dtype=f32, device=dev)
            x = self._proc(hn, mul, a, b, z)
            if full is not None:
                full[:, a:b] = x
            cm = x.amax(dim=-1)
            if m is None:
                m, am = cm, x.argmax(dim=-1)
                S = torch.zeros(N, dtype=f32, device=dev)
                Q = torch.zeros(N, dtype=f32, device=dev)
            else:
                up = (cm > m).nonzero().squeeze(1)  # rows whose max this chunk raises (CPU: no sync)
                am.index_copy_(0, up, x.index_select(0, up).argmax(dim=-1) + a)
                m_new = torch.maximum(m, cm)
                d = m_new - m
                alpha = torch.exp(-d)
                Q = alpha * (Q - d * S)
                S = alpha * S
                if acc is not None:
                    acc.mul_(alpha[:, None])
                m = m_new
            x.sub_(m[:, None])  # x - m <= 0
            torch.exp(x, out=e)
            if acc is not None:
                W = self.W_VH[a:b]
                if W.dtype == f32:
                    acc.addmm_(e, W)
                else:  # low-precision weights: the GEMM in the weight dtype, as the reference's probs @ E
                    acc.add_(torch.mm(e.to(W.dtype), W).float())
            s_chunk = e.sum(dim=-1)
            sums.append(s_chunk)
            maxes.append(m)
            S += s_chunk
            Q += e.mul_(x).sum(dim=-1)
        entropy = S.log() - Q / S
        soft = None
        if acc is not None:
            soft = (acc / S[:, None] * self.scale).to(self.W_VH.dtype)
        f64 = torch.float64
        mass = torch.stack(sums, 1).to(f64) * torch.exp(torch.stack(maxes, 1).to(f64) - m.to(f64)[:, None])
        return SweepResult(am, entropy, m, soft, full, mass)

    @torch.no_grad()
    def inverse_cdf(self, sweep: SweepResult, idx_K: torch.Tensor, u_K: torch.Tensor) -> torch.Tensor:
        """One draw from softmax(x) for each position idx_K at uniform u_K in [0, 1) -> token ids [K].

        Two levels, both exact inversions of the CDF: the sweep's per-chunk masses pick the chunk, then that
        one chunk's logits are recomputed for the row and its CDF (fp64) is inverted. Work per draw: one
        chunk, not the vocabulary.
        """
        K, Vc = idx_K.shape[0], self.chunk
        dev = idx_K.device
        if K == 0:
            return torch.zeros(0, dtype=torch.long, device=dev)
        cum_KJ = sweep.mass_NJ.index_select(0, idx_K).cumsum(dim=-1)
        target = u_K.to(torch.float64) * cum_KJ[:, -1]
        j_K = (
            torch.searchsorted(cum_KJ, target[:, None], right=True).squeeze(1).clamp_(max=cum_KJ.shape[1] - 1)
        )
        before = torch.where(j_K > 0, cum_KJ.gather(1, (j_K - 1).clamp(min=0)[:, None]).squeeze(1), 0.0)
        rest = target - before
        m_K = sweep.max_N.index_select(0, idx_K)
        out = torch.empty(K, dtype=torch.long, device=dev)
        for j in j_K.unique().tolist():  # at most #chunks small GEMMs (CPU path: no device to stall)
            sel = (j_K == j).nonzero().squeeze(1)
            a, b = j * Vc, min(self.V, (j + 1) * Vc)
            pos = idx_K.index_select(0, sel)
            x = torch.empty(sel.shape[0], b - a, dtype=torch.float32, device=dev)
            x = self._proc(self.hn_NH.index_select(0, pos), self.mul_N1.index_select(0, pos), a, b, x)
            cdf = x.sub_(m_K.index_select(0, sel)[:, None]).exp_().to(torch.float64).cumsum(dim=-1)
            t = torch.searchsorted(cdf, rest.index_select(0, sel)[:, None], right=True).squeeze(1)
            out[sel] = a + t.clamp_(max=b - a - 1)
        return out

    @torch.no_grad()
    def rows(self, idx_K: torch.Tensor) -> torch.Tensor:
        """The processed logits x of positions idx_K -> [K, V] fp32 (for sampling only the kept positions)."""
        hn = self.hn_NH.index_select(0, idx_K)
        out = torch.empty(hn.shape[0], self.V, dtype=torch.float32, device=hn.device)
        return self._proc(hn, self.mul_N1.index_select(0, idx_K), 0, self.V, out)
