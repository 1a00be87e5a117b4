"""Held-out evaluation of the shipped small model: the quality report of the model card and bench/RESULTS.md.

For each task family (train/synthdata.py held-out split: unseen seeds and entity values) and each
max_denoising_steps in 48/24/12/6, with and without structured-output constraints (constraints,
the family's JSON Schema), it reports: whole-object exact match, per-field accuracy, validity (the reply
parses as JSON and validates against the schema) and tokens per forward (new non-pad tokens / live decoder
row-forwards, the reference's `tokens_per_forward`). Generation is the engine's reference mode
(`engine.generate`, lockstep batch, global RNG seeded per batch), i.e. the transformers algorithm; stop and
pad ids are the model config's (its generation_config).

Also owns `monitor_accuracy`, the held-out exact match train/loop.py tracks while training: the same
generation (`evaluate_family`) on fewer examples and steps, with the global RNG restored afterwards.
Run: `OMP_NUM_THREADS=1 python -m train.evaluate --n 200 --out eval.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jsonschema
import torch

from constraints import build_hook
from engine.counters import Counters
from engine.generate import generate
from engine.params import GenerationParams, until_stop
from train import synthdata
from train.forward import Batch, make_batch

FAMILY_CANVASES = {"labeling": 1, "extraction": 2}
ASSET_DIR = Path(__file__).resolve().parents[1] / "model" / "assets" / "dgbatch-small"


def stop_ids(model) -> tuple[int, ...]:
    """Where a reply ends: the model's generation stop ids (EOS, end of turn, ...)."""
    return GenerationParams.from_model(model).eos_token_ids


def decode_answer(tok, ids: list[int], stops: tuple[int, ...]) -> str:
    """Text of the reply: ids up to the first stop id, special tokens dropped."""
    return tok.decode(until_stop(ids, stops), skip_special_tokens=True)


def parse(text: str) -> dict | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def prompt_batch(tok, model, examples: list[synthdata.Example]) -> Batch:
    """The examples' chat prompts, left-padded with the model's pad id (no answers: make_batch's end id, the
    model's first EOS id here, goes unused)."""
    return make_batch(tok, [e.prompt for e in examples], None, model.config.canvas_length,
                      model.config.eos_token_ids[0], model.config.text.pad_token_id)


# --- training-time monitor ----------------------------------------------------------------------------
def monitor_accuracy(model, tok, n: int = 48, steps: int = 12, seed: int = 0,
                     batch: int = 24) -> dict[str, float]:
    """Whole-object exact match on the first n held-out examples per family: `evaluate_family`'s generation
    (engine reference mode at the checkpoint's sampler settings, no constraints) at `steps` denoising steps.
    The global RNG it seeds is restored afterwards, so training's randomness does not depend on it."""
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        res = {fam: evaluate_family(model, tok, fam, n, steps, False, batch=batch, seed=seed)
               for fam in synthdata.FAMILIES}
    return {fam: round(r["exact"], 4) for fam, r in res.items()}


# --- the report -----------------------------------------------------------------------------------------
def constraint_hook(family: str, tok, model, max_new_tokens: int):
    """The structured-output CommitHook for the family's schema."""
    # model.Tokenizer keeps the tokenizers.Tokenizer in .tk
    return build_hook({"json_schema": synthdata.SCHEMAS[family]}, tok.tk, model.config,
                      max_new_tokens=max_new_tokens, canvas_length=model.config.canvas_length)


def score(examples: list[synthdata.Example], texts: list[str]) -> dict:
    """exact / valid / per-field accuracy of reply texts against the examples' targets, plus `misses`: one
    {row, field, target, got} per wrong field (got is None for an unparseable reply), so a report shows how a
    field goes wrong, not only how often."""
    schema = synthdata.SCHEMAS[examples[0].family]
    fields = list(schema["properties"])
    exact = valid = 0
    per_field = dict.fromkeys(fields, 0)
    misses = []
    for row, (ex, text) in enumerate(zip(examples, texts)):
        obj = parse(text)
        ok = obj is not None
        if ok:
            try:
                jsonschema.validate(obj, schema)
            except jsonschema.ValidationError:
                ok = False
        valid += ok
        exact += obj == ex.target
        for f in fields:
            got = obj.get(f) if obj is not None else None
            hit = obj is not None and got == ex.target[f]
            per_field[f] += hit
            if not hit:
                misses.append({"row": row, "field": f, "target": ex.target[f], "got": got})
    n = len(examples)
    fields_acc = {f: c / n for f, c in per_field.items()}
    return {"n": n, "exact": exact / n, "valid": valid / n, "fields": fields_acc, "misses": misses}


