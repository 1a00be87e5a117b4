"""Shared fixtures: small tokenizers built locally, the shipped tokenizer's byte vocabulary, a private compile
cache; random-logit rollouts; the accept/reject check of an exactly enforced schema shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `tests.constraints.tok_factory` imports

from constraints import CompileConfig  # noqa: E402
from constraints.schema_regex import UnsupportedSchema, schema_to_regex, strict_validator  # noqa: E402
from constraints.vocab_bytes import token_bytes  # noqa: E402
from constraints.walks import byte_accepts, byte_walks  # noqa: E402
from tests.constraints.tok_factory import byte_level, gemma_style  # noqa: E402

SHIPPED_TOKENIZER = Path(__file__).resolve().parents[2] / "model/assets/dgbatch-small/tokenizer.json"


@pytest.fixture(scope="session")
def gemma_tok():
    return gemma_style(600)


@pytest.fixture(scope="session")
def bytelevel_tok():
    return byte_level(600)


@pytest.fixture(scope="session")
def vocab(gemma_tok):
    """Byte vocabulary of the shipped tokenizer (the gemma-style test tokenizer where it is absent)."""
    if SHIPPED_TOKENIZER.exists():
        from tokenizers import Tokenizer

        return token_bytes(Tokenizer.from_file(str(SHIPPED_TOKENIZER)))
    return token_bytes(gemma_tok)


def assert_refused(schema: dict, message: str) -> None:
    """schema_to_regex refuses `schema` as unsupported, the refusal saying `message` (keyword and where)."""
    with pytest.raises(UnsupportedSchema, match="^unsupported: ") as err:
        schema_to_regex(schema)
    assert message in str(err.value)


def assert_walks_valid(schema, n: int = 40, *, seed: int = 0, max_len: int = 300, regex: str | None = None
                       ) -> list:
    """n random outputs of the constraint (the schema's regex, or `regex`) all validate; the values."""
    rx = schema_to_regex(schema) if regex is None else regex
    v = strict_validator(schema)
    values = []
    for text in byte_walks(rx, n, seed=seed, max_len=max_len):
        value = json.loads(text)
        errors = list(v.iter_errors(value))
        assert not errors, (text, errors[0].message)
        values.append(value)
    return values


def assert_exact_shape(name: str, schema, good: str, bad: str) -> None:
    """The schema accepts `good` and rejects `bad`, and so does its constraint's byte automaton."""
    v = strict_validator(schema)
    assert v.is_valid(json.loads(good)) and not v.is_valid(json.loads(bad))  # the cases themselves are right
    rx = schema_to_regex(schema)
    assert byte_accepts(rx, good), f"{name}: the constraint refuses the valid {good}"
    assert not byte_accepts(rx, bad), f"{name}: the constraint allows the invalid {bad}"


@pytest.fixture
def cfg(tmp_path) -> CompileConfig:
    return CompileConfig(cache_dir=tmp_path / "cache", in_process=True)


def rollout(hook, vocab_size: int, *, max_new_tokens: int, canvas: int, seed: int, scale: float = 3.0):
    """Call the hook canvas by canvas with random logits, as the engine would; return committed ids."""
    g = torch.Generator().manual_seed(seed)
    state, tokens, left = hook.initial_state(), [], max_new_tokens
    while left > 0:
        logits = torch.randn(canvas, vocab_size, generator=g) * scale
        out, state, finished = hook.commit(logits, state, tokens_left=left, last_canvas=left <= canvas)
        assert out.shape == (canvas,) and out.dtype == torch.long
        tokens += out[: min(canvas, left)].tolist()
        left -= canvas
        if finished:
            return tokens, state
    return tokens, state
