"""Backends: what a replica calls to turn prepared rows into results (the model sits behind this).

- `EngineBackend` wraps `engine.fast.Engine` (fast mode, continuous batching): chat template + tokenize
  (model/tokenizer.py `encode_prompt`, or `encode_messages` for a conversation), one `Request` per row with
  the row's seed and parameters (the job's, with the row's own settings applied: a per-row `temperature`
  through engine/params.py `temperature_schedule`, as the job's `generation.temperature`), decode, and hand
  the text to the structured-output check. Rows come as samples (pipeline/rows.py `samples`: n per input row,
  each its own seed), all in one `Engine.run`. `generation.stop` (and a row's own `stop`) become
  `Request.stop` with an Engine that detokenizes as the output text is decoded; a stopped row's text is the
  engine's cut text. `generation.logprobs` asks each Request for its tokens' log-probabilities. A row whose
  settings the engine refuses (t_max below the schedule's t_min, ...) is an error row. `generation.pins`: a
  row's template (pipeline/pin_templates.py) becomes `Request.pins`, and its constraint hook honours them
  (constraints/hook.py `with_pins`); an unusable template, or one the constraint forbids, is an error row.
- `StubBackend` costs a fixed time per row and echoes its prompt (a conversation as "role: content"
  lines, and the row's settings when it has any; `max_new_tokens` sets its token count); a prompt
  containing `poison_marker` kills the whole process (`os._exit`), one containing `raise_marker` raises,
  one containing `slow_marker` sleeps `slow_s` (a hung replica whose lease expires). It stands in for the
  model in tests, bench/pipeline_overhead.py and bench/chaos.py, so faults hit real processes without
  loading torch.

A backend is built inside the replica by a *factory*: a small picklable callable `factory(spec) -> Backend`,
so the driver ships a recipe, not a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pipeline.outputs import RowResult
from pipeline.rows import PreparedRow
from pipeline.spec import JobSpec
from pipeline.user_code import load_callable

if TYPE_CHECKING:
    from constraints import ConstraintHook
    from engine.params import GenerationParams


class Backend(Protocol):
    def generate(self, rows: list[PreparedRow]) -> list[RowResult]:
        """One result per row, same order. Per-row problems are error results; a raise fails the batch."""


@dataclass(frozen=True)
class StubBackendFactory:
    cost_per_row_s: float = 0.001
    tokens_per_row: int = 8
    poison_marker: str | None = "__POISON__"
    raise_marker: str | None = "__RAISE__"
    load_s: float = 0.0  # model-load time stand-in (paid once per replica)
    pid_dir: str | None = None  # each backend process touches <pid_dir>/<pid> (fault tests find replicas)
    # A prompt containing slow_marker sleeps slow_s before its row (0: the marker does nothing). With
    # slow_dir, only its first slow_tries tries are slow, counted across processes by files created there,
    # so a row that outlives its lease once is generated normally when retried; without, it is slow every
    # time and ends as an error row after max_attempts, like a poison row.
    slow_marker: str | None = "__SLOW__"
    slow_s: float = 0.0
    slow_dir: str | None = None
    slow_tries: int = 1

    def __call__(self, spec: JobSpec) -> StubBackend:
        return StubBackend(self)


class StubBackend:
    """Fixed cost per row; deterministic text from (prompt, seed); poison rows crash the process."""

    def __init__(self, cfg: StubBackendFactory):
        self.cfg = cfg
        if cfg.pid_dir:
            os.makedirs(cfg.pid_dir, exist_ok=True)
            open(os.path.join(cfg.pid_dir, str(os.getpid())), "w").close()
        if cfg.load_s:
            time.sleep(cfg.load_s)

    def generate(self, rows: list[PreparedRow]) -> list[RowResult]:
        out = []
        for r in rows:
            prompt = r.prompt if r.messages is None else "\n".join(f"{t['role']}: {t['content']}"
                                                                   for t in r.messages)
            assert prompt is not None
            if self.cfg.poison_marker and self.cfg.poison_marker in prompt:
                os._exit(77)  # a hard crash, like a segfault in a kernel: no exception, no cleanup
            if self.cfg.raise_marker and self.cfg.raise_marker in prompt:
                raise RuntimeError(f"stub backend asked to fail on row {r.id}")
            if self.cfg.slow_s and self.cfg.slow_marker and self.cfg.slow_marker in prompt \
                    and self._slow_try(r.id):
                time.sleep(self.cfg.slow_s)
            t0 = time.perf_counter()
            if self.cfg.cost_per_row_s:
                time.sleep(self.cfg.cost_per_row_s)
            tag = hashlib.blake2b(f"{prompt}\x1f{r.seed}".encode(), digest_size=4).hexdigest()
            text = f"echo[{tag}]: {prompt[:40]}"
            if r.settings:
                text += f" {json.dumps(r.settings, sort_keys=True)}"
            n = (r.settings or {}).get("max_new_tokens", self.cfg.tokens_per_row)
            out.append(RowResult(text=text, num_tokens=n, canvases=1,
                                 denoising_steps=max(1, n // 2), tokens_per_forward=n / max(1, n // 2),
                                 latency_s=time.perf_counter() - t0))
        return out

    def _slow_try(self, row_id: str) -> bool:
        """Whether this try of a slow row is slow: one of its first `slow_tries` (claimed by O_EXCL files)."""
        if not self.cfg.slow_dir:
            return True
        os.makedirs(self.cfg.slow_dir, exist_ok=True)
        key = hashlib.blake2b(row_id.encode(), digest_size=8).hexdigest()
        for i in range(self.cfg.slow_tries):
            try:
                os.close(os.open(os.path.join(self.cfg.slow_dir, f"{key}.{i}"), os.O_CREAT | os.O_EXCL))
                return True
            except FileExistsError:
                continue
        return False


@dataclass(frozen=True)
class EngineBackendFactory:
    """Builds an EngineBackend for `spec.model` (path resolved by pipeline.model_path)."""

    def __call__(self, spec: JobSpec) -> EngineBackend:
        return EngineBackend(spec)


class EngineBackend:
    """The DiffusionGemma fast engine behind the Backend interface (engine/request.py, engine/fast.py)."""

    def __init__(self, spec: JobSpec):
        import torch

        from pipeline.model_path import load_model_and_tokenizer

        if os.environ.get("DGBATCH_TORCH_THREADS"):
            torch.set_num_threads(int(os.environ["DGBATCH_TORCH_THREADS"]))
        self.spec = spec
        self.model, self.tokenizer, self.model_dir = load_model_and_tokenizer(spec.model)
        from engine.fast import Engine
        from engine.params import GenerationParams, temperature_schedule

        gen = spec.generation
        self.base = GenerationParams.from_model(self.model, **gen.engine_overrides())  # a row's T scales it
        self.params = self.base
        if gen.temperature is not None:
            t_max, t_min = temperature_schedule(gen.temperature, self.base.t_max, self.base.t_min)
            self.params = self.base.with_(t_max=t_max, t_min=t_min)
        self.engine = Engine(self.model, max_batch_rows=spec.resources.batch_size,
                             detokenize=self._detokenize)
        self.max_positions = int(self.model.config.text.max_position_embeddings)
        self.hooks = _constraint_hooks(spec, self.tokenizer, self.model, self.params.max_new_tokens)
        self._row_params: dict[tuple, GenerationParams] = {}  # a row's settings -> its parameters

    def _detokenize(self, token_ids: list[int]) -> str:
        """Token ids -> output text, as a row's text is decoded (for stop strings)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _encode(self, row: PreparedRow) -> list[int]:
        from model.tokenizer import encode_messages, encode_prompt

        if row.messages is not None:
            return encode_messages(self.tokenizer, row.messages)
        return encode_prompt(self.tokenizer, row.prompt or "", chat=self.spec.input.chat)

    def _params(self, row: PreparedRow) -> GenerationParams:
        """The job's parameters with the row's settings applied (ValueError when the engine refuses them)."""
        settings = {k: v for k, v in (row.settings or {}).items() if k != "stop"}
        if not settings:
            return self.params
        key = tuple(sorted(settings.items()))
        if key not in self._row_params:
            from engine.params import temperature_schedule

            over, base = settings, self.params
            if "temperature" in over:
                base = self.base  # a row's temperature scales the checkpoint's schedule, not the job's
                over["t_max"], over["t_min"] = temperature_schedule(over.pop("temperature"), base.t_max,
                                                                    base.t_min)
            self._row_params[key] = base.with_(**over)
        return self._row_params[key]

    def _pins(self, row: PreparedRow, params: GenerationParams, hook):
        """(Pins, hook honouring them) of a row's template (generation.pins), or (why not, hook)."""
        from constraints.hook import InfeasibleConstraint
        from pipeline.pin_templates import template_pins

        spec = self.spec.generation.pins
        template = (row.extra or {}).get(spec.column)
        if spec.map is not None:
            try:
                template = load_callable(spec.map)(template)
            except Exception as exc:  # noqa: BLE001 - user code fails one row, never the job
                return f"column {spec.column}: pins.map {spec.map!r} raised {type(exc).__name__}: {exc}", hook
            if not isinstance(template, str):
                return (f"column {spec.column}: pins.map {spec.map!r} returned {type(template).__name__}, "
                        "not a str"), hook
        if not params.eos_token_ids:
            return "pins need the checkpoint's EOS token ids (one is pinned after the template)", hook
        try:
            encode = lambda s: self.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
            tp = template_pins(spec.form, template, encode, params.eos_token_ids[0])
        except ValueError as exc:
            return f"column {spec.column}: {exc}", hook
        if tp.tokens_needed > params.max_new_tokens:
            return (f"column {spec.column}: the template needs {tp.tokens_needed} tokens, over "
                    f"max_new_tokens {params.max_new_tokens}"), hook
        if hook is None:
            return tp.pins, None
        try:
            return tp.pins, hook.with_pins(tp.pins, params.max_new_tokens)
        except InfeasibleConstraint as exc:
            return f"column {spec.column}: {exc}", hook

    def generate(self, rows: list[PreparedRow]) -> list[RowResult]:
        from engine.fast import Request

        results: dict[str, RowResult] = {}
        requests, by_key = [], {}
        for i, r in enumerate(rows):
            key = f"{i}"  # row ids may repeat across files; the engine needs unique request ids
            try:
                params = self._params(r)
            except ValueError as exc:  # settings the engine refuses are that row's error
                results[key] = RowResult(status="error", error=f"row {r.id}: settings {r.settings}: {exc}")
                continue
            try:
                ids = self._encode(r)
            except Exception as exc:  # noqa: BLE001 - a row the tokenizer refuses is that row's error
                results[key] = RowResult(status="error", error=f"row {r.id}: cannot tokenize: {exc}")
                continue
            if len(ids) + params.max_new_tokens > self.max_positions:
                results[key] = RowResult(status="error", error=(
                    f"row {r.id}: prompt too long: {len(ids)} tokens + max_new_tokens "
                    f"{params.max_new_tokens} exceeds the model's {self.max_positions} positions"))
                continue
            hook = self.hooks.for_row(r, params.max_new_tokens) if self.hooks else None
            if isinstance(hook, str):  # the constraint could not be built for this row
                results[key] = RowResult(status="error", error=f"row {r.id}: {hook}")
                continue
            pins = None
            if self.spec.generation.pins is not None:
                pins, hook = self._pins(r, params, hook)
                if isinstance(pins, str):  # the row's template is unusable (or the constraint forbids it)
                    results[key] = RowResult(status="error", error=f"row {r.id}: {pins}")
                    continue
            if self.hooks is not None and hook is not None:
                hook = self.hooks.grouped(hook, pins, params.max_new_tokens)
                if isinstance(hook, str):  # its pins break structured_output.all_different
                    results[key] = RowResult(status="error", error=f"row {r.id}: {hook}")
                    continue
            stop = tuple((r.settings or {}).get("stop", self.spec.generation.stop))
            if stop and hook is not None:  # the job-level pair is refused by the spec (pipeline/spec.py)
                why = "stop strings cannot be used with structured output"
                results[key] = RowResult(status="error", error=f"row {r.id}: {why}")
                continue
            requests.append(Request(id=key, input_ids=ids, seed=r.seed, params=params, commit_hook=hook,
                                    logprobs=self.spec.generation.logprobs, stop=stop, pins=pins))
            by_key[key] = (r, hook)
        t0 = time.perf_counter()
        for c in self.engine.run(requests):
            latency = time.perf_counter() - t0
            row, hook = by_key[c.id]
            if c.finish_reason == "error":
                results[c.id] = RowResult(status="error", error=f"row {row.id}: {c.error}", latency_s=latency)
                continue
            text = self.hooks.text(hook, c.token_ids) if self.hooks else None
            if text is None and c.finish_reason == "stop":
                text = c.text  # cut before the stop string (the tokens may run past it)
            if text is None:
                text = self.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            res = RowResult(text=text, num_tokens=c.num_tokens, canvases=c.canvases,
                            denoising_steps=c.denoising_steps, tokens_per_forward=c.tokens_per_forward,
                            latency_s=latency, logprobs=c.logprobs)
            if self.hooks:
                res.status, res.json, res.error = self.hooks.check(row, text, c)
            labels = self.spec.structured_output.choice if self.spec.structured_output else None
            scores = getattr(c.hook_state, "label_scores", None)  # the choice hook's state (constraints)
            if labels is not None and self.spec.generation.logprobs and scores is not None:
                res.choice_scores = [float(scores.get(label, float("-inf"))) for label in labels]
            results[c.id] = res
        return [results[f"{i}"] for i in range(len(rows))]


