"""`dgbatch check-schema FILE... [--model DIR]`: is each JSON Schema supported, how big, does output validate.

Per schema: supported or the unsupported keyword, compile time, DFA size (states / token classes / class
edges), the minimum output length, and whether an output generated under it validates (random logits
through the commit DP, or the model's own logits with --model). Each schema is checked in a worker process
with a timeout and a memory bound, so one pathological schema is reported as a timeout, not a hang.
A summary line gives the shares. Exit status 0 when every schema is supported and valid, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="JSON Schema files (or directories of *.json)")
    parser.add_argument("--model", help="model directory: use its tokenizer and generate with the model")
    parser.add_argument(
        "--tokenizer", help="tokenizer.json to compile against (default: the shipped model's)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per schema (compile + generate)")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space bound per worker")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--canvas-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ref-depth",
        type=int,
        default=None,
        help="unroll a recursive $ref at most this many times on a path (default: the most, up to "
        "constraints/refs.py REF_DEPTH, whose regex fits the size budget)",
    )
    parser.add_argument(
        "--walks",
        type=int,
        default=0,
        help="also validate N random words of the compiled automaton (walks.py), within the token budget",
    )
    parser.add_argument("--jsonl", help="also write one JSON result per schema to this file")


def schema_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    return out


def check_one(
    schema,
    vocab,
    eos_ids,
    *,
    max_new_tokens: int,
    canvas_length: int,
    seed: int,
    generate=None,
    ref_depth: int | None = None,
    walks: int = 0,
) -> dict:
    """Compile `schema` against the byte vocabulary and generate once; never raises for a schema problem.

    walks > 0: also validate that many random words of the token automaton (constraints/walks.py);
    the first one that fails is reported as the counterexample.
    """
    import torch

    from constraints import UnsupportedSchema, validate_output
    from constraints.dfa import build_token_dfa
    from constraints.hook import ConstraintHook
    from constraints.schema_regex import translate_schema

    res: dict = {"supported": False}
    t0 = time.perf_counter()
    try:
        translated = translate_schema(schema, ref_depth=ref_depth)
        dfa = build_token_dfa(translated.regex, vocab, eos_ids)
    except UnsupportedSchema as e:
        return {**res, "error": str(e)}
    except (ValueError, RecursionError) as e:
        return {**res, "error": f"compile: {e}"}
    res.update(
        supported=True,
        compile_s=round(time.perf_counter() - t0, 3),
        states=dfa.n_states,
        classes=dfa.n_classes,
        edges=int(dfa.edge_src.size),
        min_tokens=int(dfa.dist[0]),
    )
    if translated.left_out:
        res["left_out"] = list(translated.left_out)
    budget = max(max_new_tokens, int(dfa.dist[0]))
    hook = ConstraintHook(dfa, pad_token_id=0, max_new_tokens=budget, canvas_length=canvas_length)
    t1 = time.perf_counter()
    if generate is not None:
        tokens = generate(hook, budget)
    else:
        g = torch.Generator().manual_seed(seed)
        state, tokens, left = hook.initial_state(), [], budget
        while left > 0:
            logits = torch.randn(canvas_length, len(vocab), generator=g) * 4
            out, state, finished = hook.commit(
                logits, state, tokens_left=left, last_canvas=left <= canvas_length
            )
            tokens += out[: min(canvas_length, left)].tolist()
            left -= canvas_length
            if finished:
                break
    text = b"".join(vocab[t] or b"" for t in tokens if t not in eos_ids).decode("utf-8")
    ok, _, err = validate_output({"json_schema": schema}, text)
    res.update(generate_s=round(time.perf_counter() - t1, 3), valid=ok, tokens=len(tokens), text=text[:200])
    if not ok:
        res["error"] = f"INVALID OUTPUT (a bug): {err}"
    if walks > 0:
        res.update(_check_walks(schema, dfa, vocab, walks, budget=budget, seed=seed))
    return res


def _check_walks(schema, dfa, vocab, n: int, *, budget: int, seed: int) -> dict:
    """Validate n random words of the automaton; the counts and the first invalid one (if any)."""
    from constraints import validate_output
    from constraints.walks import decode, token_walks

    t0 = time.perf_counter()
    bad, first = 0, None
    for tokens in token_walks(dfa, vocab, n, budget=budget, seed=seed):
        try:
            text = decode(tokens, vocab)
        except UnicodeDecodeError as e:
            ok, err, text = False, f"not UTF-8: {e}", repr(b"".join(vocab[t] or b"" for t in tokens))
        else:
            ok, _, err = validate_output({"json_schema": schema}, text)
        if not ok:
            bad += 1
            first = first or {"text": text[:500], "why": err}
    out: dict = {"walks": n, "walks_invalid": bad, "walks_s": round(time.perf_counter() - t0, 3)}
    if first:
        out.update(valid=False, counterexample=first)
        out["error"] = f"INVALID WALK (a bug): {bad}/{n} invalid; first: {first['why']} in {first['text']!r}"
    return out


_WORKER: dict = {}


def _init_worker(vocab, eos_ids, memory_bytes: int, kwargs: dict) -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    vm = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            vm = int(line.split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + memory_bytes, resource.RLIM_INFINITY))
    _WORKER.update(vocab=vocab, eos=eos_ids, kwargs=kwargs)


def _work(schema) -> dict:
    try:
        return check_one(schema, _WORKER["vocab"], _WORKER["eos"], **_WORKER["kwargs"])
    except MemoryError:
        return {"supported": False, "error": "memory: compile exceeded the memory bound"}


def check_many(schemas, vocab, eos_ids, *, timeout: float, memory_bytes: int, **kwargs):
    """Yield check_one results in order, each in a worker (restarted after a timeout)."""
    ctx = mp.get_context("fork")
    pool = None
    try:
        for schema in schemas:
            if pool is None:
                pool = ctx.Pool(1, _init_worker, (vocab, eos_ids, memory_bytes, kwargs), maxtasksperchild=200)
            job = pool.apply_async(_work, (schema,))
            try:
                yield job.get(timeout)
            except mp.TimeoutError:
                pool.terminate()
                pool = None
                yield {"supported": False, "error": f"timeout: over {timeout:.0f} s"}
            except Exception as e:  # noqa: BLE001 - a crash in the worker is reported, never hidden
                pool.terminate()
                pool = None
                yield {"supported": False, "error": f"CRASH: {type(e).__name__}: {e}"}
    finally:
        if pool is not None:
            pool.terminate()


def _load_vocab(args):
    from constraints.vocab_bytes import token_bytes

    if args.model:
        from model import DiffusionGemmaConfig, load_tokenizer

        tok = load_tokenizer(args.model)
        return token_bytes(tok), list(DiffusionGemmaConfig.from_dir(args.model).eos_token_ids)
    from tokenizers import Tokenizer

    path = args.tokenizer or str(
        Path(__file__).resolve().parents[1] / "model/assets/dgbatch-small/tokenizer.json"
    )
    tok = Tokenizer.from_file(path)
    eos = [
        tok.token_to_id(t)
        for t in ("<eos>", "<end_of_turn>", "</s>", "<|endoftext|>")
        if tok.token_to_id(t) is not None
    ]
    return token_bytes(tok), eos or [1]


def run(args: argparse.Namespace) -> int:
    files = schema_files(args.files)
    if not files:
        print("check-schema: no schema files given", file=sys.stderr)
        return 2
    vocab, eos = _load_vocab(args)
    if args.model:
        print(
            "check-schema: --model uses the model's tokenizer; outputs are generated with random logits "
            "through the same commit DP (model logits need the engine)",
            file=sys.stderr,
        )
    schemas = []
    for f in files:
        try:
            schemas.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            schemas.append({"$invalid": f"{f}: {e}"})
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        canvas_length=args.canvas_length,
        seed=args.seed,
        ref_depth=args.ref_depth,
        walks=args.walks,
    )
    sink = open(args.jsonl, "w") if args.jsonl else None
    n_sup = n_valid = 0
    for f, schema, res in zip(
        files,
        schemas,
        check_many(
            schemas, vocab, eos, timeout=args.timeout, memory_bytes=int(args.memory_gb * 2**30), **kwargs
        ),
    ):
        if "$invalid" in schema:
            res = {"supported": False, "error": f"unreadable: {schema['$invalid']}"}
        n_sup += res["supported"]
        n_valid += bool(res.get("valid"))
        if res["supported"]:
            line = (
                f"{f.name}: supported compile={res['compile_s']:.2f}s states={res['states']} "
                f"classes={res['classes']} edges={res['edges']} min_tokens={res['min_tokens']} "
                f"valid={'yes' if res['valid'] else 'NO'}"
            )
            if "walks" in res:
                line += f" walks={res['walks'] - res['walks_invalid']}/{res['walks']} valid"
            if not res["valid"]:
                line += f"\n  counterexample: {res['error']}"
            for where in res.get("left_out", []):  # never generated: too large to compile
                line += f"\n  left out (too large to compile): {where}"
        else:
            line = f"{f.name}: {res['error']}"
        print(line, flush=True)
        if sink:
            sink.write(json.dumps({"file": str(f), **res}) + "\n")
    if sink:
        sink.close()
    n = len(files)
    print(
        f"summary: {n} schemas, supported {n_sup}/{n} ({100 * n_sup / n:.1f}%), "
        f"valid output {n_valid}/{n} ({100 * n_valid / n:.1f}%)"
    )
    return 0 if n_valid == n else 1
