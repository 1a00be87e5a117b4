"""Stop strings (Request.stop, vLLM's `stop`): where a row's output text ends, and which tokens it keeps.

Owns `find_stop`, the rule the fast engine (engine/fast.py) applies after each committed canvas of a row with
stop strings: decode the row's output so far (its tokens before the first EOS) with the engine's
`detokenize`, and if any stop string occurs, the row ends there with finish_reason "stop":
  - text: everything before the first occurrence of any stop string (the earliest position; at one
    position the stop string listed first), the stop string itself excluded, as vLLM's output text;
  - token_ids: the shortest prefix of the tokens whose decoded text starts with that text.
A stop string that starts inside a token (the token's text runs on into the stop string) keeps that token:
the text must contain everything before the stop string, so the tokens' decoded text may then run past the
cut by the rest of that token, and the Completion's `text` is the exact output. A whole canvas commits at
once, so the row ends after the canvas that completes the stop string (no more canvases are denoised).

Why a prefix search and not token-by-token arithmetic: decoders are not additive per token (a multi-byte
character split across tokens, a leading space dropped at the start), so the prefix is found by decoding
prefixes (binary search: about log2(n) decodes), assuming, as byte-level decoders give, that a longer prefix's
text extends a shorter one's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Detokenize = Callable[[list[int]], str]  # token ids -> text (the tokenizer's decode, as the caller wants it)


@dataclass(frozen=True)
class StopHit:
    n_tokens: int  # how many of the row's tokens it keeps
    text: str  # the output text: everything before the stop string
    stop: str  # the stop string that occurred first


def stop_problem(stop: object) -> str | None:
    """What is wrong with a Request's stop strings, or None (a tuple or list of non-empty strings)."""
    if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) and s for s in stop):
        return "stop must be a tuple of non-empty strings"
    return None


def find_stop(token_ids: list[int], stops: Sequence[str], detokenize: Detokenize) -> StopHit | None:
    """The first occurrence of any of `stops` in token_ids' decoded text, or None (see the module doc)."""
    text = detokenize(list(token_ids))
    best: tuple[int, str] | None = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is None:
        return None
    i, s = best
    head = text[:i]
    return StopHit(_shortest_prefix(token_ids, head, detokenize), head, s)


def _shortest_prefix(token_ids: list[int], head: str, detokenize: Detokenize) -> int:
    """Smallest k whose detokenize(token_ids[:k]) starts with `head` (k = len(token_ids) always does)."""
    lo, hi = -1, len(token_ids)  # detokenize(token_ids[:hi]) starts with head; lo: not known to
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if detokenize(list(token_ids[:mid])).startswith(head):
            hi = mid
        else:
            lo = mid
    return hi
