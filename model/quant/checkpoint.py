"""Loading quantized DiffusionGemma: compressed-tensors checkpoints (FP8, W4A16, NVFP4) and bf16 checkpoints
quantized on load. Called by model/weights.py `load_pretrained`, which owns the file reading.

Key map of a compressed-tensors checkpoint (what llm-compressor writes and vLLM's gemma4 loader reads, see
https://github.com/vllm-project/vllm/blob/main/vllm/model_executor/models/gemma4.py `load_weights`):
- unquantized tensors keep their bf16 names (model/weights.py `checkpoint_layout`): embeddings, norms,
  scalars, the router, and anything the config's `ignore` list names;
- a quantized linear `M` (e.g. `model.decoder.layers.3.self_attn.q_proj`) holds, by scheme:
    fp8:   M.weight F8_E4M3 [N, K], M.weight_scale [N, 1] (per channel) or [1] (per tensor)[, M.input_scale]
    w4a16: M.weight_packed I32 [N, ceil(K/8)], M.weight_scale [N, ceil(K/G)] (or [N, 1]), M.weight_shape I64
           [2] = (N, K)[, M.weight_zero_point I32 [ceil(N/8), groups], packed eight per word along N]
    nvfp4: M.weight_packed U8 [N, ceil(K/2)], M.weight_scale F8_E4M3 [N, ceil(K/16)], M.weight_global_scale
           F32 [1][, M.input_global_scale]
- the fused 3-D experts of the bf16 checkpoint are stored per expert as three linears,
  `model.decoder.layers.{i}.experts.{e}.{gate_proj, up_proj, down_proj}`; we stack them back into our fused
  gate_up [E, 2I, H] (gate rows, then up rows) and down [E, H, I] while reading, into buffers allocated once.
Text tensors may sit under `model.encoder.language_model.` instead of `model.decoder.` (the stacks share
weights): the decoder name wins when both exist. Activation scales (`input_scale`, `input_global_scale`) are
read past: activations run unquantized (model/quant/scheme.py). Every name, shape and dtype is checked against
the config before any tensor data is read; a mismatch fails naming the tensor.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import torch

from kernels.dequant import NVFP4_GROUP, QuantTensor, unpack_int4
from model.config import DiffusionGemmaConfig
from model.quant.modules import QuantExperts, QuantLinear, install, quantized_names
from model.quant.quantize import quantize
from model.quant.scheme import CheckpointQuant, QuantScheme

log = logging.getLogger(__name__)

TEXT = "model.decoder."
ENCODER_TEXT = "model.encoder.language_model."
IGNORED_SUFFIXES = ("input_scale", "input_global_scale", "input_zero_point")
_EXPERT_KEY = re.compile(r"^layers\.(\d+)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)$")

# (suffix, safetensors dtypes accepted) the parts of one quantized linear, per scheme
_PARTS = {
    "fp8": (("weight", ("F8_E4M3",)), ("weight_scale", ("F32", "BF16", "F16"))),
    "w4a16": (("weight_packed", ("I32",)), ("weight_scale", ("F32", "BF16", "F16")), ("weight_shape", ("I64",
                                                                                                    "I32"))),
    "nvfp4": (("weight_packed", ("U8",)), ("weight_scale", ("F8_E4M3",)), ("weight_global_scale", ("F32",))),
}


def _part_shape(scheme: QuantScheme, part: str, n: int, k: int) -> tuple[tuple[int, ...], ...]:
    """Accepted shapes of one stored part of a quantized [N, K] linear."""
    groups = -(-k // scheme.group_size) if scheme.group_size else 1
    return {
        ("fp8", "weight"): ((n, k),),
        ("fp8", "weight_scale"): ((n, 1), (1,), (n,), ()),
        ("w4a16", "weight_packed"): ((n, -(-k // 8)),),
        ("w4a16", "weight_scale"): ((n, groups),),
        ("w4a16", "weight_shape"): ((2,),),
        ("w4a16", "weight_zero_point"): ((-(-n // 8), groups),),
        ("nvfp4", "weight_packed"): ((n, -(-k // 2)),),
        ("nvfp4", "weight_scale"): ((n, -(-k // NVFP4_GROUP)),),
        ("nvfp4", "weight_global_scale"): ((1,), ()),
    }[(scheme.name, part)]


def _parts(scheme: QuantScheme) -> tuple[tuple[str, tuple[str, ...]], ...]:
    extra = (("weight_zero_point", ("I32",)),) if not scheme.symmetric else ()
    return _PARTS[scheme.name] + extra


def _linear_shapes(config: DiffusionGemmaConfig, layout: dict) -> dict[str, tuple[int, int]]:
    """our module name -> (N, K) of every quantizable linear, experts split per expert."""
    shapes = {}
    by_ours = {ours: shape for ours, shape in layout.values()}
    for name in quantized_names(config):
        shapes[name] = by_ours[f"{name}.weight"]
    t = config.text
    for i in range(t.num_hidden_layers):
        for e in range(t.num_experts):
            for proj in ("gate_proj", "up_proj"):
                shapes[f"layers.{i}.experts.{e}.{proj}"] = (t.moe_intermediate_size, t.hidden_size)
            shapes[f"layers.{i}.experts.{e}.down_proj"] = (t.hidden_size, t.moe_intermediate_size)
    return shapes


class QuantPlan:
    """Which linears are quantized with which scheme, and where each stored part lives."""

    def __init__(self, config: DiffusionGemmaConfig, layout: dict, quant: CheckpointQuant, where: str):
        self.config, self.where = config, where
        self.shapes = _linear_shapes(config, layout)
        self.schemes: dict[str, QuantScheme] = {}
        for ours in self.shapes:
            scheme = quant.scheme_for(TEXT + ours)
            if scheme is not None:
                self.schemes[ours] = scheme
        t = config.text
        for i in range(t.num_hidden_layers):  # one layer's experts are one fused tensor: one scheme for all
            found = {self.schemes.get(f"layers.{i}.experts.{e}.{p}") for e in range(t.num_experts)
                     for p in ("gate_proj", "up_proj", "down_proj")}
            if len(found) > 1:
                raise ValueError(f"{where}: layer {i}'s experts mix quantization schemes ({found}); all of a "
                                 "layer's experts must share one")
        # our state_dict keys (weights) that the quantized modules replace
        self.replaced = {f"{m}.weight" for m in self.schemes if not _EXPERT_KEY.match(m)}
        experts = [_EXPERT_KEY.match(m) for m in self.schemes]
        self.quantized_experts = {int(m.group(1)) for m in experts if m}
        for i in self.quantized_experts:
            self.replaced |= {f"layers.{i}.experts.gate_up_proj", f"layers.{i}.experts.down_proj"}
        self.sources: dict[tuple[str, str], tuple[str, str]] = {}  # (module, part) -> (file, key)

    def claim(self, key: str, path: str, entry: dict) -> bool | str:
        """Record a stored tensor of a quantized linear: True if it is one, False if not ours to judge, or a
        problem message."""
        for prefix in (TEXT, ENCODER_TEXT):
            if key.startswith(prefix):
                module, _, part = key[len(prefix):].rpartition(".")
                break
        else:
            return False
        scheme = self.schemes.get(module)
        if scheme is None:
            return False
        if part in IGNORED_SUFFIXES:
            return True
        allowed = dict(_parts(scheme))
        if part not in allowed:
            return f"unexpected tensor {key!r} for a {scheme.name} linear (expected {sorted(allowed)})"
        if entry["dtype"] not in allowed[part]:
            return f"tensor {key!r} has dtype {entry['dtype']}, expected one of {list(allowed[part])}"
        n, k = self.shapes[module]
        if tuple(entry["shape"]) not in _part_shape(scheme, part, n, k):
            return (f"tensor {key!r} has shape {list(entry['shape'])}, expected "
                    f"{' or '.join(str(list(s)) for s in _part_shape(scheme, part, n, k))}")
        if key.startswith(TEXT) or (module, part) not in self.sources:
            self.sources[(module, part)] = (path, key)
        return True

    def missing(self) -> list[str]:
        out = []
        for module, scheme in self.schemes.items():
            for part, _ in _parts(scheme):
                if (module, part) not in self.sources:
                    out.append(f"missing tensor '{TEXT}{module}.{part}' ({scheme.name})")
        return out


def _to_quant(scheme: QuantScheme, n: int, k: int, parts: dict[str, torch.Tensor], where: str) -> QuantTensor:
    """One linear's stored parts -> QuantTensor (layout of kernels/dequant.py)."""
    if scheme.name == "fp8":
        scale = parts["weight_scale"].reshape(-1)
        scale = scale.expand(n).clone() if scale.numel() == 1 else scale  # per tensor: one value per row
        return QuantTensor("fp8", parts["weight"], scale, k=k, group=k)
    if scheme.name == "w4a16":
        stored = tuple(int(v) for v in parts["weight_shape"].tolist())
        if stored != (n, k):
            raise ValueError(f"{where}: weight_shape {list(stored)} does not match the config's {[n, k]}")
        group = scheme.group_size or k
        zero = None
        if "weight_zero_point" in parts:  # packed along N (dim 0): unpack along that dim
            zero = unpack_int4(parts["weight_zero_point"].t().contiguous(), n).t().contiguous()
        return QuantTensor("w4a16", parts["weight_packed"], parts["weight_scale"], k=k, group=group,
                           zero=zero)
    gs = parts["weight_global_scale"].reshape(1).expand(n).clone()
    return QuantTensor("nvfp4", parts["weight_packed"], parts["weight_scale"], k=k, group=NVFP4_GROUP,
                       global_scale=gs)


