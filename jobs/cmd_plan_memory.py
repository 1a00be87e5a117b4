"""`dgbatch plan-memory MODEL_OR_CONFIG --gpu-memory 24GiB --context 4096`: does the model fit on a card, and
how many canvases per decoder forward (model/memory_plan.py). Reads only the config: MODEL_OR_CONFIG is a
model directory or fsspec URL holding config.json, a config.json file, or a preset (`full-size`, `tiny`).
Without --quantization a checkpoint's compressed-tensors `quantization_config` names the scheme
(model/quant/scheme.py checkpoint_scheme), else bf16. Bad input exits 2 naming it; what it prints is scrubbed
of secret-shaped text (pipeline/redact.py), as URLs may carry some."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING

from jobs.cli import scrubbed_failures

if TYPE_CHECKING:  # imported lazily at run time: `dgbatch --help` does not pay for torch
    from model.config import DiffusionGemmaConfig
    from model.memory_plan import MemoryPlan

PRESETS = ("full-size", "tiny")
SCHEMES = ("bf16", "fp8", "w4a16", "nvfp4")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


class PlanInputError(ValueError):
    """Bad command-line input or config (exit 2)."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_CONFIG",
                        help="model directory or URL with config.json, a config.json file, or a preset: "
                             + ", ".join(PRESETS))
    parser.add_argument("--quantization", choices=SCHEMES, default=None,
                        help="weight scheme (default: the checkpoint's quantization_config, else bf16)")
    parser.add_argument("--group-size", type=int, default=None,
                        help="w4a16 columns per scale (default: the checkpoint's, else 128)")
    parser.add_argument("--gpu-memory", required=True,
                        help="the card's memory: 24GiB, 32GB, 81559MiB, 500MB or a byte count")
    parser.add_argument("--context", type=int, required=True,
                        help="tokens each row caches: its prompt plus the canvases it has committed")
    parser.add_argument("--prompt-tokens", type=int, default=None,
                        help="the longest prompt, encoded in one pass (default: the whole context)")
    parser.add_argument("--commit-hooks", action="store_true",
                        help="rows commit through a hook (structured output), which keeps the last logits")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def parse_size(text: str) -> int:
    """'24GiB', '32 GB', '512MiB', '1.5GiB' or a byte count -> bytes (PlanInputError otherwise)."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS or (unit in ("", "b") and "." in m.group(1)):
        raise PlanInputError(f"--gpu-memory: cannot read {text!r}; expected a size such as 24GiB, 32GB, "
                             f"512MiB or a byte count")
    n = round(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise PlanInputError(f"--gpu-memory: {text!r} is not a positive size")
    return n


def load_config(source: str) -> tuple[DiffusionGemmaConfig, dict | None, str]:
    """(config, the raw config.json or None for a preset, a label) of a preset, a config.json file, or a
    directory / URL holding one."""
    import fsspec

    from model.config import DiffusionGemmaConfig

    if source == "full-size":
        return DiffusionGemmaConfig.full_size(), None, "preset full-size"
    if source == "tiny":
        return DiffusionGemmaConfig.tiny(), None, "preset tiny"
    where = source
    try:
        fs, path = fsspec.core.url_to_fs(source)
        path = path.rstrip("/")
        cfg_path = path if path.endswith(".json") or fs.isfile(path) else f"{path}/config.json"
        where = source if cfg_path == path else f"{source.rstrip('/')}/config.json"
        if not fs.exists(cfg_path):
            raise PlanInputError(f"{where}: not found (MODEL_OR_CONFIG is a model directory or URL with "
                                 f"config.json, a config.json file, or a preset: {', '.join(PRESETS)})")
        with fs.open(cfg_path, "r") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlanInputError(f"{where}: invalid JSON ({e})") from None
    except (OSError, ValueError) as e:  # unreadable storage, an unknown URL protocol
        raise PlanInputError(f"{where}: cannot be read: {type(e).__name__}: {e}") from None
    try:
        return DiffusionGemmaConfig.from_dict(raw), raw, source
    except ValueError as e:
        raise PlanInputError(f"{where}: {e}") from None


def resolve_scheme(args: argparse.Namespace, raw: dict | None) -> tuple[str, int | None]:
    """(scheme, w4a16 group size: None for one scale per row or another scheme) from the flags, else from
    the checkpoint's quantization_config, else bf16."""
    scheme, group = args.quantization, 128
    if scheme is None and raw is not None and raw.get("quantization_config") is not None:
        from model.quant.scheme import checkpoint_scheme

        try:
            found = checkpoint_scheme(raw)
        except ValueError as e:
            raise PlanInputError(str(e)) from None
        if found is not None:
            scheme, group = found
    scheme = scheme or "bf16"
    if args.group_size is not None:
        if scheme != "w4a16":
            raise PlanInputError(f"--group-size: applies to w4a16 only (the scheme here is {scheme})")
        if args.group_size < 1:
            raise PlanInputError(f"--group-size: expected a positive int, got {args.group_size}")
        group = args.group_size
    return scheme, group if scheme == "w4a16" else None


