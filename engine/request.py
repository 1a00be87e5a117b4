"""Request and Completion: what the pipeline hands the fast engine and what it gets back.

Owns the two records only; engine/fast.py runs them. A Completion is produced for every Request, including
per-row failures (finish_reason "error" with a message), so rows in == rows out.

Opt-in per row: `logprobs` (each returned token's log-probability under the distribution its commit read:
engine/commit_hook.py says which) and `stop` strings (engine/stop_strings.py: the row ends at the first
occurrence, finish_reason "stop"; the engine needs a `detokenize`), and `pins` (canvas tokens fixed before
denoising: engine/pins.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.commit_hook import CommitHook
from engine.params import GenerationParams
from engine.pins import Pins


@dataclass
class Request:
    id: str
    input_ids: list[int]  # already chat-templated and tokenized (no padding)
    seed: int  # per-row seed; output depends only on (model, input_ids, params, seed, hook)
    params: GenerationParams
    commit_hook: CommitHook | None = None  # None -> argmax commit
    logprobs: bool = False  # report Completion.logprobs
    stop: tuple[str, ...] = ()  # stop strings (vLLM's `stop`); needs Engine(detokenize=...)
    pins: Pins | None = None  # output tokens fixed before denoising (None: none)


@dataclass
class Completion:
    id: str
    token_ids: list[int]  # new tokens only, pads/after-EOS removed, EOS excluded
    finish_reason: str  # "eos" | "length" | "stop" | "error"
    num_tokens: int
    canvases: int
    denoising_steps: int  # decoder forwards this row took part in (not frozen)
    tokens_per_forward: float
    error: str | None = None
    hook_state: object | None = None
    canvas_tokens: list[int] | None = None  # committed canvases as they entered the sequence (pads included)
    logprobs: list[float] | None = None  # Request.logprobs: one per token_ids entry
    text: str | None = None  # finish_reason "stop": the output text, cut before the stop string (decoding
    # token_ids may run past the cut when the stop string starts inside a token)
    stop_reason: str | None = None  # finish_reason "stop": the stop string that ended the row
