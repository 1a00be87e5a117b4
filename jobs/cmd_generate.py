"""`dgbatch generate`: generate answers for a few prompts from a checkpoint directory (a quick check).

Owns the flag -> generate() mapping for interactive use. Prints one answer per prompt; when stdout is a
terminal it also redraws the decoded argmax canvas after every denoising step (a live view of the
denoising), which costs one device read per step and is therefore off when output is piped.
Structured output takes the job spec's options as flags (--json-schema, --pydantic, --regex, --choice,
--steering): every answer then validates, and a choice answer also prints its per-label scores.
Error messages are printed scrubbed of secret-shaped text (a model URL's user info, a signed query:
pipeline/redact.py); prompts and answers are the user's own text and are printed as they are.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory or fsspec URL")
    parser.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="max denoising steps per canvas")
    parser.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--quantization", choices=("fp8", "w4a16"), default=None,
                        help="quantize a bf16 checkpoint as it loads (compressed-tensors checkpoints load "
                             "quantized without this)")
    so = parser.add_argument_group("structured output (at most one; the answer always validates)")
    ex = so.add_mutually_exclusive_group()
    ex.add_argument("--json-schema", help="a JSON Schema: inline JSON, or a file path / fsspec URL")
    ex.add_argument("--pydantic", help="module:ClassName of a pydantic model")
    ex.add_argument("--regex", help="the answer is a full match of this regex")
    ex.add_argument("--choice", action="append", help="one allowed answer (repeat for each)")
    so.add_argument("--steering", default="off", help="per-step steering: off (default), valid_sampling, all")
    parser.add_argument(
        "--live",
        choices=("auto", "on", "off"),
        default="auto",
        help="live canvas view (auto: only when stdout is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.params import GenerationParams
    from model import DiffusionGemma, load_tokenizer
    from model.tokenizer import encode_prompt
    from pipeline.redact import scrub

    torch.set_num_threads(1)
    try:
        model = DiffusionGemma.from_pretrained(args.model, dtype=getattr(torch, args.dtype),
                                               quantization=args.quantization).eval()
        tok = load_tokenizer(args.model)
    except (OSError, ValueError) as e:
        print(scrub(f"dgbatch generate: cannot load {args.model}: {e}"), file=sys.stderr)
        return 2
    try:
        params = GenerationParams.from_model(
            model, max_new_tokens=args.max_new_tokens, max_denoising_steps=args.steps
        )
        ids = [encode_prompt(tok, p, chat=not args.no_chat) for p in args.prompt]
    except ValueError as e:
        print(scrub(f"dgbatch generate: {e}"), file=sys.stderr)
        return 2
    try:
        section, hook = _constraint(args, tok, model, params)
    except (OSError, ValueError, ImportError) as e:  # unsupported keyword, too short a budget, bad file
        print(scrub(f"dgbatch generate: structured output: {e}"), file=sys.stderr)
        return 2
    live = args.live == "on" or (args.live == "auto" and sys.stdout.isatty())
    view = _LiveView(tok, len(ids)) if live else None
    answers, states = _generate(model, ids, params, args, view, hook)
    if view is not None:
        view.clear()
    for i, (prompt, toks, state) in enumerate(zip(args.prompt, answers, states)):
        if hook is None:
            print(f"=== [{i}] {prompt}\n{tok.decode(toks, skip_special_tokens=True)}")
            continue
        from constraints import check_output, choice_json, decode_text

        text = decode_text(hook, toks)
        status, _, err = check_output(section, text)
        print(f"=== [{i}] {prompt}\n{text}")
        if status != "ok":
            print(scrub(f"dgbatch generate: answer {i}: {err}"), file=sys.stderr)
            return 1
        if section.get("choice") is not None:
            print(f"scores: {choice_json(text, state)}")
    return 0


def _constraint(args, tok, model, params):
    """(section dict, ConstraintHook) from the structured-output flags, or (None, None) without any."""
    section = {k: getattr(args, k) for k in ("json_schema", "pydantic", "regex", "choice")
               if getattr(args, k) is not None}
    if not section:
        if args.steering != "off":
            raise ValueError("--steering needs a constraint (--json-schema, --pydantic, --regex or --choice)")
        return None, None
    from constraints import as_section, build_hook

    section = as_section({**section, "steering": args.steering})  # loads a schema file / URL
    hook = build_hook(section, tok, model.config, max_new_tokens=params.max_new_tokens)
    return section, hook


def _generate(model, ids: list[list[int]], params, args, view, hook=None) -> tuple[list[list[int]], list]:
    """Answers' token ids and, per answer, the final constraint state (fast mode; None otherwise)."""
    from engine.fast import Engine, Request
    from engine.generate import generate
    from engine.params import until_stop
    from model.tokenizer import left_pad
    from pipeline.redact import scrub

    if args.mode == "fast":
        reqs = [Request(str(i), x, args.seed + i, params, commit_hook=hook) for i, x in enumerate(ids)]
        cb = None
        if view is not None:

            def cb(req_ids, argmax_BC):
                view.draw({int(r): row for r, row in zip(req_ids, argmax_BC.tolist())})

        comps = Engine(model, max_batch_rows=len(reqs), on_step=cb).generate(reqs)
        out = []
        for c in comps:
            if c.finish_reason == "error":
                raise SystemExit(scrub(f"dgbatch generate: prompt {c.id}: {c.error}"))
            out.append(c.token_ids)
        return out, [c.hook_state for c in comps]
    input_ids, valid = left_pad(ids, params.pad_token_id if params.pad_token_id is not None else 0)
    L = input_ids.shape[1]
    cb = None
    if view is not None:

        def cb(argmax_BC, canvas, steps_left):
            view.draw(dict(enumerate(argmax_BC.tolist())))

    seqs = generate(
        model,
        input_ids,
        valid,
        mode="reference",
        seed=args.seed,
        on_step=cb,
        max_new_tokens=params.max_new_tokens,
        max_denoising_steps=params.max_denoising_steps,
        commit_hook=hook,
    )
    out = [until_stop(row, params.eos_token_ids) for row in seqs[:, L:].tolist()]
    return out, [None] * len(out)


class _LiveView:
    """Redraws one line per prompt with the decoded draft (argmax) canvas, in place (ANSI cursor moves)."""

    def __init__(self, tok, rows: int):
        self.tok, self.rows, self.drawn = tok, rows, 0
        self.text = [""] * rows

    def draw(self, drafts: dict[int, list[int]]) -> None:
        for r, ids in drafts.items():
            self.text[r] = self.tok.decode(ids, skip_special_tokens=True).replace("\n", " ")[:100]
        out = sys.stdout
        if self.drawn:
            out.write(f"\x1b[{self.drawn}F")
        for r in range(self.rows):
            out.write(f"\x1b[2K[{r}] {self.text[r]}\n")
        self.drawn = self.rows
        out.flush()

    def clear(self) -> None:
        if self.drawn:
            sys.stdout.write(f"\x1b[{self.drawn}F\x1b[J")
            sys.stdout.flush()
