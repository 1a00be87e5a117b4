"""Quantize on load: turn one bf16 weight [*, N, K] into a kernels/dequant.py `QuantTensor`, tensor by tensor
as the checkpoint is read, so peak host memory stays near the quantized size plus the largest single tensor
(one layer's fused experts). For users who only have the bf16 checkpoint: `model.quantization: fp8 | w4a16`.

Round-to-nearest, no calibration data (llm-compressor's FP8_DYNAMIC recipe, and its W4A16 with the MSE
observer, without GPTQ):
- fp8: scale[n] = max|w[n, :]| / 448 (fp32), q = w / scale rounded to float8_e4m3fn (saturating at 448).
- w4a16: per row and group of G columns, symmetric over the int4 range [-8, 7]: scale = c * max|w| / 7.5 in
  bf16, q = round(w / scale) clamped, where c is the clip factor of CLIP_GRID with the least squared error
  for that group (clipping a few outliers buys a finer step for the rest: on the shipped small model, plain
  max|w| scaling lost 7 points of extraction accuracy, bench/RESULTS.md). Packed eight per int32.
A row or group of zeros gets scale 1 (q = 0), so dequantization stays exact there. The search runs on the
tensor's device in row chunks, so its temporaries stay a few times CHUNK elements.
"""

from __future__ import annotations

import torch

from kernels.dequant import FP8_MAX, QuantTensor
from model.quant.scheme import QuantScheme


def _safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantize_fp8(w: torch.Tensor) -> QuantTensor:
    """w [*, N, K] float -> fp8 per-channel QuantTensor."""
    w32 = w.float()
    scale = _safe(w32.abs().amax(dim=-1) / FP8_MAX)
    q = (w32 / scale.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return QuantTensor("fp8", q, scale, k=w.shape[-1], group=w.shape[-1])


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Signed int4 values [..., K] (any int dtype) -> int32 [..., ceil(K/8)] in the layout of
    kernels/dequant.py (column c at bits 4 * (c % 8) of word c // 8, stored as q + 8)."""
    k = q.shape[-1]
    pad = (-k) % 8
    u = (q.to(torch.int32) + 8)
    if pad:
        u = torch.nn.functional.pad(u, (0, pad), value=8)
    u = u.view(*q.shape[:-1], -1, 8)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=q.device)
    return _pack_words(u, shifts)


def _pack_words(u: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    # disjoint nibbles: their sum is their OR, exact in int64 (< 2^32); then wrap into int32's sign bit
    words = (u.to(torch.int64) << shifts.to(torch.int64)).sum(dim=-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


CLIP_GRID = tuple(1 - 0.025 * i for i in range(11))  # 1.0 down to 0.75
CHUNK = 1 << 22  # elements per search chunk


def _w4_groups(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Groups g [R, n_groups, G] fp32 -> (q int8, scale bf16 [R, n_groups]) with the MSE-best clip."""
    amax = g.abs().amax(dim=-1)
    best_err = best_scale = None
    for c in CLIP_GRID:
        scale = _safe(amax * c / 7.5).to(torch.bfloat16)
        s = scale.float().unsqueeze(-1)
        # the error of the weight as kernels/dequant.py rebuilds it: the product rounded to the scale's bf16
        err = (((torch.round(g / s).clamp(-8, 7) * s).to(torch.bfloat16).float() - g) ** 2).sum(dim=-1)
        if best_err is None:
            best_err, best_scale = err, scale
        else:
            better = err < best_err
            best_err, best_scale = torch.where(better, err, best_err), torch.where(better, scale, best_scale)
    q = torch.round(g / best_scale.float().unsqueeze(-1)).clamp(-8, 7).to(torch.int8)
    return q, best_scale


def quantize_w4a16(w: torch.Tensor, group: int) -> QuantTensor:
    """w [*, N, K] float -> symmetric int4 QuantTensor with bf16 scales per `group` columns (last group may be
    partial)."""
    k = w.shape[-1]
    n_groups = -(-k // group)
    rows = w.reshape(-1, k)
    step = max(1, CHUNK // (n_groups * group))
    qs, scales = [], []
    for r0 in range(0, rows.shape[0], step):
        g = torch.nn.functional.pad(rows[r0:r0 + step].float(), (0, n_groups * group - k))
        q, scale = _w4_groups(g.view(-1, n_groups, group))
        qs.append(pack_int4(q.view(q.shape[0], -1)[:, :k]))
        scales.append(scale)
    lead = w.shape[:-1]
    return QuantTensor("w4a16", torch.cat(qs).view(*lead, -1), torch.cat(scales).view(*lead, n_groups),
                       k=k, group=group)


def quantize(w: torch.Tensor, scheme: QuantScheme) -> QuantTensor:
    """One weight [*, N, K] quantized with an on-load scheme (fp8 or w4a16)."""
    if scheme.name == "fp8":
        return quantize_fp8(w)
    if scheme.name == "w4a16":
        return quantize_w4a16(w, scheme.group_size or w.shape[-1])
    raise ValueError(f"quantize on load: {scheme.name} is not produced on load (load an {scheme.name} "
                     "checkpoint)")
