"""`$ref` resolution state: what counts as recursion, how deep it unrolls, and memoised ref targets.

Only real recursion is bounded: a `$ref` is refused (RefBound) when its target is already on the current
resolution stack `bound` times, however deep the schema nests otherwise (Kubernetes definitions are deep but
acyclic: they never hit the bound). The stack holds the refs being translated on the way from the root to
the current subschema; schema_regex.py `_Translator.value` opens a frame per subschema, and every ref
resolved inside it (its own `$ref`, an allOf part's, a oneOf branch's) is popped when that subschema is done.

At the bound a recursive schema must still end: RefBound is an Unsatisfiable for the translation, so the
places that already drop an alternative no value satisfies drop it here too (an optional property, an
anyOf/oneOf branch, the items of an array that may be empty). What is generated is then the unrolled
schema's terminating part, a subset of the valid values, which keeps the promise "every output validates".
When no terminating choice exists (a required recursive property, say) the RefBound reaches the top and the
schema is refused with a message naming the $ref and the bound. Callers must treat RefBound only as "we
generate nothing here", never as proof that no value validates (e.g. to decide `not` or `if`).

Unrolling multiplies the regex (each level holds every recursive slot's next level), and a large regex is
slow to compile into the token automaton. So each $ref's regex is held to REGEX_BUDGET characters: with the
default depth, `unroll` retries with a smaller depth (down to 1, the target once, never inside itself); an
explicit depth is used as given. When even that is over the budget, a last pass leaves out the optional
properties whose values alone are too large and union branches (reported as `left_out`, schema_regex.py),
and only when what is too large is required is the schema refused, naming the $ref or the part.

The regex of a bare `$ref` depends only on its target, the translator's settings and how often each ref the
target can reach is on the stack, so it is memoised under that key: a definition shared by many parents is
translated once (DAG-shaped schemas would otherwise be translated once per path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote

from constraints.budget import MAX_REGEX_CHARS, TooLarge
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema

REF_DEPTH = 3  # default bound: how many times one $ref target may be on the resolution stack at once
# Largest regex (characters) one $ref may expand to: budget.py's MAX_REGEX_CHARS, since the automaton build
# (constraints/byte_automaton.py, composed_dfa.py) is now bounded by states, not characters. Measured on the
# shipped tokenizer (2-core box): the refs this admits on the JSONSchemaBench sample compile in 1.4-3.7 s.
REGEX_BUDGET = MAX_REGEX_CHARS
_ANNOTATIONS = {"title", "description", "$comment", "examples", "default", "deprecated", "readOnly"}


class RefBound(Unsatisfiable):
    """A recursive $ref reached the unrolling bound: nothing is generated along this path."""


class RefBudget(Exception):
    """A $ref's regex is over REGEX_BUDGET (not an UnsupportedSchema: nothing drops it; `unroll` decides)."""

    def __init__(self, ref, size: int, path: str, recursive: bool):
        super().__init__(f"$ref {ref!r} regex of {size} characters (at {path})")
        self.ref, self.size, self.path, self.recursive = ref, size, path, recursive


def unroll(translate: Callable[[int, bool], str], ref_depth: int | None) -> str:
    """translate(depth, leave_out_large) at `ref_depth`; None: the largest depth <= REF_DEPTH whose regex
    fits the budget, and when none fits, one last pass at the smallest depth with leave_out_large=True: the
    translation then leaves out an optional property whose value alone is too large (a subset of the valid
    objects, so still sound) instead of refusing the schema."""
    depths = [ref_depth] if ref_depth is not None else list(range(REF_DEPTH, 0, -1))
    for depth in depths:
        try:
            return translate(depth, False)
        except TooLarge as e:  # the automaton-size guard (budget.py): a smaller unrolling may fit
            if e.recursive and depth != depths[-1]:
                continue
            too_large: Exception = e
            break
        except RefBudget as e:
            too_large = e
            if not e.recursive:
                break  # a smaller depth changes nothing when no $ref was unrolled
    if ref_depth is None:  # an explicit depth is the user's: refused as given, they may lower it
        try:
            return translate(depth, True)
        except (TooLarge, RefBudget):
            pass  # what is too large is not an optional property: refuse, naming the first size problem
    if isinstance(too_large, TooLarge):
        raise too_large
    how = f"with ref depth {depth}" if too_large.recursive else "without recursion"
    raise UnsupportedSchema(
        f"unsupported: $ref {too_large.ref!r} expands to a regex over {REGEX_BUDGET} characters "
        f"({too_large.size}) {how}, too large to compile (at {too_large.path})"
    )


