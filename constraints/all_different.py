"""All-different groups of canvas positions: a commit hook (and per-step steering) that gives each position of
a group a token from a value set, no two positions of a group the same value (a Sudoku's rows, columns and
boxes; a ranking's slots).

Owns `AllDifferentSpec` (the groups and values, checked), `AllDifferent` (the hook) and `assign` (the one
rule, below). The one denoising loop calls the hook through engine/commit_hook.py's protocol: `steer` at every
step (engine/denoise.py), `commit` once per canvas (engine/commit_hook.py `commit_canvas`). An inner hook (the
regex / JSON Schema ConstraintHook of constraints/hook.py) may wrap the rest of the output: it reads logits
in which each group position allows only the value `assign` gave it, so both constraints hold at once
where they agree.

The rule (`assign`), at every step and at the commit, over the step's logits restricted to the value tokens:
a position whose value is fixed (a pin, or committed in an earlier canvas) takes it; then, one position at a
time, and each time its peers (the positions sharing a group with it) may no longer take its value:
1. a value that a group with as many positions as values (so each value exactly once) still lacks, and that
   only one of its open positions still allows, goes there: the constraint leaves no other choice;
2. else the open position whose best still-allowed value is most probable, renormalised over its
   still-allowed values (the constrained distribution), takes that value.
This is confidence-ordered decoding (the loop's own commit order) under the constraint, with no search:
a position left with no allowed value takes its raw best value, and the output breaks the constraint there
(a validator, pipeline/validators.py, regenerates such a row with a new seed; `AllDifferentState.broken`
counts them). The inner constraint always wins: where none of its valid outputs holds every assigned value,
it commits its best valid output anyway (the narrowed logits penalise the other tokens, never forbid them),
and `broken` counts the group positions it changed. At each step the positions the loop keeps take their
assigned value, so the canvas the model reads next is consistent, and the stop rule compares assignments.

Offsets count output tokens from the first canvas' first position (as engine/pins.py's): canvas k holds
[k*C, (k+1)*C); a group may span canvases: values committed in earlier canvases are fixed for later ones.
Cost: per row and step, the value tokens' logits at the group positions ([P, K], not [C, V]) go to the host
and `assign` takes P small numpy rounds (4-6 ms for 81 open positions on this CPU, measured).

Legend: C canvas length, V vocabulary, P group positions in this canvas, K values, G groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

_NEG = -np.inf
# Over any canvas' summed logit differences (softcapped logits over temperature: a few hundred a position),
# so one overridden group position costs an inner constraint's path more than everything else it could gain.
_PENALTY = 1e6
_NO_VALUE = -2  # a position committed with a token that is not a value (an inner constraint's choice)


@dataclass(frozen=True)
class AllDifferentSpec:
    """groups: each a list of distinct output offsets (>= 0); values: distinct token ids, at least as many as
    the largest group. Every grouped offset must take one of the values, distinct within each group."""

    groups: tuple[tuple[int, ...], ...]
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        groups = tuple(tuple(g) for g in self.groups)
        values = tuple(self.values)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "values", values)
        if not groups:
            raise ValueError("all_different: groups is empty")
        if not values:
            raise ValueError("all_different: values is empty")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"all_different: value token ids must be ints >= 0, got {v!r}")
        if len(set(values)) != len(values):
            raise ValueError("all_different: the values repeat a token")
        for gi, g in enumerate(groups):
            if not g:
                raise ValueError(f"all_different: group {gi} is empty")
            for o in g:
                if not isinstance(o, int) or isinstance(o, bool) or o < 0:
                    raise ValueError(f"all_different: group {gi}: offsets must be ints >= 0, got {o!r}")
            if len(set(g)) != len(g):
                raise ValueError(f"all_different: group {gi} repeats an offset")
            if len(g) > len(values):
                raise ValueError(
                    f"all_different: group {gi} has {len(g)} positions but there are only {len(values)} "
                    "values: no output can satisfy it"
                )

    @property
    def offsets(self) -> tuple[int, ...]:
        """Every grouped offset, ascending."""
        return tuple(sorted({o for g in self.groups for o in g}))

    def check_pins(self, pins_tokens: tuple[int, ...]) -> None:
        """ValueError when pinned group positions already break the spec: a pin that is not a value, or two
        pins of one group with the same value (names the offsets)."""
        vals = set(self.values)
        for gi, g in enumerate(self.groups):
            seen: dict[int, int] = {}
            for o in g:
                t = pins_tokens[o] if o < len(pins_tokens) else -1
                if t < 0:
                    continue
                if t not in vals:
                    raise ValueError(f"all_different: the pin at output offset {o} (token {t}) is not one of "
                                     "the values")
                if t in seen:
                    raise ValueError(f"all_different: group {gi}: the pins at output offsets {seen[t]} and "
                                     f"{o} hold the same value (token {t})")
                seen[t] = o


@dataclass(frozen=True)
class AllDifferentState:
    fixed: dict[int, int] = field(default_factory=dict)  # offset -> value index (or _NO_VALUE) committed
    # in earlier canvases
    broken: int = 0  # positions where the output may break the groups: committed with no allowed value
    # left, or given another token by the inner constraint
    inner: object = None  # the inner hook's state


def assign(logits_PK: np.ndarray, peers: list[np.ndarray], fixed_P: np.ndarray,
           exact_GP: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The rule of this module's docstring. logits_PK: fp32 logits of the value tokens at the positions;
    peers[p]: the positions sharing a group with p; fixed_P: a value index per position, -1 (open) or
    _NO_VALUE (committed holding no value: it constrains nothing); exact_GP:
    membership of the groups with as many positions as values (each value exactly once in them), or None.
    Returns (value index per position, positions given a value no longer allowed)."""
    P, K = logits_PK.shape
    allowed_PK = np.isfinite(logits_PK)
    out_P = fixed_P.astype(np.int64)  # fixed values stay; _NO_VALUE positions stay closed, holding none
    placed_PK = np.zeros((P, K), dtype=np.int32)  # the values given so far, for the exactly-once rule
    for p in np.flatnonzero(fixed_P >= 0):
        allowed_PK[peers[p], fixed_P[p]] = False
        placed_PK[p, fixed_P[p]] = 1
    exact = None if exact_GP is None or not exact_GP.size else exact_GP.astype(np.int32)
    broken = 0
    for _ in range(int((fixed_P == -1).sum())):
        open_P = out_P == -1
        forced = None if exact is None else _only_place(exact, allowed_PK & open_P[:, None], placed_PK)
        if forced is not None:
            p, v = forced
        else:
            masked_PK = np.where(allowed_PK, logits_PK, _NEG)
            best_P = masked_PK.max(axis=1)
            ok_P = np.isfinite(best_P) & open_P
            with np.errstate(invalid="ignore", divide="ignore"):
                # the best allowed value's probability under the distribution renormalised over the allowed
                conf_P = 1.0 / np.exp(masked_PK - np.where(ok_P, best_P, 0.0)[:, None]).sum(axis=1)
            conf_P = np.where(ok_P, conf_P, -1.0)
            if conf_P.max() < 0:  # every open position is left without an allowed value
                p = int(np.flatnonzero(open_P)[0])
                v = int(np.argmax(np.where(np.isfinite(logits_PK[p]), logits_PK[p], _NEG)))
                broken += 1
            else:
                p = int(np.argmax(conf_P))
                v = int(np.argmax(masked_PK[p]))
        out_P[p] = v
        placed_PK[p, v] = 1
        allowed_PK[peers[p], v] = False
    return out_P, broken


