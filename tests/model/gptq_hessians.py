"""Calibration statistics for GPTQ (tests/model/gptq.py): H = X^T X of the input X of every linear the
compressed-tensors test writer quantizes (tests/model/ct_writer.py), keyed by checkpoint module name.

X comes from our model run the way training sees its inputs (train/forward.py): prompts and answers of the
synthetic TRAIN split (train/synthdata.py; never the held-out split the evaluation scores), the prompt and
the clean earlier canvases through the encoder, then the answer canvases, noised at a few fixed levels,
through the decoder twice, as the self-conditioned training step does: once plain, once conditioned on the
first pass's logits over a temperature drawn from the sampler's range. Encoder and decoder share the
weights, so both passes add to the same H; encoder left pads are left out.

Per layer: attention q/k/v/o, the dense MLP, and the self-conditioning block are hooked as they are called.
The experts are fused 3-D tensors (model/moe.py) that the writer stores per expert, so each expert gets its
own H: expert e's gate/up input is the tokens the router sends to e, its down input gelu_tanh(gate) * up of
those tokens (computed here from the model's own expert weights). The router is not quantized.

Legend: B rows, K canvases, C canvas length, T tokens, H hidden, E experts, k top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.moe import Experts
from model.transformer import DiffusionGemma
from model.weights import checkpoint_layout
from train.data import END_OF_TURN, PAD
from train.forward import context_of, decode_canvases, encode_context, make_batch
from train.synthdata import FAMILIES, dataset


@dataclass(frozen=True)
class CalibrationConfig:
    """Which calibration inputs GPTQ's statistics come from."""

    examples: int = 256  # train-split examples, split evenly over the task families
    noise_levels: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)  # fraction of canvas tokens replaced by noise
    batch: int = 32
    seed: int = 0  # picks the train-split examples, the noise and the self-conditioning temperatures
    sc_temperature: tuple[float, float] = (0.4, 0.8)  # the sampler's t_min, t_max (train/loop.py)

    def __post_init__(self) -> None:
        if self.examples < len(FAMILIES) or self.batch < 1:
            raise ValueError(f"examples >= {len(FAMILIES)} and batch >= 1, got {self.examples}, {self.batch}")
        if not self.noise_levels or not all(0 < t <= 1 for t in self.noise_levels):
            raise ValueError(f"noise_levels: expected values in (0, 1], got {self.noise_levels}")
        lo, hi = self.sc_temperature
        if not 0 < lo <= hi:
            raise ValueError(f"sc_temperature: expected 0 < lo <= hi, got {self.sc_temperature}")


class _Gram:
    """Sums x^T x per checkpoint module name over the rows of the pass running now that `mask` keeps."""

    def __init__(self) -> None:
        self.H: dict[str, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None  # flat over the pass's B*T tokens; None keeps all

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, x.shape[-1])
        return x if self.mask is None else x[self.mask]

    def add(self, names: tuple[str, ...], x_TK: torch.Tensor) -> None:
        if x_TK.shape[0] == 0:
            return
        g = x_TK.double().T @ x_TK.double()
        for name in names:
            self.H[name] = self.H[name] + g if name in self.H else g.clone()

    def linear_hook(self, name: str):
        return lambda module, inputs: self.add((name,), self.rows(inputs[0]))

    def experts_hook(self, base: str):
        """base: `model.decoder.layers.{i}.experts.`; the hook sees Experts' (x_TH, idx_Tk, w_Tk)."""

        def hook(module: Experts, inputs: tuple, output: torch.Tensor) -> None:
            x_TH, idx_Tk = self.rows(inputs[0]), self.rows(inputs[1])
            for e in range(module.gate_up_proj.shape[0]):
                xs = x_TH[(idx_Tk == e).any(-1)]
                self.add((f"{base}{e}.gate_proj", f"{base}{e}.up_proj"), xs)
                gate, up = F.linear(xs, module.gate_up_proj[e]).chunk(2, dim=-1)
                self.add((f"{base}{e}.down_proj",), F.gelu(gate, approximate="tanh") * up)

        return hook


def _hooks(model: DiffusionGemma, gram: _Gram) -> list:
    """Hook every quantized linear (released name -> our module, from the checkpoint key map) and every
    experts module; the router's projection is skipped, as the writer leaves it unquantized."""
    handles = []
    for key, (ours, _) in checkpoint_layout(model.config).items():
        if key.endswith(".experts.gate_up_proj"):
            module = model.get_submodule(ours.removesuffix(".gate_up_proj"))
            handles.append(module.register_forward_hook(gram.experts_hook(key.removesuffix("gate_up_proj"))))
        elif key.endswith(".weight") and "router" not in key:
            module = model.get_submodule(ours.removesuffix(".weight"))
            if isinstance(module, nn.Linear):
                handles.append(module.register_forward_pre_hook(gram.linear_hook(key.removesuffix(".weight"))))
    return handles


def _noised(targets_BKC: torch.Tensor, vocab: int, level: float, gen: torch.Generator) -> torch.Tensor:
    """Each token replaced by a uniform random id with probability `level` (train/forward.py's corruption,
    at a fixed level instead of a drawn one)."""
    hit = torch.rand(targets_BKC.shape, generator=gen) < level
    return torch.where(hit, torch.randint(0, vocab, targets_BKC.shape, generator=gen), targets_BKC)


@torch.no_grad()
def collect_hessians(model: DiffusionGemma, tok, cfg: CalibrationConfig = CalibrationConfig()
                     ) -> dict[str, torch.Tensor]:
    """{checkpoint module name: H [K, K] fp64} over the calibration inputs (module docstring). `tok`: the
    model's Tokenizer (model.load_tokenizer). An expert no calibration token reaches has no entry."""
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    C, V = model.config.canvas_length, model.text.vocab_size
    gram = _Gram()
    handles = _hooks(model, gram)
    try:
        for i, family in enumerate(FAMILIES):
            n = cfg.examples // len(FAMILIES) + (i < cfg.examples % len(FAMILIES))
            exs = dataset("train", n, family, seed=cfg.seed)
            for s in range(0, n, cfg.batch):
                chunk = exs[s:s + cfg.batch]
                b = make_batch(tok, [e.prompt for e in chunk], [e.answer for e in chunk], C, END_OF_TURN, PAD)
                B, K, _ = b.targets_BKC.shape
                ids, valid = context_of(b)
                gram.mask = valid.reshape(-1)
                kv = encode_context(model, ids, valid)
                gram.mask = None
                L = b.prompt_BL.shape[1]
                for level in cfg.noise_levels:
                    noisy = _noised(b.targets_BKC, V, level, gen).view(B, K * C)
                    first = decode_canvases(model, kv, valid, L, noisy, C)
                    lo, hi = cfg.sc_temperature
                    temp = lo + (hi - lo) * torch.rand(B, 1, 1, generator=gen)
                    decode_canvases(model, kv, valid, L, noisy, C, first / temp)
    finally:
        for h in handles:
            h.remove()
    return gram.H
