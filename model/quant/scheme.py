"""Which quantization scheme applies to which weight: parsing a checkpoint's compressed-tensors
`quantization_config`, and the schemes a user may ask for when quantizing a bf16 checkpoint on load.

Supported (anything else is refused at load, naming the group, field and value):
- "fp8": float8_e4m3 weights, one scale per output channel or per tensor (compressed-tensors
  `float-quantized`, llm-compressor's FP8 / FP8_DYNAMIC); input activations none, or fp8 dynamic per token
  or static per tensor.
- "w4a16": int4 weights packed eight per int32, scales per group of G columns or per channel, symmetric or
  with zero points (`pack-quantized`, W4A16 / W4A16_ASYM); activations unquantized.
- "nvfp4": e2m1 weights packed two per byte, fp8 e4m3 scales per 16 columns and an fp32 global scale
  (`nvfp4-pack-quantized`, NVFP4 / NVFP4A16); activations none or fp4 per 16 with a global scale.
How activations run: our kernels dequantize weights inside the GEMM and multiply with bf16 activations on
every card (weight-only execution). A W8A8 or W4A4 checkpoint is therefore run with unquantized activations:
the same weights, slightly more accurate, without FP8/FP4 tensor-core activations (a later kernel can add
them).

Matching follows compressed-tensors: a group's `targets` and the `ignore` list hold module names, class names
("Linear") or "re:"-prefixed regular expressions matched against the full module name; `ignore` wins.
Format reference: https://github.com/neuralmagic/compressed-tensors (quantization/quant_config.py,
quant_scheme.py, quant_args.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ON_LOAD = ("fp8", "w4a16")  # what `model.quantization` / `--quantization` can produce from a bf16 checkpoint
DEFAULT_GROUP = 128


@dataclass(frozen=True)
class QuantScheme:
    """How one weight is stored. group_size: columns per scale (w4a16: G, or None for per channel; nvfp4: 16;
    fp8: None). symmetric: False only for w4a16 with zero points."""

    name: str
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.name not in ("fp8", "w4a16", "nvfp4"):
            raise ValueError(f"quantization scheme: expected fp8, w4a16 or nvfp4, got {self.name!r}")
        if self.name == "nvfp4" and self.group_size != 16:
            raise ValueError(f"nvfp4: group size must be 16, got {self.group_size}")
        if self.name == "fp8" and self.group_size is not None:
            raise ValueError("fp8: only per-channel or per-tensor scales are supported (no groups or blocks)")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size <= 0):
            raise ValueError(f"{self.name}: group size must be a positive int, got {self.group_size!r}")
        if not self.symmetric and self.name != "w4a16":
            raise ValueError(f"{self.name}: only symmetric weights are supported")

    @classmethod
    def on_load(cls, name: str, group_size: int = DEFAULT_GROUP) -> QuantScheme:
        """The scheme `model.quantization: fp8 | w4a16` produces from a bf16 checkpoint."""
        if name not in ON_LOAD:
            raise ValueError(f"model.quantization: expected one of {ON_LOAD} (quantize on load), got "
                             f"{name!r}; nvfp4 is loaded from an NVFP4 checkpoint, not produced on load")
        return cls(name, group_size if name == "w4a16" else None)


def _args_scheme(w: dict, a: dict | None, where: str) -> QuantScheme:
    """Scheme from one config group's `weights` and `input_activations` objects."""
    kind, bits = w.get("type"), w.get("num_bits")
    strategy, group = w.get("strategy"), w.get("group_size")
    symmetric = w.get("symmetric", True)
    if w.get("dynamic") not in (None, False):
        raise ValueError(f"{where}.weights.dynamic: weights must be quantized ahead of time")
    if kind == "float" and bits == 8:
        if strategy not in ("channel", "tensor"):
            raise ValueError(f"{where}.weights.strategy: fp8 with {strategy!r} scales is not supported "
                             "(per channel or per tensor only)")
        scheme = QuantScheme("fp8", None, bool(symmetric))
    elif kind == "int" and bits == 4:
        if strategy not in ("group", "channel"):
            raise ValueError(f"{where}.weights.strategy: int4 with {strategy!r} scales is not supported")
        scheme = QuantScheme("w4a16", group if strategy == "group" else None, bool(symmetric))
    elif kind == "float" and bits == 4:
        if strategy != "tensor_group" or group != 16:
            raise ValueError(f"{where}.weights: fp4 with strategy {strategy!r} and group {group!r} is not "
                             "NVFP4 (tensor_group, 16); MXFP4 is not supported")
        scheme = QuantScheme("nvfp4", 16, bool(symmetric))
    else:
        raise ValueError(f"{where}.weights: {kind} {bits}-bit weights are not supported; supported: fp8 "
                         "(W8A8-FP8), int4 (W4A16), fp4 (NVFP4)")
    if a is not None:
        ok = (a.get("type") == "float" and a.get("num_bits") == 8 and scheme.name == "fp8") or (
            a.get("type") == "float" and a.get("num_bits") == 4 and scheme.name == "nvfp4")
        if not ok:
            raise ValueError(f"{where}.input_activations: {a.get('type')} {a.get('num_bits')}-bit "
                             f"activations with {scheme.name} weights are not supported")
    return scheme


