"""Modules that hold quantized weights in place of nn.Linear and the fused experts, and the pass that swaps
them into a model (gpt-fast's shape: quantization is applied from outside, the model's math stays as it is).

`QuantLinear` replaces an nn.Linear [N, K]; `QuantExperts` replaces model/moe.py's `Experts` (gate_up
[E, 2I, H], down [E, H, I]). Both keep the packed tensors of a kernels/dequant.py `QuantTensor` as buffers (so
`.to(device)` moves them) and call the dispatched kernels `kernels.quant_linear` / `kernels.quant_moe`: the
Triton GEMMs that dequantize inside their K loop on a GPU, the torch references everywhere else (one expert
dequantized at a time, so a quantized model also stays small in host memory).

Which weights are quantized (`QUANTIZED_LINEARS`): every projection of the attention, the dense MLP and the
self-conditioning MLP, and the routed experts. The tied embedding / LM head, the router and all norms stay in
the activation dtype (the router is a [E, H] matrix whose top-k decision we keep exact; published
checkpoints ignore it too).
"""

from __future__ import annotations

import torch
from torch import nn

import kernels
from kernels.dequant import QuantTensor
from model.quant.quantize import quantize
from model.quant.scheme import QuantScheme

# Linear weights under layers.{i}. (our module names) that are quantized; plus self_conditioning.*_proj.
QUANTIZED_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
SELF_CONDITIONING_LINEARS = ("self_conditioning.gate_proj", "self_conditioning.up_proj",
                             "self_conditioning.down_proj")
_PARTS = ("data", "scale", "zero", "global_scale")


class _Holder(nn.Module):
    """Buffers of one QuantTensor under a prefix; `_q(prefix)` rebuilds the (validated) view once per move."""

    def _hold(self, prefix: str, q: QuantTensor) -> None:
        for part in _PARTS:
            self.register_buffer(f"{prefix}_{part}", getattr(q, part))
        setattr(self, f"_{prefix}_meta", (q.scheme, q.k, q.group))
        self._views: dict[str, QuantTensor] = {}

    def _q(self, prefix: str) -> QuantTensor:
        view = self._views.get(prefix)
        if view is None:
            scheme, k, group = getattr(self, f"_{prefix}_meta")
            parts = {part: getattr(self, f"{prefix}_{part}") for part in _PARTS}
            view = self._views[prefix] = QuantTensor(scheme, k=k, group=group, **parts)
        return view

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        self._views = {}  # buffers are replaced by .to()/.cuda(): rebuild the views from the new ones
        return super()._apply(fn, recurse)


class QuantLinear(_Holder):
    """y = x @ w^T with a quantized w [N, K] (no bias: DiffusionGemma's linears have none)."""

    def __init__(self, q: QuantTensor):
        super().__init__()
        if q.data.dim() != 2:
            raise ValueError(f"QuantLinear: expected a 2-D weight, got shape {list(q.shape)}")
        self.in_features, self.out_features = q.k, q.n
        self._hold("weight", q)

    @property
    def qweight(self) -> QuantTensor:
        return self._q("weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.quant_linear(x, self.qweight)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.qweight.scheme}"


class QuantExperts(_Holder):
    """The routed experts with quantized gate_up [E, 2I, H] and down [E, H, I]; same call as Experts."""

    def __init__(self, gate_up: QuantTensor, down: QuantTensor):
        super().__init__()
        E, F, H = gate_up.shape
        if down.shape != (E, H, F // 2) or gate_up.scheme != down.scheme:
            raise ValueError(f"QuantExperts: gate_up {list(gate_up.shape)} ({gate_up.scheme}) and down "
                             f"{list(down.shape)} ({down.scheme}) do not pair up")
        self._hold("gate_up", gate_up)
        self._hold("down", down)

    @property
    def qgate_up(self) -> QuantTensor:
        return self._q("gate_up")

    @property
    def qdown(self) -> QuantTensor:
        return self._q("down")

    def forward(self, x_TH: torch.Tensor, idx_Tk: torch.Tensor, w_Tk: torch.Tensor) -> torch.Tensor:
        return kernels.quant_moe(x_TH, idx_Tk, w_Tk, self.qgate_up, self.qdown)

    def extra_repr(self) -> str:
        q = self._q("gate_up")
        return f"experts={q.shape[0]}, {q.scheme}"


def install(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at dotted path `name` of `model` (replacing the nn.Linear / Experts there)."""
    parent, _, leaf = name.rpartition(".")
    (model.get_submodule(parent) if parent else model).register_module(leaf, module)


def quantized_names(config) -> list[str]:  # noqa: ANN001 - DiffusionGemmaConfig (import cycle via weights)
    """Our module names of every quantized linear (experts excluded), in layer order."""
    t = config.text
    names = []
    for i in range(t.num_hidden_layers):
        for lin in QUANTIZED_LINEARS:
            if lin == "self_attn.v_proj" and not t.is_sliding(i):
                continue  # full-attention layers take V from the raw K projection
            names.append(f"layers.{i}.{lin}")
    return names + list(SELF_CONDITIONING_LINEARS)


@torch.no_grad()
def quantize_model(model: nn.Module, scheme: QuantScheme) -> nn.Module:
    """Quantize an already-built model in place (the same weights and rounding as quantizing on load), one
    weight at a time on its own device: for benchmarks on random-weight models and for tests."""
    for name in quantized_names(model.config):
        w = model.get_submodule(name).weight
        install(model, name, QuantLinear(quantize(w, scheme)))
        del w
    for i in range(model.config.text.num_hidden_layers):
        ex = model.get_submodule(f"layers.{i}.experts")
        install(model, f"layers.{i}.experts", QuantExperts(quantize(ex.gate_up_proj, scheme),
                                                           quantize(ex.down_proj, scheme)))
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (quantized ones at their packed size)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