def _gb(n: int) -> str:
    return f"{n / 1e9:9.3f} {n / 2**30:9.3f}"


def render(plan: MemoryPlan, label: str, vllm: int) -> str:
    """The human table (GB = 10^9 bytes, GiB = 2^30)."""
    scheme = plan.scheme + (f" (group {plan.group_size or 'per row'})" if plan.scheme == "w4a16" else "")
    w = plan.weights_by_part
    rows = [("weights: routed experts", w["experts"]), ("weights: attention q/k/v/o", w["attention"]),
            ("weights: dense MLPs, norms, router", w["dense"]),
            ("weights: embedding / LM head", w["embeddings"]), ("weights: total", plan.weights_bytes),
            ("reserve (CUDA context, allocator)", plan.reserve_bytes),
            (f"KV cache per row ({plan.context} tokens)", plan.kv_cache_bytes),
            ("workspace per canvas (decode step)", plan.workspace_bytes),
            ("per canvas at a canvas boundary", plan.boundary_bytes),
            (f"prefill of a {plan.prompt_tokens}-token prompt", plan.prefill_bytes)]
    card = plan.gpu_memory_bytes / 2**30
    lines = [f"{label}: {scheme} weights, card {card:.2f} GiB, context {plan.context}",
             f"  {'':38} {'GB':>9} {'GiB':>9}"]
    lines += [f"  {name:38} {_gb(n)}" for name, n in rows]
    why = "one more is stopped by" if plan.canvases_fit else "stopped by"
    lines.append(f"canvases per forward that fit: {plan.canvases_fit} ({why}: {plan.limit})")
    lines.append(f"vLLM's sampling temporaries per sequence (issue 50699): {vllm / 1e9:.3f} GB; this "
                 f"workspace per canvas: {plan.workspace_bytes / 1e9:.3f} GB "
                 f"({100 * plan.workspace_bytes / vllm:.0f}%)")
    return "\n".join(lines)


@scrubbed_failures("dgbatch plan-memory")
def run(args: argparse.Namespace) -> int:
    from pipeline.redact import scrub

    try:
        gpu = parse_size(args.gpu_memory)
        config, raw, label = load_config(args.model)
        scheme, group = resolve_scheme(args, raw)
        if args.context < 1:
            raise PlanInputError(f"--context: expected a positive number of tokens, got {args.context}")
        prompt = args.context if args.prompt_tokens is None else args.prompt_tokens
        if not 1 <= prompt <= args.context:
            raise PlanInputError(f"--prompt-tokens: expected 1..{args.context} (the context), got {prompt}")
    except PlanInputError as exc:
        print(scrub(f"dgbatch plan-memory: {exc}"), file=sys.stderr)
        return 2
    from model.memory_plan import plan_memory, vllm_workspace_bytes

    plan = plan_memory(config, scheme, gpu, args.context, group, prompt_tokens=prompt,
                       keep_logits=args.commit_hooks)
    vllm = vllm_workspace_bytes(config)
    if args.json:
        print(json.dumps({**plan.to_dict(), "model": scrub(label), "vllm_workspace_bytes": vllm}, indent=1))
    else:
        print(scrub(render(plan, label, vllm)))
    return 0
