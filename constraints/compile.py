"""Compile a constraint section to a TokenDFA: regex, disk cache, and a bounded worker process.

The build runs in a fresh Python process (`python constraints/dfa.py JOB OUT`) with a wall-clock
timeout and an address-space limit (RLIMIT_AS, set in the child), so a pathological schema costs one
refused request, never the replica. Results are cached on disk as .npz (no pickle) under
<cache_dir>/<sha256(regex, vocabulary, EOS ids)>.npz; the bounded in-memory cache in front of that is
constraints/cache.py's `ConstraintCache` (owned by the replica), not this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from constraints.choice import choice_regex
from constraints.dfa import TokenDFA, build_token_dfa, save_dfa
from constraints.output_check import row_schema, section_kind
from constraints.schema_regex import load_pydantic, translate_schema
from constraints.vocab_bytes import vocab_hash

# bump when the cached arrays change meaning or numbering: 2, token classes numbered by first token (the DP
# breaks an exact tie between classes by class order, so an old table could decode a tie otherwise)
FORMAT_VERSION = "dgbatch-dfa-2"


class CompileError(RuntimeError):
    """The build failed: timeout, memory bound or an automaton error (message says which)."""


@dataclass(frozen=True)
class CompileConfig:
    cache_dir: Path = field(
        default_factory=lambda: Path(
            os.environ.get("DGBATCH_CONSTRAINT_CACHE", Path.home() / ".cache" / "dgbatch" / "constraints")
        )
    )
    timeout_s: float = 60.0
    memory_bytes: int = 4 << 30
    in_process: bool = False  # tests and the coverage bench may skip the worker

    def __post_init__(self):
        if self.timeout_s <= 0 or self.memory_bytes < (256 << 20):
            raise ValueError("CompileConfig: timeout_s must be > 0 and memory_bytes >= 256 MiB")


def section_regex(section: dict, row: dict | None = None) -> tuple[str, dict | None]:
    """(regex, JSON Schema or None) for a structured_output section; UnsupportedSchema names a keyword."""
    kind = section_kind(section)
    if kind == "regex":
        if not isinstance(section["regex"], str) or not section["regex"]:
            raise ValueError("structured_output.regex: expected a non-empty string")
        return section["regex"], None
    if kind == "choice":
        return choice_regex(section["choice"]), None
    if kind == "pydantic":
        schema = load_pydantic(section["pydantic"]).model_json_schema()
    elif kind == "json_schema":
        schema = section["json_schema"]
        if not isinstance(schema, (dict, bool)):
            raise ValueError("structured_output.json_schema: expected a JSON Schema object")
    else:
        schema = row_schema(section, row)
    translated = translate_schema(schema, ref_depth=section.get("ref_depth"))
    if translated.left_out:  # sound (a subset of the valid objects), but the user should know
        warnings.warn("structured_output: parts never generated (optional properties or union branches too "
                      "large to compile): " + "; ".join(translated.left_out), stacklevel=2)
    return translated.regex, schema


def cache_key(regex: str, vocab: list[bytes | None], eos_ids, *, vocab_key: str | None = None) -> str:
    """The automaton's content key (and .npz name). vocab_key: vocab_hash(vocab) when the caller has it
    (hashing a 262k vocabulary costs ~0.2 s)."""
    vkey = vocab_hash(vocab) if vocab_key is None else vocab_key
    payload = json.dumps([FORMAT_VERSION, regex, vkey, sorted(int(e) for e in eos_ids)])
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def compile_regex(
    regex: str,
    vocab: list[bytes | None],
    eos_ids,
    config: CompileConfig | None = None,
    *,
    vocab_key: str | None = None,
) -> TokenDFA:
    """The TokenDFA for `regex` over `vocab`, from the disk cache or a bounded build (no memory cache here:
    constraints/cache.py's ConstraintCache.automaton sits in front of this)."""
    config = config or CompileConfig()
    key = cache_key(regex, vocab, eos_ids, vocab_key=vocab_key)
    path = config.cache_dir / f"{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            dfa = TokenDFA.from_arrays(z)
    elif config.in_process:
        dfa = build_token_dfa(regex, vocab, eos_ids)
        save_dfa(path, dfa)
    else:
        dfa = _build_in_worker(regex, vocab, eos_ids, path, config)
    return dfa


def _build_in_worker(regex, vocab, eos_ids, path: Path, config: CompileConfig) -> TokenDFA:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as job:
        lens = np.asarray([-1 if b is None else len(b) for b in vocab], dtype=np.int32)
        blob = np.frombuffer(b"".join(b or b"" for b in vocab), dtype=np.uint8)
        np.savez(
            Path(job) / "input.npz",
            lens=lens,
            blob=blob,
            eos=np.asarray(list(eos_ids), dtype=np.int64),
            regex=np.frombuffer(regex.encode("utf-8"), dtype=np.uint8),
            memory=np.asarray([config.memory_bytes]),
        )
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        # dfa.py runs as a plain script: it imports only numpy and outlines-core (no torch, no pipeline)
        worker = str(Path(__file__).with_name("dfa.py"))
        try:
            proc = subprocess.run(
                [sys.executable, worker, job, str(path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=config.timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise CompileError(
                f"timeout: compiling the constraint took over {config.timeout_s:.0f} s"
            ) from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            if "MemoryError" in proc.stderr or proc.returncode in (-9, 137):
                raise CompileError(
                    f"memory: compiling the constraint exceeded {config.memory_bytes >> 20} MiB"
                )
            if last.startswith("ValueError: "):
                raise CompileError(last[len("ValueError: ") :])
            raise CompileError(f"compile worker failed: {last}")
    with np.load(path, allow_pickle=False) as z:
        return TokenDFA.from_arrays(z)