@dataclass(frozen=True)
class CheckpointQuant:
    """A parsed compressed-tensors `quantization_config`: (targets, scheme) per group, and the ignore list."""

    groups: tuple[tuple[tuple[str, ...], QuantScheme], ...]
    ignore: tuple[str, ...]

    @classmethod
    def parse(cls, qc: Any, where: str = "config.json") -> CheckpointQuant:
        base = f"{where}: quantization_config"
        if not isinstance(qc, dict):
            raise ValueError(f"{base}: expected an object")
        method = qc.get("quant_method")
        if method != "compressed-tensors":
            raise ValueError(f"{base}.quant_method: {method!r} checkpoints are not supported; load the "
                             "compressed-tensors build (FP8, W4A16 or NVFP4) or a bf16 checkpoint")
        if qc.get("kv_cache_scheme"):
            raise ValueError(f"{base}.kv_cache_scheme: a quantized KV cache is not supported")
        status = qc.get("quantization_status", "compressed")
        if status != "compressed":
            raise ValueError(f"{base}.quantization_status: expected 'compressed', got {status!r}")
        groups_in = qc.get("config_groups")
        if not isinstance(groups_in, dict) or not groups_in:
            raise ValueError(f"{base}.config_groups: missing or empty")
        groups = []
        for name, g in groups_in.items():
            gw = f"{base}.config_groups.{name}"
            if not isinstance(g, dict) or not isinstance(g.get("weights"), dict):
                raise ValueError(f"{gw}.weights: missing (activation-only quantization is not supported)")
            if g.get("output_activations"):
                raise ValueError(f"{gw}.output_activations: quantized outputs are not supported")
            targets = g.get("targets")
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets) or not targets:
                raise ValueError(f"{gw}.targets: expected a non-empty list of strings")
            groups.append((tuple(targets), _args_scheme(g["weights"], g.get("input_activations"), gw)))
        ignore = qc.get("ignore") or []
        if not isinstance(ignore, list) or not all(isinstance(t, str) for t in ignore):
            raise ValueError(f"{base}.ignore: expected a list of strings")
        for pattern in [t for g in groups for t in g[0]] + list(ignore):
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as e:
                    raise ValueError(f"{base}: bad regular expression {pattern!r} ({e})") from None
        return cls(tuple(groups), tuple(ignore))

    def scheme_for(self, module: str, cls_name: str = "Linear") -> QuantScheme | None:
        """The scheme of the module with this full name (None: stored unquantized)."""
        if any(_matches(p, module, cls_name) for p in self.ignore):
            return None
        for targets, scheme in self.groups:
            if any(_matches(p, module, cls_name) for p in targets):
                return scheme
        return None


def _matches(pattern: str, module: str, cls_name: str) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], module) is not None
    return pattern in (module, cls_name) or module.endswith("." + pattern)


def checkpoint_scheme(config: dict) -> tuple[str, int | None] | None:
    """(scheme name, group size) of a config.json's quantization_config for the experts, which hold 90% of
    the weights (None: no quantization_config). Raises ValueError on a config we cannot load."""
    qc = config.get("quantization_config")
    if qc is None:
        return None
    parsed = CheckpointQuant.parse(qc)
    scheme = parsed.scheme_for("model.decoder.layers.0.experts.0.gate_proj")
    if scheme is None:  # experts left in bf16: report what the dense linears use
        scheme = parsed.scheme_for("model.decoder.layers.0.self_attn.q_proj")
    return None if scheme is None else (scheme.name, scheme.group_size)
