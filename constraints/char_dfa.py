"""The character DFA of constraints/char_automaton.py and its minimisation (Hopcroft's partition refinement).

Owns `DFA` (states 0..n-1 over character-class ids, 0 the start, a missing move rejects) and `minimize`,
which drops dead and unreachable states and merges equivalent ones, so a product of operands stays within
char_automaton's MAX_DFA and turns back into a short pattern (constraints/dfa_to_ast.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DFA:
    """States 0..n-1, 0 the start; `delta[s]` maps a class id to the next state (absent: reject)."""

    delta: list[dict[int, int]]
    final: list[bool]


def minimize(d: DFA) -> DFA:
    """`d` trimmed to states that reach a final state, then with equivalent states merged."""
    n = len(d.final)
    rev: list[set[int]] = [set() for _ in range(n)]
    for s, row in enumerate(d.delta):
        for t in row.values():
            rev[t].add(s)
    live = {s for s in range(n) if d.final[s]}
    todo = list(live)
    while todo:
        for s in rev[todo.pop()]:
            if s not in live:
                live.add(s)
                todo.append(s)
    if 0 not in live:
        return DFA([{}], [False])
    block = _hopcroft(d, sorted(live))
    renum: dict[int, int] = {block[0]: 0}
    for s in sorted(live):
        renum.setdefault(block[s], len(renum))
    delta: list[dict[int, int]] = [{} for _ in renum]
    final = [False] * len(renum)
    for s in live:
        b = renum[block[s]]
        final[b] = d.final[s]
        delta[b] = {a: renum[block[t]] for a, t in d.delta[s].items() if t in live}
    return DFA(delta, final)


def _hopcroft(d: DFA, live: list[int]) -> dict[int, int]:
    """Block id per live state, equal exactly for equivalent states (Hopcroft's partition refinement,
    https://en.wikipedia.org/wiki/DFA_minimization#Hopcroft's_algorithm); moves to non-live states are
    moves to one implicit dead state, -1."""
    inv: dict[tuple[int, int], list[int]] = {}  # (class, target) -> sources, the dead target included
    alphabet = sorted({a for s in live for a in d.delta[s]})
    live_set = set(live)
    for s in live:
        row = d.delta[s]
        for a in alphabet:
            t = row.get(a, -1)
            inv.setdefault((a, t if t in live_set else -1), []).append(s)
    for a in alphabet:
        inv.setdefault((a, -1), []).append(-1)
    finals = [s for s in live if d.final[s]]
    others = [s for s in live if not d.final[s]] + [-1]
    blocks = [set(finals), set(others)]
    block_of = {s: i for i, b in enumerate(blocks) for s in b}
    work = [0] if len(finals) <= len(others) else [1]
    queued = set(work)
    while work:
        w = work.pop()
        queued.discard(w)
        target = list(blocks[w])
        for a in alphabet:
            hit: dict[int, list[int]] = {}
            for t in target:
                for s in inv.get((a, t), ()):
                    hit.setdefault(block_of[s], []).append(s)
            for y, inter in hit.items():
                if len(inter) == len(blocks[y]):
                    continue
                new = len(blocks)
                blocks.append(set(inter))
                blocks[y] -= blocks[new]
                for s in inter:
                    block_of[s] = new
                if y in queued or len(blocks[new]) <= len(blocks[y]):
                    work.append(new)
                    queued.add(new)
                else:
                    work.append(y)
                    queued.add(y)
    return {s: block_of[s] for s in live}
