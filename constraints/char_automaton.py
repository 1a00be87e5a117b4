"""Intersection and complement of string languages: pattern ASTs -> character DFAs -> one pattern AST.

A string under `pattern` and `format` together, under two patterns (allOf), or under `not: {pattern}` is in
the intersection of languages, some complemented. A regex cannot say "and" or "not", so we build each
operand's deterministic automaton over a shared alphabet, take the product, and turn the product back into
an AST (ecma_regex.py nodes) by state elimination (dfa_to_ast.py).

Alphabet: the code point ranges of every character set of every operand are cut into disjoint atoms, and
atoms that lie in exactly the same sets form one class (`Alphabet`), so an automaton moves on class ids.

Which characters a set stands for depends on the side (ecma_regex.py `Chars`): a positive operand (its
strings are generated) uses `must`, what both dialects match; a complemented operand (its strings must NOT
match) uses `may`, a superset of what Python's `re` could match, so its complement is a subset of the
strings the validator finds outside the pattern. Every step is exact otherwise; what grows past the state
or size caps is refused (TooComplex, an UnsupportedSchema) rather than approximated.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from constraints.char_dfa import DFA, minimize
from constraints.dfa_to_ast import TooComplex, to_ast
from constraints.ecma_regex import MAX_CP, Alt, Chars, Rep, Seq, norm

MAX_NFA = 40_000  # Thompson states of one operand (counted repetitions are unrolled)
MAX_DFA = 3_000  # states of one operand's DFA or of the product


class Alphabet:
    """Character classes: code points that every given range set either wholly holds or wholly misses.

    The ranges are first cut at every boundary into disjoint atoms covering [0, MAX_CP]; atoms in exactly
    the same range sets form one class, so an automaton moves on class ids and never tells them apart.
    """

    def __init__(self, range_sets):
        sets = list(dict.fromkeys(tuple(r) for r in range_sets))
        cuts = {0, MAX_CP + 1}
        for ranges in sets:
            for a, b in ranges:
                cuts.update((a, b + 1))
        bounds = sorted(cuts)
        starts, ends = bounds[:-1], [x - 1 for x in bounds[1:]]
        member: list[list[int]] = [[] for _ in starts]
        for i, ranges in enumerate(sets):
            for a, b in ranges:
                j = bisect.bisect_left(starts, a)
                while j < len(starts) and ends[j] <= b:
                    member[j].append(i)
                    j += 1
        cls: dict[tuple, int] = {}
        self.of_atom = [cls.setdefault(tuple(m), len(cls)) for m in member]
        self.starts, self.ends = starts, ends
        self.atoms: list[list[int]] = [[] for _ in cls]
        for j, k in enumerate(self.of_atom):
            self.atoms[k].append(j)

    def __len__(self) -> int:
        return len(self.atoms)

    def ids(self, ranges) -> frozenset[int]:
        """The classes inside `ranges` (one of the range sets the alphabet was built from)."""
        out: set[int] = set()
        for a, b in ranges:
            j = bisect.bisect_left(self.starts, a)
            while j < len(self.starts) and self.ends[j] <= b:
                out.add(self.of_atom[j])
                j += 1
        return frozenset(out)

    def ranges(self, ids) -> tuple:
        return norm((self.starts[j], self.ends[j]) for k in ids for j in self.atoms[k])


def _chars_of(n, side: str):
    """Every character set of AST `n` (the `must` or the `may` ranges)."""
    if isinstance(n, Chars):
        yield getattr(n, side)
    elif isinstance(n, (Seq, Alt)):
        for x in n.items:
            yield from _chars_of(x, side)
    elif isinstance(n, Rep):
        yield from _chars_of(n.item, side)


class _NFA:
    """Thompson construction: epsilon edges and atom-set edges between integer states."""

    def __init__(self, alphabet: Alphabet, side: str):
        self.alphabet, self.side = alphabet, side
        self.eps: list[list[int]] = []
        self.moves: list[list[tuple[frozenset[int], int]]] = []

    def state(self) -> int:
        if len(self.eps) >= MAX_NFA:
            raise TooComplex(f"unsupported: pattern combination over {MAX_NFA} automaton states")
        self.eps.append([])
        self.moves.append([])
        return len(self.eps) - 1

    def build(self, n) -> tuple[int, int]:
        """(entry, exit) states of a fresh fragment for `n`."""
        if isinstance(n, Chars):
            a, b = self.state(), self.state()
            self.moves[a].append((self.alphabet.ids(getattr(n, self.side)), b))
            return a, b
        if isinstance(n, Seq):
            a = b = self.state()
            for x in n.items:
                i, o = self.build(x)
                self.eps[b].append(i)
                b = o
            return a, b
        if isinstance(n, Alt):
            a, b = self.state(), self.state()
            for x in n.items:
                i, o = self.build(x)
                self.eps[a].append(i)
                self.eps[o].append(b)
            return a, b
        a = b = self.state()
        for _ in range(n.lo):
            i, o = self.build(n.item)
            self.eps[b].append(i)
            b = o
        if n.hi is None:  # b -> item -> b, any number of times
            i, o = self.build(n.item)
            self.eps[b].append(i)
            self.eps[o].append(b)
            return a, b
        end = self.state()
        for _ in range(n.hi - n.lo):  # each further copy may be skipped straight to the end
            self.eps[b].append(end)
            i, o = self.build(n.item)
            self.eps[b].append(i)
            b = o
        self.eps[b].append(end)
        return a, end

    def closure(self, states) -> frozenset[int]:
        out, todo = set(states), list(states)
        while todo:
            for t in self.eps[todo.pop()]:
                if t not in out:
                    out.add(t)
                    todo.append(t)
        return frozenset(out)


def _explore(start, moves) -> tuple[list, list[dict[int, int]]]:
    """Breadth-first over the states reachable from `start`: (states in the order first seen, each one's row
    {atom: index of the next state}); `moves(state)` yields (atom, next state). Past MAX_DFA states:
    TooComplex."""
    index = {start: 0}
    order, delta = [start], []
    while len(delta) < len(order):
        row: dict[int, int] = {}
        for a, nxt in moves(order[len(delta)]):
            if nxt not in index:
                if len(order) >= MAX_DFA:
                    raise TooComplex(f"unsupported: pattern combination over {MAX_DFA} automaton states")
                index[nxt] = len(order)
                order.append(nxt)
            row[a] = index[nxt]
        delta.append(row)
    return order, delta


def to_dfa(n, alphabet: Alphabet, side: str) -> DFA:
    """The minimal DFA of AST `n` over `alphabet`, reading its `side` ("must" or "may") character sets."""
    nfa = _NFA(alphabet, side)
    start, accept = nfa.build(n)

    def moves(cur):
        step: dict[int, set[int]] = {}
        for s in cur:
            for ids, t in nfa.moves[s]:
                for a in ids:
                    step.setdefault(a, set()).add(t)
        return ((a, nfa.closure(targets)) for a, targets in step.items())

    order, delta = _explore(nfa.closure([start]), moves)
    return minimize(DFA(delta, [accept in s for s in order]))


def product(dfas: list[DFA], negated: list[bool], usable: set[int], n_classes: int) -> DFA:
    """DFA of the strings every non-negated DFA accepts and no negated one does, over atoms in `usable`.

    A negated operand's missing move is its (rejecting, hence for us accepting) dead state, written -1. A
    negated operand in a state that accepts every continuation ("the pattern was found") ends the path.
    """
    def accepts(key) -> bool:
        return all((k >= 0 and d.final[k]) != neg for k, d, neg in zip(key, dfas, negated))

    doomed = [_universal(d, n_classes) if neg else set() for d, neg in zip(dfas, negated)]

    def moves(key):
        for a in sorted(usable):
            nxt = []
            for k, d, neg, bad in zip(key, dfas, negated, doomed):
                t = d.delta[k].get(a, -1) if k >= 0 else -1
                if (t < 0 and not neg) or t in bad:
                    break
                nxt.append(t)
            else:
                yield a, tuple(nxt)

    order, delta = _explore(tuple(0 for _ in dfas), moves)
    return minimize(DFA(delta, [accepts(k) for k in order]))


def _universal(d: DFA, n_classes: int) -> set[int]:
    """States of `d` from which every string is accepted (final, every class loops back)."""
    return {
        s for s, row in enumerate(d.delta)
        if d.final[s] and len(row) == n_classes and all(t == s for t in row.values())
    }


def empty(d: DFA) -> bool:
    return not any(d.final)


def combine(pos: list, neg: list[tuple], usable: Callable[[tuple], bool]):
    """An AST of the strings in every `pos` language (their `must` sets) and in no `neg` language, each a
    tuple of ASTs standing for the intersection of their (`may`) languages; None when no string is left.

    Only atoms whose ranges pass `usable` are kept. When the result equals one positive operand's language,
    that operand's own AST is returned (usually smaller than what elimination builds).
    """
    ranges = [r for n in pos for r in _chars_of(n, "must")]
    ranges += [r for conj in neg for n in conj for r in _chars_of(n, "may")]
    alphabet = Alphabet(ranges)
    keep = {k for k in range(len(alphabet)) if usable(alphabet.ranges([k]))}
    every = set(range(len(alphabet)))
    dfas = [to_dfa(n, alphabet, "must") for n in pos]
    for conj in neg:  # the conjunction's DFA (every character: `may` is about all of them), to complement
        parts = [to_dfa(n, alphabet, "may") for n in conj]
        conj_dfa = parts[0] if len(parts) == 1 else product(parts, [False] * len(parts), every, len(alphabet))
        dfas.append(conj_dfa)
    result = product(dfas, [False] * len(pos) + [True] * len(neg), keep, len(alphabet))
    if empty(result):
        return None
    for n, d in zip(pos, dfas):  # the result is a subset of d: equal when d minus the result is empty
        if empty(product([d, result], [False, True], keep, len(alphabet))):
            return n
    return to_ast(result, alphabet)