class _ExpertStack:
    """Fills one layer's fused expert QuantTensors from per-expert pieces, allocated on the first piece."""

    def __init__(self, E: int, I: int):  # noqa: E741
        self.E, self.I = E, I  # noqa: E741
        self.gate_up: dict[str, torch.Tensor | None] = {}
        self.down: dict[str, torch.Tensor | None] = {}
        self.meta: dict[str, tuple] = {}

    def put(self, e: int, proj: str, q: QuantTensor) -> None:
        target = self.down if proj == "down_proj" else self.gate_up
        rows = slice(None) if proj == "down_proj" else slice(0, self.I) if proj == "gate_proj" else slice(
            self.I, 2 * self.I)
        fused_n = q.n if proj == "down_proj" else 2 * q.n
        self.meta["down" if proj == "down_proj" else "gate_up"] = (q.scheme, q.k, q.group)
        for part in ("data", "scale", "zero", "global_scale"):
            t = getattr(q, part)
            if t is None:
                target[part] = None
                continue
            if part not in target:
                target[part] = t.new_empty((self.E, fused_n, *t.shape[1:]))
            target[part][e, rows] = t

    def build(self) -> tuple[QuantTensor, QuantTensor]:
        out = []
        for name, parts in (("gate_up", self.gate_up), ("down", self.down)):
            scheme, k, group = self.meta[name]
            out.append(QuantTensor(scheme, k=k, group=group, **parts))
        return out[0], out[1]


