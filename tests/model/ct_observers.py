"""Round-to-nearest qparams for the compressed-tensors test writer (tests/model/ct_writer.py): the weight
qparams llm-compressor's weight calibration computes (its min-max observer, or its MSE observer), the nvfp4
global scales (shared by the layers vLLM fuses), and placeholder static activation qparams, all with
compressed-tensors' own `calculate_qparams` / `generate_gparam` / `fake_quantize`, set on a tree that
`apply_quantization_config` prepared. GPTQ (tests/model/gptq.py) starts from these and replaces the weight
qparams of every linear it has calibration data for. llm-compressor: https://github.com/vllm-project/llm-compressor.

Static activation qparams (fp8_tensor's `input_scale`, nvfp4's `input_global_scale`) need calibration data;
they are computed from a fixed unit-normal sample: their names, shapes and dtypes are the published ones,
their values carry no meaning.

Legend: N output rows, K input columns of a linear's weight w_NK; G columns per scale group.
"""

from __future__ import annotations

import torch
from compressed_tensors.offload import update_offload_parameter
from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from torch import nn

# Layers vLLM fuses into one module (qkv_proj, gate_up_proj): their nvfp4 global scales are shared.
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
CALIBRATION_TOKENS = 64
OBSERVERS = ("minmax", "mse")


def quantized(module: nn.Module) -> bool:
    """Whether `apply_quantization_config` gave this module a weight scheme."""
    scheme = getattr(module, "quantization_scheme", None)
    return scheme is not None and scheme.weights is not None


def _weight_min_max(w_NK: torch.Tensor, args: QuantizationArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of each quantization group, shaped like the package's scale for the strategy
    (min-max observer: tensor -> scalar, channel -> [N, 1], group -> [N, ceil(K/G)])."""
    if args.strategy == QuantizationStrategy.TENSOR:
        return torch.aminmax(w_NK)
    if args.strategy == QuantizationStrategy.CHANNEL:
        return w_NK.amin(dim=-1, keepdim=True), w_NK.amax(dim=-1, keepdim=True)
    if args.strategy in (QuantizationStrategy.GROUP, QuantizationStrategy.TENSOR_GROUP):
        # A partial last group is observed as is (zero padding cannot change a min-max that includes 0);
        # whether such a weight can be compressed is the package's call.
        pad = -w_NK.shape[-1] % args.group_size
        g = torch.nn.functional.pad(w_NK, (0, pad)).unflatten(-1, (-1, args.group_size))
        return g.amin(dim=-1), g.amax(dim=-1)
    raise ValueError(f"weight strategy {args.strategy} is not one of the schemes in PRESETS")


# llm-compressor's MSE observer: shrink each group's min/max by the factor of this grid whose fake-quantized
# weight has the least squared error (a standard round-to-nearest recipe; "minmax" uses factor 1 only).
MSE_GRID = tuple(1 - 0.025 * i for i in range(17))  # 1.0 down to 0.6


def _group_error(err_NK: torch.Tensor, like: torch.Tensor, args: QuantizationArgs) -> torch.Tensor:
    """Squared error summed over each quantization group, shaped like the min/max of `_weight_min_max`."""
    if args.strategy == QuantizationStrategy.TENSOR:
        return err_NK.sum().reshape(like.shape)
    if args.strategy == QuantizationStrategy.CHANNEL:
        return err_NK.sum(dim=-1, keepdim=True)
    pad = -err_NK.shape[-1] % args.group_size
    return torch.nn.functional.pad(err_NK, (0, pad)).unflatten(-1, (-1, args.group_size)).sum(dim=-1)


def observe(w_NK: torch.Tensor, args: QuantizationArgs, observer: str,
             global_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) of a weight: min-max, or the MSE-best shrink of it (fake_quantize is the
    package's own quantize-dequantize)."""
    lo, hi = _weight_min_max(w_NK, args)
    best = None
    for c in MSE_GRID if observer == "mse" else (1.0,):
        scale, zero = calculate_qparams(lo * c, hi * c, args, global_scale=global_scale)
        err = (fake_quantize(w_NK, scale, zero, args, global_scale=global_scale).float() - w_NK.float()) ** 2
        err = _group_error(err, lo, args)
        if best is None:
            best = [err, scale, zero]
            continue
        better = err < best[0]
        best[0] = torch.where(better, err, best[0])
        best[1] = torch.where(better.reshape(scale.shape), scale, best[1])
        best[2] = torch.where(better.reshape(zero.shape), zero, best[2])
    return best[1], best[2]


def _activation_sample(k: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(k)
    return torch.randn(CALIBRATION_TOKENS, k, generator=gen).to(dtype)


@torch.no_grad()
def calibrate(tree: nn.Module, *, fused_global_scales: bool = True, observer: str = "minmax") -> None:
    """Set every quantized module's weight (and static input) qparams the way llm-compressor's weight
    calibration does (its min-max observer, or its MSE observer), with compressed-tensors' own functions."""
    if observer not in OBSERVERS:
        raise ValueError(f"observer: expected one of {OBSERVERS}, got {observer!r}")
    # nvfp4 global scales first: each fused group (q/k/v, gate/up) shares the one of its joint absmax
    for parent in tree.modules():
        kids = {n: m for n, m in parent.named_children() if quantized(m)}
        groups = [tuple(n for n in g if n in kids) for g in FUSED_GROUPS] if fused_global_scales else []
        grouped = {n for g in groups for n in g}
        groups += [(n,) for n in kids if n not in grouped]
        for group in groups:
            mods = [kids[n] for n in group if hasattr(kids[n], "weight_global_scale")]
            if not mods:
                continue
            lo = torch.stack([m.weight.min() for m in mods]).min()
            hi = torch.stack([m.weight.max() for m in mods]).max()
            for m in mods:
                update_offload_parameter(m, "weight_global_scale", generate_gparam(lo, hi))
    for module in tree.modules():
        if not quantized(module):
            continue
        scheme, w_NK = module.quantization_scheme, module.weight
        scale, zero = observe(w_NK, scheme.weights, observer, getattr(module, "weight_global_scale", None))
        update_offload_parameter(module, "weight_scale", scale)
        if hasattr(module, "weight_zero_point"):
            update_offload_parameter(module, "weight_zero_point", zero)
        x = _activation_sample(w_NK.shape[-1], w_NK.dtype)
        if hasattr(module, "input_global_scale"):
            update_offload_parameter(module, "input_global_scale", generate_gparam(x.min(), x.max()))
        if hasattr(module, "input_scale"):
            scale, zero = calculate_qparams(x.min(), x.max(), scheme.input_activations)
            update_offload_parameter(module, "input_scale", scale)
            if hasattr(module, "input_zero_point"):
                update_offload_parameter(module, "input_zero_point", zero)

