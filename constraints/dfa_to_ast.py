"""A DFA over character classes -> an AST (ecma_regex.py nodes) of its language, by state elimination.

Kleene's construction in its state-elimination form (https://en.wikipedia.org/wiki/Kleene%27s_algorithm):
a fresh start and end are joined to the DFA by empty strings; states are then removed one at a time, each
path p -> s -> q becoming one label p -> q (s's self loop starred in between), until the label from start
to end is the whole language. The order matters for the size of the result: the state whose removal copies
the least (the sizes of its in-labels times its out-degree, and so on) goes first, kept in a heap as the
neighbours' costs change. Labels are simplified as they are built (single characters of an alternation
merged into one set, `x|` written `x?`); a result over MAX_NODES is refused (TooComplex).
"""

from __future__ import annotations

import heapq

from constraints.ecma_regex import EMPTY, Alt, Chars, Rep, Seq, norm
from constraints.schema_errors import UnsupportedSchema

MAX_NODES = 30_000  # AST nodes of the eliminated result


class TooComplex(UnsupportedSchema):
    """An automaton or the regex built from it is over its cap; the message names which."""


def _seq(*parts):
    items: list = []
    for p in parts:
        if isinstance(p, Seq):
            items.extend(p.items)
        else:
            items.append(p)
    return items[0] if len(items) == 1 else Seq(tuple(items))


def _alt(a, b):
    if a is None:
        return b
    items = list({id(x): x for x in _alts(a) + _alts(b)}.values())  # by identity: hashing is deep
    chars = [x for x in items if isinstance(x, Chars)]
    if len(chars) > 1:  # one character set for all single-character alternatives
        merged = Chars(norm(r for c in chars for r in c.must), norm(r for c in chars for r in c.may))
        items = [merged] + [x for x in items if not isinstance(x, Chars)]
    if EMPTY in items and len(items) > 1:  # x|'' is x?
        rest = [x for x in items if x != EMPTY]
        body = rest[0] if len(rest) == 1 else Alt(tuple(rest))
        return Rep(body, 0, 1) if not (isinstance(body, Rep) and body.lo == 0) else body
    return items[0] if len(items) == 1 else Alt(tuple(items))


def _alts(x) -> tuple:
    return x.items if isinstance(x, Alt) else (x,)


def _star(x):
    if isinstance(x, Rep) and x.lo in (0, 1) and x.hi in (1, None):  # (y?)* and (y+)* are y*
        x = x.item
    return Rep(x, 0, None)


def _weight(s: int, pred: dict, succ: dict, size: dict) -> int:
    """How much eliminating `s` adds: each in-label is copied once per out-label and vice versa."""
    ins = [p for p in pred.get(s, ()) if p != s]
    outs = [q for q in succ.get(s, ()) if q != s]
    loop = size.get((s, s), 0)
    return (
        sum(size[p, s] for p in ins) * (len(outs) - 1)
        + sum(size[s, q] for q in outs) * (len(ins) - 1)
        + loop * (len(ins) * len(outs) - 1)
    )


def to_ast(d, alphabet):
    """An AST of the language of `d` (char_automaton.py's DFA: `delta` rows of class -> state, `final`;
    trimmed, a final state reachable); `alphabet.ranges(classes)` gives the code points of classes."""
    n = len(d.final)
    start, end = n, n + 1  # fresh start and end states joined by empty strings
    label: dict[tuple[int, int], object] = {(start, 0): EMPTY}
    size: dict[tuple[int, int], int] = {(start, 0): 1}  # an upper bound of each label's AST nodes
    for s, row in enumerate(d.delta):
        by_dst: dict[int, list[int]] = {}
        for a, t in row.items():
            by_dst.setdefault(t, []).append(a)
        for t, atoms in by_dst.items():
            r = alphabet.ranges(atoms)
            label[s, t], size[s, t] = Chars(r, r), 1
        if d.final[s]:
            label[s, end], size[s, end] = EMPTY, 1
    succ: dict[int, set[int]] = {}
    pred: dict[int, set[int]] = {}
    for p, q in label:
        succ.setdefault(p, set()).add(q)
        pred.setdefault(q, set()).add(p)
    cost = {s: _weight(s, pred, succ, size) for s in range(n)}
    heap = [(w, s) for s, w in cost.items()]
    heapq.heapify(heap)
    while heap:
        w, s = heapq.heappop(heap)
        if cost.get(s) != w:  # eliminated, or its cost changed since (a newer entry is queued)
            continue
        del cost[s]
        loop = label.pop((s, s), None)
        mid = _star(loop) if loop is not None else None
        mid_size = size.pop((s, s), 0) + 1
        ins = [p for p in pred.get(s, ()) if p != s]
        outs = [q for q in succ.get(s, ()) if q != s]
        for p in ins:
            for q in outs:
                path = _seq(label[p, s], *([mid] if mid is not None else []), label[s, q])
                label[p, q] = _alt(label.get((p, q)), path)
                size[p, q] = size.get((p, q), 0) + size[p, s] + mid_size + size[s, q] + 2
                succ[p].add(q)
                pred[q].add(p)
                if size[p, q] > MAX_NODES:
                    raise TooComplex(f"unsupported: pattern combination over {MAX_NODES} regex nodes")
        for p in ins:
            label.pop((p, s))
            size.pop((p, s))
            succ[p].discard(s)
        for q in outs:
            label.pop((s, q))
            size.pop((s, q))
            pred[q].discard(s)
        succ.pop(s, None)
        pred.pop(s, None)
        for x in {*ins, *outs} & cost.keys():  # their labels changed: so did their cost
            cost[x] = _weight(x, pred, succ, size)
            heapq.heappush(heap, (cost[x], x))
    return label.get((start, end), EMPTY)