class _ConstraintHooks:
    """The replica's structured output: one ConstraintCache (bounded automata and vocabularies, created once
    per replica) behind build_hook, decode_text and check_output (constraints/__init__.py). constraints is
    imported where used, like the engine: it loads torch, which StubBackend replicas never need."""

    def __init__(self, spec: JobSpec, tokenizer, model_config, max_new_tokens: int):
        from constraints import ConstraintCache

        self.section, self.tokenizer, self.model_config = spec.structured_output, tokenizer, model_config
        self.max_new_tokens = max_new_tokens
        self.cache = ConstraintCache()
        self.per_row = self.section.schema_column is not None
        # A constraint shared by all rows is compiled once per replica; failing here fails the job up front.
        self.shared = None if self.per_row else self._build(None, max_new_tokens)
        self.budgets: dict[int, ConstraintHook | str] = {}  # the shared constraint at rows' own max_tokens
        # structured_output.all_different around every row's hook; a bad section fails the job up front
        groups = self.section.all_different
        self.groups = None if groups is None else groups.resolve(
            lambda s: tokenizer.encode(s, add_special_tokens=False))

    def grouped(self, hook, pins, max_new_tokens: int):
        """The row's hook held to structured_output.all_different too (the hook itself without one), or why
        not (its pins break the groups, or a group lies past its max_new_tokens): that row's error."""
        from constraints.all_different import AllDifferent

        if self.groups is None:
            return hook
        try:
            return AllDifferent(self.groups, max_new_tokens=max_new_tokens, inner=hook,
                                pins_tokens=() if pins is None else pins.tokens)
        except ValueError as exc:
            return str(exc)

    def _build(self, row: PreparedRow | None, max_new_tokens: int) -> ConstraintHook:
        from constraints import build_hook

        # the EOS ids, canvas length and pad id come from the model config
        return build_hook(self.section, self.tokenizer, self.model_config,
                          max_new_tokens=max_new_tokens, row=row, cache=self.cache)

    def for_row(self, row: PreparedRow, max_new_tokens: int | None = None) -> ConstraintHook | str:
        """The row's hook at its token budget (None: the job's), or why there is none (that row's error)."""
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not self.per_row and max_new_tokens == self.max_new_tokens:
            return self.shared
        if not self.per_row:  # a row's own max_tokens: the same automaton, its own length check
            if max_new_tokens not in self.budgets:
                try:
                    self.budgets[max_new_tokens] = self._build(None, max_new_tokens)
                except Exception as exc:  # noqa: BLE001 - too short for the constraint: that row's error
                    self.budgets[max_new_tokens] = f"max_new_tokens {max_new_tokens}: {exc}"
            return self.budgets[max_new_tokens]
        try:
            return self._build(row, max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - a bad per-row schema is that row's error
            return f"schema in column {self.section.schema_column!r} unusable: {exc}"

    def text(self, hook: ConstraintHook | None, token_ids: list[int]) -> str | None:
        """Exact text of a constrained row (None without a hook: the tokenizer decodes it)."""
        from constraints import decode_text

        return decode_text(hook, token_ids) if hook is not None else None

    def check(self, row: PreparedRow, text: str, completion) -> tuple[str, str | None, str | None]:
        """(status, json, error) for a finished row."""
        from constraints import check_output

        return check_output(self.section, text, completion, row=row)


def _constraint_hooks(spec: JobSpec, tokenizer, model, max_new_tokens: int) -> _ConstraintHooks | None:
    if spec.structured_output is None:
        return None
    return _ConstraintHooks(spec, tokenizer, model.config, max_new_tokens)