def pointer(root, ref, path: str):
    """The subschema a local `$ref` ("#/a/b", "#") names in `root`; UnsupportedSchema when it cannot."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise UnsupportedSchema(f"unsupported: non-local $ref {ref!r} (at {path})")
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        # a URI fragment is percent-encoded, then a JSON pointer (RFC 6901 section 6: "%3A" is ":")
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict) or part not in node:
            raise UnsupportedSchema(f"unsupported: unresolvable $ref {ref!r} (at {path})")
        node = node[part]
    return node


def _refs_in(node) -> set[str]:
    """Every `$ref` string anywhere inside `node` (a superset of those translation will follow)."""
    out: set[str] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, dict):
            if isinstance(n.get("$ref"), str):
                out.add(n["$ref"])
            todo.extend(n.values())
        elif isinstance(n, list):
            todo.extend(n)
    return out


class RefStack:
    """The translation's $ref stack, its recursion bound, and the memo of bare-$ref regexes."""

    def __init__(self, root, bound: int = REF_DEPTH):
        if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
            raise ValueError(f"ref depth: expected an integer >= 1, got {bound!r}")
        self.root, self.bound, self.budget = root, bound, REGEX_BUDGET
        self.stack: list[str] = []
        self.recursive = False  # some target was entered while already on the stack
        self._reach: dict[str, frozenset[str]] = {}
        self._memo: dict[tuple, str | Unsatisfiable] = {}

    @contextmanager
    def frame(self) -> Iterator[None]:
        """Refs entered inside the block are popped when it ends (one frame per translated subschema)."""
        mark = len(self.stack)
        try:
            yield
        finally:
            del self.stack[mark:]

    def enter(self, ref: str, path: str) -> None:
        """Push `ref`, or raise RefBound when its target is already on the stack `bound` times."""
        n = self.stack.count(ref)
        self.recursive |= n > 0
        if n >= self.bound:
            raise RefBound(
                f"unsupported: $ref recursion deeper than {self.bound} (the ref-depth bound, "
                f"--ref-depth) for {ref!r}, with no terminating choice at the bound (at {path})"
            )
        self.stack.append(ref)

    def reach(self, ref: str) -> frozenset[str]:
        """The refs reachable from `ref`'s target (itself included when it is recursive)."""
        hit = self._reach.get(ref)
        if hit is not None:
            return hit
        seen: set[str] = set()
        todo = [ref]
        while todo:
            r = todo.pop()
            try:
                found = _refs_in(pointer(self.root, r, "#"))
            except UnsupportedSchema:
                continue  # translation names the unresolvable ref when it gets there
            for x in found - seen:
                seen.add(x)
                todo.append(x)
        self._reach[ref] = out = frozenset(seen)
        return out

    def follow(self, s: dict, path: str, build: Callable[[], str]) -> str:
        """build()'s regex for the subschema `s` (which has a $ref), memoised when `s` is a bare $ref.

        RefBudget when the regex is over the budget.
        """
        ref = s["$ref"]
        if not isinstance(ref, str) or set(s) - _ANNOTATIONS - {"$ref"}:
            return self._checked(ref, build(), path)
        reach = self.reach(ref)
        key = (ref, tuple(sorted((r, self.stack.count(r)) for r in set(self.stack) if r in reach)))
        hit = self._memo.get(key)
        if isinstance(hit, Unsatisfiable):
            raise hit
        if hit is not None:
            return hit
        try:
            out = build()
        except Unsatisfiable as e:  # incl. RefBound: the same stack state gives the same verdict
            self._memo[key] = e
            raise
        self._memo[key] = out = self._checked(ref, out, path)
        return out

    def _checked(self, ref, regex: str, path: str) -> str:
        if len(regex) > self.budget:
            raise RefBudget(ref, len(regex), path, self.recursive)
        return regex