def _only_place(
    exact_GP: np.ndarray, open_allowed_PK: np.ndarray, placed_PK: np.ndarray
) -> tuple[int, int] | None:
    """(position, value) where a value still missing from an exactly-once group is allowed at one open
    position of it only: the constraint forces it there. None when no value is forced so."""
    need_GK = (exact_GP @ open_allowed_PK.astype(np.int32) == 1) & (exact_GP @ placed_PK == 0)
    hits = np.argwhere(need_GK)
    if not len(hits):
        return None
    g, v = (int(x) for x in hits[0])
    p = int(np.flatnonzero(exact_GP[g].astype(bool) & open_allowed_PK[:, v])[0])
    return p, v


@dataclass(frozen=True)
class _Layout:
    seen: list[int]  # offsets assign sees, ascending: earlier canvases', then this canvas'
    here: list[int]  # this canvas' (the tail of seen)
    rows: torch.Tensor  # long: here as canvas positions
    peers: list[np.ndarray]  # per seen position, its peers' indices into seen
    exact_GP: np.ndarray  # bool: the exactly-once groups lying wholly in seen


class AllDifferent:
    """CommitHook and SteeringHook (engine/commit_hook.py) for an AllDifferentSpec, optionally around an inner
    hook that constrains the whole output (its commit and steering read the narrowed logits)."""

    steering_on = True

    def __init__(self, spec: AllDifferentSpec, *, max_new_tokens: int, inner=None,
                 pins_tokens: tuple[int, ...] = ()):
        if not isinstance(spec, AllDifferentSpec):
            raise ValueError(f"all_different: expected an AllDifferentSpec, got {spec!r}")
        last = spec.offsets[-1]
        if last >= max_new_tokens:
            raise ValueError(f"all_different: output offset {last} lies past max_new_tokens={max_new_tokens}")
        spec.check_pins(tuple(pins_tokens))
        self.spec, self.max_new_tokens, self.inner = spec, int(max_new_tokens), inner
        self.vocab = None if inner is None else inner.vocab  # exact decoding (constraints.decode_text)
        self._values = torch.tensor(spec.values, dtype=torch.long)
        self._index = {o: i for i, o in enumerate(spec.offsets)}
        self._value_of = {t: k for k, t in enumerate(spec.values)}
        # pinned group positions are fixed from the start (check_pins made sure each pin is a value)
        self._pinned = {o: self._value_of[pins_tokens[o]] for o in spec.offsets
                        if o < len(pins_tokens) and pins_tokens[o] >= 0}
        members = [[self._index[o] for o in g] for g in spec.groups]
        peers: list[set[int]] = [set() for _ in spec.offsets]
        for g in members:
            for i in g:
                peers[i].update(j for j in g if j != i)
        self._peers = [np.array(sorted(s), dtype=np.int64) for s in peers]
        self._layouts: dict[tuple[int, int], _Layout] = {}

    # -- the rule over one canvas -----------------------------------------------------------------------
    def _layout(self, off0: int, C: int) -> _Layout:
        """The positions `assign` sees for the canvas at off0: earlier canvases' (fixed by then) and this
        canvas' (later canvases' are not seen: they get their own canvas), their peers among them, and the
        exactly-once groups lying wholly among them. Made once per canvas (each step reuses it)."""
        key = (off0, C)
        if key not in self._layouts:
            all_o = self.spec.offsets
            seen = [o for o in all_o if o < off0 + C]
            here = [o for o in seen if o >= off0]
            local = {self._index[o]: i for i, o in enumerate(seen)}
            peers = [np.array([local[q] for q in self._peers[self._index[o]] if q in local], dtype=np.int64)
                     for o in seen]
            K = len(self.spec.values)
            exact = [g for g in self.spec.groups if len(g) == K and all(o < off0 + C for o in g)]
            exact_GP = np.zeros((len(exact), len(seen)), dtype=bool)
            for gi, g in enumerate(exact):
                exact_GP[gi, [local[self._index[o]] for o in g]] = True
            rows = torch.tensor([o - off0 for o in here], dtype=torch.long)
            self._layouts[key] = _Layout(seen, here, rows, peers, exact_GP)
        return self._layouts[key]

    def _canvas(self, logits_CV: torch.Tensor, state: AllDifferentState,
                tokens_left: int) -> tuple[_Layout, torch.Tensor | None, int]:
        """(this canvas' layout, the value token assigned to each of its group positions (None: it has none),
        broken count)."""
        off0 = self.max_new_tokens - int(tokens_left)
        lay = self._layout(off0, logits_CV.shape[0])
        if not lay.here:
            return lay, None, 0
        dev = logits_CV.device
        logits_PK = np.zeros((len(lay.seen), len(self.spec.values)), dtype=np.float32)
        n_before = len(lay.seen) - len(lay.here)
        picked = logits_CV[lay.rows.to(dev)][:, self._values.to(dev)]
        logits_PK[n_before:] = picked.detach().float().cpu().numpy()
        fixed_P = np.array([state.fixed.get(o, self._pinned.get(o, -1)) for o in lay.seen], dtype=np.int64)
        out_P, broken = assign(logits_PK, lay.peers, fixed_P, lay.exact_GP)
        return lay, self._values[torch.from_numpy(out_P[n_before:])].to(dev), broken

    @staticmethod
    def _narrow(logits_CV: torch.Tensor, rows: torch.Tensor, toks: torch.Tensor) -> torch.Tensor:
        """The logits with every token but its assigned value _PENALTY lower at each group position: an inner
        constraint keeps the assigned values whenever one of its valid outputs holds them all, and where none
        does it still finds its best valid output (a masked -inf there would leave it none)."""
        out = logits_CV.clone()
        keep = out[rows, toks].clone()
        out[rows] -= _PENALTY
        out[rows, toks] = torch.where(torch.isfinite(keep), keep, torch.zeros_like(keep))
        return out

    # -- CommitHook -------------------------------------------------------------------------------------
    def initial_state(self) -> AllDifferentState:
        return AllDifferentState(inner=None if self.inner is None else self.inner.initial_state())

    def commit(self, logits_CV: torch.Tensor, state: AllDifferentState, *, tokens_left: int,
               last_canvas: bool) -> tuple[torch.Tensor, AllDifferentState, bool]:
        lay, toks_P, broken = self._canvas(logits_CV, state, tokens_left)
        rows = lay.rows.to(logits_CV.device)
        narrowed = logits_CV if toks_P is None else self._narrow(logits_CV, rows, toks_P)
        if self.inner is None:
            toks, inner_state, done = narrowed.argmax(dim=-1), None, False
        else:
            toks, inner_state, done = self.inner.commit(narrowed, state.inner, tokens_left=tokens_left,
                                                        last_canvas=last_canvas)
        if toks_P is None:
            return toks, replace(state, inner=inner_state), done
        # what was committed: a value index, or _NO_VALUE where the inner constraint put another token
        got = [self._value_of.get(int(t), _NO_VALUE) for t in toks[rows.to(toks.device)].tolist()]
        overridden = int((toks[rows.to(toks.device)] != toks_P.to(toks.device)).sum())
        fixed = {**state.fixed, **dict(zip(lay.here, got))}
        return toks, AllDifferentState(fixed, state.broken + broken + overridden, inner_state), done

    # -- SteeringHook -----------------------------------------------------------------------------------
    def seed_canvas(self, canvas_C: torch.Tensor, state: AllDifferentState, *, tokens_left: int,
                    last_canvas: bool) -> torch.Tensor | None:
        if self.inner is None or not self.inner.steering_on:
            return None
        return self.inner.seed_canvas(canvas_C, state.inner, tokens_left=tokens_left, last_canvas=last_canvas)

    def steer(self, logits_CV: torch.Tensor, argmax_C: torch.Tensor, keep_C: torch.Tensor,
              sampled_C: torch.Tensor, state: AllDifferentState, *, tokens_left: int,
              last_canvas: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Argmax and kept tokens with each group position at its assigned value (then the inner hook's
        steering, over the narrowed logits, when it steers)."""
        lay, toks_P, _ = self._canvas(logits_CV, state, tokens_left)
        if toks_P is None:
            return None
        rows = lay.rows.to(argmax_C.device)
        toks_P = toks_P.to(argmax_C.device)
        argmax_C, sampled_C = argmax_C.clone(), sampled_C.clone()
        argmax_C[rows] = toks_P
        sampled_C[rows] = torch.where(keep_C[rows], toks_P, sampled_C[rows])
        if self.inner is not None and self.inner.steering_on:
            out = self.inner.steer(self._narrow(logits_CV, lay.rows.to(logits_CV.device), toks_P),
                                   argmax_C, keep_C, sampled_C, state.inner, tokens_left=tokens_left,
                                   last_canvas=last_canvas)
            if out is not None:
                return out
        return argmax_C, sampled_C