def load_quantized(model: torch.nn.Module, plan: QuantPlan, read: Callable[[str, str], torch.Tensor],
                   device: torch.device | str) -> None:
    """Read every quantized linear's parts (`read(file, key)`) and install QuantLinear / QuantExperts."""
    t = plan.config.text
    stacks: dict[int, _ExpertStack] = {}
    for module in sorted(plan.schemes, key=lambda m: plan.sources[(m, _parts(plan.schemes[m])[0][0])]):
        scheme = plan.schemes[module]
        n, k = plan.shapes[module]
        parts = {part: read(*plan.sources[(module, part)]) for part, _ in _parts(scheme)}
        q = _to_quant(scheme, n, k, parts, f"{plan.where}: {TEXT + module}")
        m = _EXPERT_KEY.match(module)
        if m is None:
            install(model, module, QuantLinear(_moved(q, device)))
            continue
        i, e, proj = int(m.group(1)), int(m.group(2)), m.group(3)
        stacks.setdefault(i, _ExpertStack(t.num_experts, t.moe_intermediate_size)).put(e, proj, q)
    for i, stack in stacks.items():
        gate_up, down = stack.build()
        install(model, f"layers.{i}.experts", QuantExperts(_moved(gate_up, device), _moved(down, device)))


class OnLoadQuantizer:
    """Quantizes a bf16 checkpoint's linears and experts as the reader hands them over (`put`), so that only
    one bf16 tensor (plus one layer's other expert tensor) is alive at a time."""

    def __init__(self, config: DiffusionGemmaConfig, scheme: QuantScheme, device: torch.device | str):
        self.scheme, self.device = scheme, device
        self.linears = {f"{name}.weight" for name in quantized_names(config)}
        self.experts = {f"layers.{i}.experts.{p}" for i in range(config.text.num_hidden_layers)
                        for p in ("gate_up_proj", "down_proj")}
        self._half: dict[str, QuantTensor] = {}  # layer's experts prefix -> the first of its two tensors

    @property
    def targets(self) -> set[str]:
        return self.linears | self.experts

    def put(self, model: torch.nn.Module, ours: str, w: torch.Tensor) -> None:
        q = quantize(w.to(self.device), self.scheme)  # on the load device: the clip search is fast there
        prefix, _, name = ours.rpartition(".")
        if ours in self.linears:
            install(model, prefix, QuantLinear(q))
            return
        other = self._half.pop(prefix, None)
        if other is None:
            self._half[prefix] = q
            return
        gate_up, down = (q, other) if name == "gate_up_proj" else (other, q)
        install(model, prefix, QuantExperts(gate_up, down))


def _moved(q: QuantTensor, device: torch.device | str) -> QuantTensor:
    def mv(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(device)

    return QuantTensor(q.scheme, mv(q.data), mv(q.scale), k=q.k, group=q.group, zero=mv(q.zero),
                       global_scale=mv(q.global_scale))


def unquantized_experts_warning(config: DiffusionGemmaConfig, plan: QuantPlan | None, where: str) -> None:
    """The trap of tools that only replace nn.Linear: experts left in bf16 are ~90% of the weights."""
    layers = config.text.num_hidden_layers
    if plan is not None and len(plan.quantized_experts) < layers:
        log.warning("%s: the routed experts of %d of %d layers are stored unquantized (bf16): the "
                    "checkpoint's quantizer skipped the fused experts, so most of the model is not quantized",
                    where, layers - len(plan.quantized_experts), layers)
