"""Pinned canvas positions: tokens a row fixes before denoising starts (infilling).

Owns `Pins` (one row's fixed tokens by output offset, validated) and the four rules that make a pin hold,
applied by the one denoising step (engine/denoise.py) and the one commit (engine/commit_hook.py):
1. the first step's input canvas holds the pin (`apply`), so every other position attends to it from the
   first forward on;
2. at every step a pinned position is kept (never renoised), its sampled token, its argmax and hence the
   stop rule's canvas are the pin, and its entropy counts as 0: the pin is its position's only allowed
   token (`pinned_B C` masks, `apply`);
3. a commit hook reads logits in which a pinned position allows only its pin (`mask_logits`), so a
   constrained commit (constraints/hook.py's DP) takes pins as given;
4. a stop token the model put at a free position before the row's last pin is replaced by pad
   (`hold_stops`): a row cannot end inside its own template.
A pin never changes: the committed canvas holds it (tests/engine/test_pins.py checks it over random pins and
seeds, both loops). Pins cost nothing for rows without them, and a batch without any carries no pin tensor.

Offsets count output tokens from the first canvas' first position, so pins may span several canvases: canvas
k holds offsets [k*C, (k+1)*C). Building pins from text with holes, JSON skeletons or grids is
pipeline/pin_templates.py's.

Legend: B rows, C canvas length, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FREE = -1  # an offset without a pin


@dataclass(frozen=True)
class Pins:
    """One row's pinned tokens: `tokens[i]` is the token fixed at output offset i, or FREE."""

    tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        toks = tuple(self.tokens)
        object.__setattr__(self, "tokens", toks)
        for i, t in enumerate(toks):
            if not isinstance(t, int) or isinstance(t, bool) or t < FREE:
                raise ValueError(f"Pins: offset {i}: expected a token id >= 0 or {FREE} (free), got {t!r}")

    @classmethod
    def at(cls, fixed: dict[int, int]) -> Pins:
        """Pins from {offset: token}."""
        if not fixed:
            return cls(())
        bad = [o for o in fixed if not isinstance(o, int) or o < 0]
        if bad:
            raise ValueError(f"Pins: offsets must be ints >= 0, got {bad[:3]}")
        toks = [FREE] * (max(fixed) + 1)
        for o, t in fixed.items():
            toks[o] = t
        return cls(tuple(toks))

    @property
    def last(self) -> int:
        """Offset of the last pin (-1: none)."""
        for i in range(len(self.tokens) - 1, -1, -1):
            if self.tokens[i] != FREE:
                return i
        return -1

    def problem(self, vocab_size: int, max_new_tokens: int, stop_ids=()) -> str | None:
        """Why these pins cannot be honoured (None: they can): a token outside the vocabulary, a pin past
        the row's token budget, or a pinned stop token (EOS) before another pin (the row would end there)."""
        last = self.last
        if last >= max_new_tokens:
            return f"a pin at output offset {last} lies past max_new_tokens={max_new_tokens}"
        stops = set(stop_ids)
        for i, t in enumerate(self.tokens):
            if t >= vocab_size:
                return f"the pin at output offset {i} is token {t}, outside the vocabulary ({vocab_size} ids)"
            if t in stops and i < last:
                return f"the pin at output offset {i} is a stop token (EOS), before the pin at offset {last}"
        return None

    def canvas(self, k: int, C: int) -> list[int]:
        """Canvas k's pins: C entries, FREE where nothing is pinned."""
        part = list(self.tokens[k * C : (k + 1) * C])
        return part + [FREE] * (C - len(part))

    def hold_until(self, k: int, C: int) -> int:
        """Positions of canvas k (from its start) before the row's last pin: a stop token there is held."""
        return max(0, min(C, self.last - k * C))


NO_PINS = Pins(())


def pin_tensor(pins: list[Pins | None], canvases: list[int], C: int, device) -> torch.Tensor | None:
    """pin_BC long (FREE where free) for rows at the given canvas indices; None when no row pins anything in
    its canvas (the step then does no pin work)."""
    rows = [(p or NO_PINS).canvas(k, C) for p, k in zip(pins, canvases)]
    if all(t == FREE for r in rows for t in r):
        return None
    return torch.tensor(rows, dtype=torch.long, device=device)


def apply(pin_BC: torch.Tensor | None, tokens_BC: torch.Tensor) -> torch.Tensor:
    """tokens_BC with each pinned position replaced by its pin."""
    if pin_BC is None:
        return tokens_BC
    return torch.where(pin_BC >= 0, pin_BC, tokens_BC)


def mask_logits(logits_CV: torch.Tensor, pin_C: list[int] | torch.Tensor | None) -> torch.Tensor:
    """logits_CV where each pinned position allows only its pin (its pin 0, every other token -inf); a copy
    when anything is pinned, the input itself otherwise."""
    if pin_C is None:
        return logits_CV
    pin_t = torch.as_tensor(pin_C, dtype=torch.long, device=logits_CV.device)
    pos = torch.nonzero(pin_t >= 0)[:, 0]
    if pos.numel() == 0:
        return logits_CV
    out = logits_CV.clone()
    out[pos] = float("-inf")
    out[pos, pin_t[pos]] = 0.0
    return out


def hold_stops(tokens: list[int], pin_C: list[int] | None, hold: int, stop_ids, pad: int | None) -> list[int]:
    """Rule 4: a stop token at a free position before `hold` becomes pad (the row's template goes on)."""
    if pin_C is None or hold == 0 or pad is None:
        return tokens
    stops = set(stop_ids)
    return [pad if i < hold and pin_C[i] == FREE and t in stops else t for i, t in enumerate(tokens)]
