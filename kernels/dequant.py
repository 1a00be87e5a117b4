"""Quantized weights: the in-memory layout every quantized kernel reads (`QuantTensor`) and its torch
dequantization, the reference that kernels/quant_linear.py and kernels/quant_moe.py are checked against.

A quantized weight is the logical matrix w [*, N, K] (N output rows, K input columns; a leading expert dim for
MoE weights) stored in one of three schemes, kept in the layout the compressed-tensors checkpoints use so that
loading copies bytes instead of converting them (format: https://github.com/neuralmagic/compressed-tensors):

| scheme | data | scale | extra |
|---|---|---|---|
| "fp8"   | float8_e4m3fn [*, N, K] | [*, N] (per channel; a per-tensor one repeated) | |
| "w4a16" | int32 [*, N, ceil(K/8)] | [*, N, ceil(K/G)] | zero int8 [*, N, ceil(K/G)] or None |
| "nvfp4" | uint8 [*, N, ceil(K/2)] | float8_e4m3fn [*, N, ceil(K/16)] | global_scale fp32 [*, N] |

Dequantized: fp8 w[n, c] = data * scale[n]; w4a16 (q - zero[n, c//G]) * scale[n, c//G];
nvfp4 e2m1 * (scale[n, c//16] / global_scale[n]).
w4a16 packing: column c lives in word c // 8 at bits 4 * (c % 8), stored as q + 8 (q signed int4 in [-8, 7]).
nvfp4 packing: column c lives in byte c // 2, the low nibble for even c; a nibble is sign (bit 3) and an e2m1
magnitude index (bits 0-2) into E2M1_VALUES. The global scale is per row so that a fused gate_up weight whose
gate and up halves were quantized with different global scales stays exact.

Rounding rule (so that our dequantized weights are bit-equal to compressed-tensors' `decompress`): the product
is formed in fp32 and rounded once to the scheme's weight dtype (the scale's dtype for fp8 and w4a16, bf16 for
nvfp4), then cast to the compute dtype. The last group of a row may be partial (K not a multiple of G).

Legend: N output rows, K input columns, G group size (columns per scale), E experts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

SCHEMES = ("fp8", "w4a16", "nvfp4")
NVFP4_GROUP = 16
FP8_MAX = 448.0  # largest finite float8_e4m3fn
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # magnitudes of the 8 e2m1 codes


@dataclass(frozen=True)
class QuantTensor:
    """A quantized weight w [*, N, K] (see the table above). `k` is the logical K, `group` the columns per
    scale entry (K for fp8, G for w4a16, 16 for nvfp4)."""

    scheme: str
    data: torch.Tensor
    scale: torch.Tensor
    k: int
    group: int
    zero: torch.Tensor | None = None
    global_scale: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_quant_tensor(self)

    @property
    def n(self) -> int:
        return self.data.shape[-2]

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical (dequantized) shape [*, N, K]."""
        return (*self.data.shape[:-1], self.k)

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype compressed-tensors' dequantization rounds to (see the rounding rule)."""
        return torch.bfloat16 if self.scheme == "nvfp4" else self.scale.dtype

    def expert(self, e: int) -> QuantTensor:
        """Expert e's [N, K] weight of an [E, N, K] one (views, no copies)."""
        pick = (lambda t: None if t is None else t[e])
        return replace(self, data=self.data[e], scale=self.scale[e], zero=pick(self.zero),
                       global_scale=pick(self.global_scale))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for t in (self.data, self.scale, self.zero, self.global_scale) if t is not None)


