"""GPTQ weight calibration for the compressed-tensors test writer (tests/model/ct_writer.py).

GPTQ (Frantar et al. 2022, https://arxiv.org/abs/2210.17323) quantizes a linear's weight one input column at a
time and spreads each column's rounding error over the columns not yet quantized, weighted by the inverse of
H = X^T X (X: the layer's calibration inputs), so that X W^T moves as little as possible, not W itself. The
defaults are those of llm-compressor's GPTQModifier (https://github.com/vllm-project/llm-compressor): lazy
updates in blocks of 128 columns, dampening 0.01 of mean(diag H), and group qparams computed when GPTQ reaches
the group, on the weights as updated so far. With act_order the columns go by decreasing diag(H); the group
qparams are then computed up front from the original weight (llm-compressor's "weight" activation order),
since a checkpoint without g_idx keeps the groups in column order.

The grid is the package's own: each column is rounded with compressed-tensors' `fake_quantize`, each group's
qparams come from the writer's observer (tests/model/ct_observers.py) with the module's nvfp4 global scale.
GPTQ's output is the dequantized weight, in the module's dtype, exactly as the checkpoint will hold it; the
package's round-to-nearest with the returned qparams maps it back to GPTQ's integers (checked here: it is a
fixed point of `fake_quantize`), so `ModelCompressor.compress_model` does all the packing.
H comes from tests/model/gptq_hessians.py.

Legend: N output rows, K input columns of w_NK; G columns per group; H_KK the input Gram matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressed_tensors.offload import update_offload_parameter
from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from ct_observers import OBSERVERS, observe, quantized
from torch import nn

GROUPED = (QuantizationStrategy.GROUP, QuantizationStrategy.TENSOR_GROUP)


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ's knobs (llm-compressor's defaults)."""

    block: int = 128  # columns per lazy-update block (a multiple of the group size)
    dampening: float = 0.01  # added to diag(H), as a fraction of its mean: keeps H invertible
    act_order: bool = False  # columns by decreasing diag(H); group qparams then from the original weight
    static_groups: bool = False  # group qparams from the original weight even in column order
    observer: str = "minmax"  # how a group's qparams come from its weights (ct_observers.OBSERVERS)

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ValueError(f"block: expected >= 1, got {self.block}")
        if not 0 < self.dampening < 1:
            raise ValueError(f"dampening: expected in (0, 1), got {self.dampening}")
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer: expected one of {OBSERVERS}, got {self.observer!r}")