def evaluate_family(model, tok, family: str, n: int, steps: int, constrained: bool, batch: int = 50,
                    seed: int = 0, **sampler: float) -> dict:
    """Reference-mode generation over the first n held-out examples of a family -> score + tokens/forward.
    `sampler`: generate() overrides of the checkpoint's generation_config (t_max, t_min, entropy_bound)."""
    exs = synthdata.dataset("heldout", n, family)
    max_new = FAMILY_CANVASES[family] * model.config.canvas_length
    hook = constraint_hook(family, tok, model, max_new) if constrained else None
    stops, pad = stop_ids(model), GenerationParams.from_model(model).pad_token_id
    texts, new_tokens, counters, t0 = [], 0, Counters(), time.time()
    for i in range(0, n, batch):
        chunk = exs[i:i + batch]
        b = prompt_batch(tok, model, chunk)
        out = generate(model, b.prompt_BL, b.prompt_valid_BL.long(), mode="reference", seed=seed + i,
                       max_new_tokens=max_new, max_denoising_steps=steps, commit_hook=hook, counters=counters,
                       **sampler)
        for row in out[:, b.prompt_BL.shape[1]:].tolist():
            new_tokens += sum(t != pad for t in row)
            texts.append(decode_answer(tok, row, stops))
    res = score(exs, texts)
    res["tokens_per_forward"] = new_tokens / max(1, counters.live_forwards)
    res["seconds"] = round(time.time() - t0, 1)
    res["examples"] = [{"text": t, "target": e.answer} for e, t in list(zip(exs, texts))[:3]]
    return res


def run_report(model_dir: str, n: int, steps_list: tuple[int, ...], constraints: tuple[bool, ...],
               quantization: str | None = None) -> dict:
    from model import DiffusionGemma, load_tokenizer

    torch.set_num_threads(1)
    model = DiffusionGemma.from_pretrained(model_dir, dtype=torch.float32, quantization=quantization).eval()
    tok = load_tokenizer(model_dir)
    report = {"model_dir": str(model_dir), "quantization": quantization, "n_per_family": n, "results": []}
    for fam in synthdata.FAMILIES:
        for constrained in constraints:
            for steps in steps_list:
                r = evaluate_family(model, tok, fam, n, steps, constrained)
                r.update(family=fam, steps=steps, constrained=constrained)
                report["results"].append(r)
                print(json.dumps({k: v for k, v in r.items() if k not in ("examples", "misses")}), flush=True)
    return report