def _cols(k: int, per: int) -> int:
    return -(-k // per)


def check_quant_tensor(q: QuantTensor) -> None:
    """Raise ValueError naming the field whose dtype or shape breaks the layout table."""
    if q.scheme not in SCHEMES:
        raise ValueError(f"QuantTensor.scheme: expected one of {SCHEMES}, got {q.scheme!r}")
    lead = q.data.shape[:-1]
    if q.data.dim() < 2 or q.k <= 0 or q.group <= 0:
        raise ValueError(f"QuantTensor: need data [*, N, cols], k > 0, group > 0; got data "
                         f"{list(q.data.shape)}, k={q.k}, group={q.group}")
    want = {
        "fp8": (torch.float8_e4m3fn, q.k, lead, None),
        "w4a16": (torch.int32, _cols(q.k, 8), (*lead, _cols(q.k, q.group)), None),
        "nvfp4": (torch.uint8, _cols(q.k, 2), (*lead, _cols(q.k, NVFP4_GROUP)), torch.float8_e4m3fn),
    }[q.scheme]
    dtype, cols, scale_shape, scale_dtype = want
    if q.data.dtype != dtype or q.data.shape[-1] != cols:
        raise ValueError(f"QuantTensor({q.scheme}).data: expected {dtype} [..., {cols}], got {q.data.dtype} "
                         f"{list(q.data.shape)}")
    if tuple(q.scale.shape) != tuple(scale_shape):
        raise ValueError(f"QuantTensor({q.scheme}).scale: expected shape {list(scale_shape)}, got "
                         f"{list(q.scale.shape)}")
    if scale_dtype is not None and q.scale.dtype != scale_dtype:
        raise ValueError(f"QuantTensor({q.scheme}).scale: expected {scale_dtype}, got {q.scale.dtype}")
    if scale_dtype is None and not q.scale.is_floating_point():
        raise ValueError(f"QuantTensor({q.scheme}).scale: expected a float dtype, got {q.scale.dtype}")
    if q.scheme == "fp8" and q.group != q.k:
        raise ValueError(f"QuantTensor(fp8).group: per-channel scales cover all {q.k} columns, got {q.group}")
    if q.scheme == "nvfp4" and q.group != NVFP4_GROUP:
        raise ValueError(f"QuantTensor(nvfp4).group: expected {NVFP4_GROUP}, got {q.group}")
    if q.zero is not None and (q.scheme != "w4a16" or q.zero.dtype != torch.int8
                               or q.zero.shape != q.scale.shape):
        raise ValueError(f"QuantTensor({q.scheme}).zero: only w4a16 has zero points, int8 shaped like scale; "
                         f"got {q.zero.dtype} {list(q.zero.shape)}")
    if q.scheme == "nvfp4":
        gs = q.global_scale
        if gs is None or gs.dtype != torch.float32 or tuple(gs.shape) != tuple(lead):
            got = None if gs is None else f"{gs.dtype} {list(gs.shape)}"
            raise ValueError(f"QuantTensor(nvfp4).global_scale: expected float32 {list(lead)}, got {got}")
    elif q.global_scale is not None:
        raise ValueError(f"QuantTensor({q.scheme}).global_scale: only nvfp4 has a global scale")


# ---- unpacking (torch, any leading dims) ----------------------------------------------------------------
def unpack_int4(data: torch.Tensor, k: int) -> torch.Tensor:
    """int32 [..., ceil(K/8)] -> signed int4 values as int8 [..., K]."""
    shifts = torch.arange(0, 32, 4, device=data.device, dtype=torch.int32)
    nib = (data.unsqueeze(-1) >> shifts) & 0xF  # [..., words, 8]
    return (nib.flatten(-2)[..., :k] - 8).to(torch.int8)


def unpack_e2m1(data: torch.Tensor, k: int) -> torch.Tensor:
    """uint8 [..., ceil(K/2)] -> e2m1 values as float32 [..., K] (exact)."""
    codes = torch.stack((data & 0xF, data >> 4), dim=-1).flatten(-2)[..., :k].long()
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=data.device)
    mag = table[codes & 0x7]
    return torch.where(codes >= 8, -mag, mag)


def _per_column(t: torch.Tensor, group: int, k: int) -> torch.Tensor:
    """[..., ceil(K/G)] -> [..., K]: each scale entry repeated over its group's columns."""
    return t.repeat_interleave(group, dim=-1)[..., :k]


def dequantize(q: QuantTensor, dtype: torch.dtype) -> torch.Tensor:
    """The dense weight w [*, N, K] in `dtype` (rounding rule in the module docstring)."""
    if q.scheme == "fp8":
        w = q.data.float() * q.scale.float().unsqueeze(-1)
    elif q.scheme == "w4a16":
        v = unpack_int4(q.data, q.k).float()
        if q.zero is not None:
            v = v - _per_column(q.zero, q.group, q.k).float()
        w = v * _per_column(q.scale, q.group, q.k).float()
    else:
        s = q.scale.float() / q.global_scale.unsqueeze(-1)
        w = unpack_e2m1(q.data, q.k) * _per_column(s, NVFP4_GROUP, q.k)
    return w.to(q.weight_dtype).to(dtype)