def _inverse_cholesky(H_KK: torch.Tensor, dampening: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1 in fp64: row i, from column i on, is how column i's error is
    spread over the columns after it (the OBS update, in the paper's Cholesky form)."""
    H = H_KK.double().clone()
    H.diagonal().add_(dampening * H.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)


def _column_args(args: QuantizationArgs) -> QuantizationArgs:
    """The args that round one column [N, 1] with its group's qparams [N, 1]: a group seen one column at a
    time is a per-row (channel) quantization with the same grid."""
    if args.strategy not in GROUPED:
        return args
    return args.model_copy(update={"strategy": QuantizationStrategy.CHANNEL, "group_size": None})


@torch.no_grad()
def gptq_quantize(
    w_NK: torch.Tensor,
    H_KK: torch.Tensor,
    args: QuantizationArgs,
    cfg: GPTQConfig = GPTQConfig(),
    global_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ of one weight on the grid of `args` -> (wq_NK, scale, zero point): wq_NK is the dequantized
    weight in w_NK's dtype, scale and zero point are shaped and typed as the package's weight qparams
    (group strategies: [N, K/G]). A column whose input is always zero (diag(H) = 0) is rounded to nearest."""
    N, K = w_NK.shape
    dtype = w_NK.dtype
    if H_KK.shape != (K, K):
        raise ValueError(f"H: expected [{K}, {K}] for a weight [{N}, {K}], got {list(H_KK.shape)}")
    G = args.group_size if args.strategy in GROUPED else None
    if G is not None and (K % G or cfg.block % G):
        raise ValueError(f"group {G}: must divide both K={K} and the block {cfg.block}")
    # qparams up front (the observer on the original weight); groups GPTQ reaches in column order are redone
    scale, zero = observe(w_NK, args, cfg.observer, global_scale)
    scale, zero = scale.clone(), zero.clone()
    dynamic = G is not None and not (cfg.act_order or cfg.static_groups)
    H = H_KK.double().clone()
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1.0  # no error spread from or onto a column that never sees an input
    perm = torch.argsort(H.diagonal(), descending=True) if cfg.act_order else torch.arange(K)
    W = w_NK.float()[:, perm].clone()
    Hinv = _inverse_cholesky(H[perm][:, perm], cfg.dampening).float()
    col_args = _column_args(args)
    Q = torch.zeros_like(W)
    for i1 in range(0, K, cfg.block):
        i2 = min(i1 + cfg.block, K)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros(N, i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])  # the column's index in the weight (and so its group)
            if dynamic and col % G == 0:  # the group starts here: its qparams from the updated weights
                s, z = observe(W1[:, i:i + G].to(dtype), args, cfg.observer, global_scale)
                scale[:, col // G], zero[:, col // G] = s[:, 0], z[:, 0]
            g = slice(col // G, col // G + 1) if G is not None else slice(None)
            s, z = (scale[:, g], zero[:, g]) if scale.dim() == 2 else (scale, zero)
            q = fake_quantize(W1[:, i:i + 1], s, z, col_args, global_scale=global_scale).to(dtype).float()
            Q[:, i1 + i] = q[:, 0]
            err = (W1[:, i] - q[:, 0]) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # the block's errors reach the later columns at once
    wq_NK = Q[:, torch.argsort(perm)].to(dtype)
    again = fake_quantize(wq_NK, scale, zero, args, global_scale=global_scale)
    if not torch.equal(again, wq_NK):
        bad = (again != wq_NK).sum().item()
        raise RuntimeError(f"GPTQ weight [{N}, {K}] is off the grid of its qparams at {bad} entries")
    return wq_NK, scale, zero


def layer_error(x_TK: torch.Tensor, w_NK: torch.Tensor, wq_NK: torch.Tensor) -> float:
    """||X W^T - X Wq^T||_F in fp64: what GPTQ minimises (on its calibration inputs)."""
    return torch.linalg.matrix_norm(x_TK.double() @ (w_NK.double() - wq_NK.double()).T).item()


@torch.no_grad()
def apply_gptq(tree: nn.Module, hessians: dict[str, torch.Tensor],
               cfg: GPTQConfig = GPTQConfig()) -> list[str]:
    """GPTQ every quantized module of the writer's tree that has a Hessian (keyed by checkpoint module name):
    its weight becomes GPTQ's dequantized weight and its weight qparams GPTQ's. Modules without one (an
    expert the router sent no calibration token) keep the qparams `ct_observers.calibrate` set, which must
    have run first (it also sets the nvfp4 global scales GPTQ rounds with). -> names of those modules."""
    names = {n for n, m in tree.named_modules() if quantized(m)}
    unknown = sorted(hessians.keys() - names)
    if unknown:
        raise ValueError(f"Hessians for modules the tree does not quantize: {unknown[:5]}")
    fallback = []
    for name, module in tree.named_modules():
        if name not in names:
            continue
        H = hessians.get(name)
        if H is None or not H.diagonal().any():
            fallback.append(name)
            continue
        gs = getattr(module, "weight_global_scale", None)
        wq, scale, zero = gptq_quantize(module.weight, H, module.quantization_scheme.weights, cfg, gs)
        update_offload_parameter(module, "weight", wq)
        update_offload_parameter(module, "weight_scale", scale)
        if hasattr(module, "weight_zero_point"):
            update_offload_parameter(module, "weight_zero_point", zero)
    return fallback