def markdown_table(report: dict) -> str:
    lines = ["| family | constraints | steps | exact (whole object) | valid | tokens/forward "
             "| per-field accuracy |",
             "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        fields = ", ".join(f"{k} {v:.1%}" for k, v in r["fields"].items())
        on = "on" if r["constrained"] else "off"
        lines.append(f"| {r['family']} | {on} | {r['steps']} | {r['exact']:.1%} | "
                     f"{r['valid']:.1%} | {r['tokens_per_forward']:.2f} | {fields} |")
    return "\n".join(lines)


CARD = """---
license: apache-2.0
library_name: dgbatch
pipeline_tag: text-generation
---
# dgbatch-small

A {n_params:,}-parameter model with the DiffusionGemma architecture (transformers `diffusion_gemma`,
`DiffusionGemmaForBlockDiffusion`), trained from scratch in this repository. It is the embedded
default model of dgbatch's demo, examples and end-to-end tests, so they run offline with a model that
actually does the two task families our users run. It is a toy: it knows nothing outside that data.

## Architecture (config.json)
{layers} layers ({layer_types}), hidden {hidden}, 4 query heads; sliding layers head_dim {d_s} with 2 KV heads
and window {window}; full layers head_dim {d_f} with 1 KV head and proportional RoPE (partial 0.25);
dense MLP {inter} beside {experts} experts top-{top_k} (expert width {moe}); self-conditioning block; tied
embeddings, final softcap 30; vocabulary {vocab}; canvas length {canvas}. fp32 weights ({size_mb:.1f} MB).
The vision tower is a tiny placeholder from the config only: its weights are not shipped (text-only model;
our loader skips it, transformers initialises it). Loads unchanged with `model.DiffusionGemma.from_pretrained`
and `transformers.DiffusionGemmaForBlockDiffusion.from_pretrained`; both give identical reference-mode tokens
(tests/training/test_training_shipped_model.py).

## Tokenizer
Gemma-style BPE fitted with `tokenizers` on training-split text only (train/tokenizer.py): byte
fallback, `\u2581` for spaces, no prefix space, digits split; pieces never cross a letter/non-letter boundary
(runs of letters, single digits, runs of spaces and punctuation), so a name copied from a message into JSON
is the same token sequence in both places. The Gemma 4 special/control tokens sit at Gemma 4's
ids (`<pad>`=0 `<eos>`=1 `<bos>`=2 `<unk>`=3 `<mask>`=4 `<|tool_response>`=50 `<|think|>`=98 `<|channel>`=100
`<channel|>`=101 `<|turn>`=105 `<turn|>`=106, `\n`=107), left padding, the Gemma 4 chat template. Replies end
with `<turn|>`; generation stops on ids 1, 106, 50.

## Training (train/loop.py)
Data: train/synthdata.py, generated on the fly (a pure function of the step), two families:
labeling (support tickets / chat messages -> `{{"category", "priority", "sentiment"}}` enums) and extraction
(order messages -> `{{"name", "city", "order_id", "product", "quantity", "status"}}`, strings and the id
copied, quantity from digits or number words, status from a phrase bank). Training names, cities and
brands are made fresh for every example, so they cannot be memorised. Block-diffusion objective: the
prompt and previous canvases clean through the causal encoder pass, every response canvas corrupted with
uniform random tokens at level t ~ U(1e-3, 1), cross-entropy on the canvas, two-pass self-conditioning on
{sc} (detached first-pass logits over a temperature from the sampler's range).
{schedule}Final training loss (mean of the last 30 batches) {final_loss:.3f}. Initialisation for a small
width: see `init_for_training` in train/loop.py.

## Quality (train/evaluate.py, held-out split)
Held-out examples use other seeds and entity values (names, cities, brands) never seen in training.
{n} examples per family, engine reference mode (the transformers sampler: entropy bound 0.1, t 0.8->0.4,
adaptive stop), one seed per batch. exact = the whole JSON object equals the target; valid = parses and
validates against the family's JSON Schema; tokens/forward = non-pad new tokens per live decoder row-pass;
constraints = constraints (JSON Schema -> token DFA, exact DP at each canvas commit).

{table}

{verdict}

Reproduce: {reproduce}, then
`python -m train.loop --out {export_from} --export model/assets/dgbatch-small` and
`python -m train.evaluate --n {n} --out eval.json`.
"""


def _last_out(state: dict) -> str:
    """The run directory the shipped weights were exported from (the last stage's --out)."""
    stages = state.get("stages") or [{"command": "--out runs/small"}]
    words = stages[-1]["command"].split()
    return words[words.index("--out") + 1] if "--out" in words else "runs/small"


def _schedule(state: dict, mix: str) -> tuple[str, str]:
    """The card's training-schedule sentence and reproduce commands: one run (an optional state `where`
    replaces the machine description derived from the config), or the `stages` a run was continued through
    (each stage: where, steps, batch, lr, warmup, minutes, command)."""
    c = state["config"]
    stages = state.get("stages")
    if not stages:
        threads = c.get("threads", 1)  # states written before the option existed ran on one thread
        device = c.get("device", "cpu")
        where = state.get("where") or (
            f"{threads} CPU thread{'s' if threads > 1 else ''} of a 2-core machine" if device == "cpu"
            else f"one {device} device")
        text = (f"AdamW (lr {c['lr']}, warmup {c['warmup']}, cosine to 10%), batch {c['batch_size']}, "
                f"{state['step']} steps = {state['step'] * c['batch_size']:,} examples ({mix}); "
                f"{state['train_seconds'] / 60:.0f} min of training on {where}. ")
        cmd = (f"`python -m train.loop --out runs/small --steps {c['steps']} "
               f"--batch-size {c['batch_size']} --lr {c['lr']} --warmup {c['warmup']} "
               f"--self-cond-frac {c['self_cond_frac']} --seed {c['seed']} --threads {threads} "
               + (f"--device {device} " if device != "cpu" else "") +
               f"--families {','.join(c['families'])}`")
        return text, cmd
    # a stage that names its family schedule gets a column (stages may differ); else the run's mix applies
    per_stage = all("families" in st for st in stages)
    per_sc = all("self_cond_frac" in st for st in stages)
    rows = ["", "| stage | where | steps x batch | examples | lr (peak, cosine to 10%) | minutes |"
            + (" batches: labeling / extraction |" if per_stage else "")
            + (" two-pass batches |" if per_sc else ""),
            "|---|---|---|---|---|---|" + ("---|" if per_stage else "") + ("---|" if per_sc else "")]
    for i, st in enumerate(stages, 1):
        n_ex = st["steps"] * st["batch"]
        fams = st.get("families", [])
        share = (f" {fams.count('labeling') / len(fams):.0%} / {fams.count('extraction') / len(fams):.0%} |"
                 if per_stage else "")
        rows.append(f"| {i} | {st['where']} | {st['steps']:,} x {st['batch']} | {n_ex:,} "
                    f"| {st['lr']} | {st['minutes']:.1f} |{share}"
                    + (f" {st['self_cond_frac']:.0%} |" if per_sc else ""))
    total = sum(st["steps"] * st["batch"] for st in stages)
    mix = "family shares per stage below" if per_stage else mix
    text = (f"AdamW, trained in {len(stages)} stages, each continuing from the previous one's weights with a "
            f"fresh optimizer and its own warmup + cosine ({mix}); {total:,} examples in all:\n"
            + "\n".join(rows) + "\n\n")
    cmd = " then ".join(f"`{st['command']}`" for st in stages)
    return text, cmd


def write_card(report: dict, state: dict, model_dir: str | Path, verdict: str) -> str:
    """Render the model card README.md from an evaluation report and the training state.json."""
    from model.config import DiffusionGemmaConfig

    cfg = DiffusionGemmaConfig.from_dir(str(model_dir))
    t, c = cfg.text, state["config"]
    full = [i for i, lt in enumerate(t.layer_types) if lt == "full_attention"]
    mix = {f: c["families"].count(f) for f in synthdata.FAMILIES}
    total = sum(mix.values())
    schedule, reproduce = _schedule(
        state, ", ".join(f"{f} {m / total:.0%} of batches" for f, m in mix.items()))
    losses = [v for _, v in state["losses"][-30:]]
    # stages that record their own self-conditioning share show it in the stage table
    stages = state.get("stages") or []
    staged_sc = bool(stages) and all("self_cond_frac" in st for st in stages)
    sc = ("the share of batches given per stage below" if staged_sc
          else f"{c['self_cond_frac']:.0%} of the batches")
    text = CARD.format(
        n_params=state["n_params"], layers=t.num_hidden_layers, layer_types=", ".join(
            "F" if i in full else "S" for i in range(t.num_hidden_layers)), hidden=t.hidden_size,
        d_s=t.head_dim, window=t.sliding_window, d_f=t.layer_head_dim(full[0]), inter=t.intermediate_size,
        experts=t.num_experts, top_k=t.top_k_experts, moe=t.moe_intermediate_size, vocab=t.vocab_size,
        canvas=cfg.canvas_length, size_mb=(Path(model_dir) / "model.safetensors").stat().st_size / 2**20,
        sc=sc, schedule=schedule, final_loss=sum(losses) / max(1, len(losses)),
        n=report["n_per_family"], table=markdown_table(report), verdict=verdict, reproduce=reproduce,
        export_from=_last_out(state))
    (Path(model_dir) / "README.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ASSET_DIR))
    ap.add_argument("--n", type=int, default=200, help="held-out examples per family")
    ap.add_argument("--steps", default="48,24,12,6")
    ap.add_argument("--constraints", choices=("both", "on", "off"), default="both")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here (+ .md table)")
    ap.add_argument("--card-state", type=Path, default=None,
                    help="training state.json: also write the model card README.md into --model")
    ap.add_argument("--verdict", default="", help="a sentence for the card under the table")
    ap.add_argument("--quantization", choices=("fp8", "w4a16"), default=None,
                    help="quantize the bf16 checkpoint on load (compressed-tensors models load quantized)")
    args = ap.parse_args(argv)
    cons = {"both": (False, True), "on": (True,), "off": (False,)}[args.constraints]
    report = run_report(args.model, args.n, tuple(int(s) for s in args.steps.split(",")), cons,
                        args.quantization)
    table = markdown_table(report)
    print(table)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        args.out.with_suffix(".md").write_text(table + "\n")
    if args.card_state:
        write_card(report, json.loads(args.card_state.read_text()), args.model, args.verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
