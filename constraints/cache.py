"""The in-memory caches of compiled constraints: bounded, keyed by content, owned by whoever builds hooks.

A replica (pipeline/backend.py) creates one `ConstraintCache` and passes it to every `build_hook`, so a job
whose rows carry many distinct schemas (structured_output.schema_column) keeps at most
`CacheConfig.automata` compiled automata and `CacheConfig.vocabularies` byte vocabularies in memory; the
least recently used entry goes first. Nothing here is a module global: a caller that passes no cache gets a
fresh one per call, and nothing outlives it.

Keys are content, not object identity:
- an automaton by `compile.cache_key` (regex, vocabulary hash, EOS ids): the same key names its .npz in the
  on-disk cache, so an evicted automaton reloads from disk (milliseconds) instead of being rebuilt;
- a vocabulary by the tokenizer's fingerprint (sha256 of its serialised JSON), so two tokenizer objects
  loaded from the same file share one entry.
Serialising a 262k-token tokenizer costs ~0.2 s, too much per row, so the fingerprint of the last few
tokenizer *objects* is remembered too (`_fingerprints`, as bounded as the vocabularies). That shortcut is
keyed by id(); each entry holds its tokenizer, so the id cannot be reused by another object while the
entry lives.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import tokenizers

from constraints.compile import CompileConfig, cache_key, compile_regex
from constraints.dfa import TokenDFA
from constraints.vocab_bytes import raw_tokenizer, token_bytes, vocab_hash

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A dict of at most `maxsize` entries; `get` and `put` make an entry the most recent, `put` evicts the
    least recent beyond the bound."""

    def __init__(self, maxsize: int):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"LRU: maxsize must be an int >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._d: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        if key not in self._d:
            return None
        self._d.move_to_end(key)
        return self._d[key]

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.maxsize:
            self._d.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)


@dataclass(frozen=True)
class CacheConfig:
    """Bounds of a ConstraintCache.

    automata: a TokenDFA holds an int32 token-class column over the vocabulary plus its edges, ~1-5 MB at
    V=262k; 32 keep a replica under ~200 MB of automata while a job that alternates a handful of schemas never
    reloads. vocabularies: a replica serves one tokenizer; 2 leaves room for a second without thrashing (a
    262k-token byte vocabulary is ~20 MB of Python bytes objects).
    """

    automata: int = 32
    vocabularies: int = 2

    def __post_init__(self) -> None:
        for name, v in (("automata", self.automata), ("vocabularies", self.vocabularies)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CacheConfig.{name}: expected an int >= 1, got {v!r}")


@dataclass(frozen=True)
class Vocabulary:
    """A tokenizer's byte vocabulary (constraints/vocab_bytes.py) and its content hash (part of every
    automaton key, computed once here instead of once per compile)."""

    tokens: list[bytes | None]
    hash: str


class ConstraintCache:
    """Bounded LRU caches of byte vocabularies and compiled automata (see the module docstring)."""

    def __init__(self, config: CacheConfig | None = None):
        self.config = config or CacheConfig()
        self.vocabularies: LRU[str, Vocabulary] = LRU(self.config.vocabularies)
        self.automata: LRU[str, TokenDFA] = LRU(self.config.automata)
        self._fingerprints: LRU[int, tuple[tokenizers.Tokenizer, str]] = LRU(self.config.vocabularies)
        self.loads = 0  # automata that missed memory (built, or read from the disk cache)

    def fingerprint(self, tokenizer) -> str:
        """sha256 of the tokenizer's serialised JSON (what its byte vocabulary is a function of)."""
        raw = raw_tokenizer(tokenizer)
        hit = self._fingerprints.get(id(raw))
        if hit is not None and hit[0] is raw:
            return hit[1]
        fp = hashlib.sha256(raw.to_str().encode("utf-8")).hexdigest()
        self._fingerprints.put(id(raw), (raw, fp))
        return fp

    def vocabulary(self, tokenizer) -> Vocabulary:
        """The byte vocabulary of `tokenizer` (a tokenizers.Tokenizer or a wrapper holding one)."""
        fp = self.fingerprint(tokenizer)
        hit = self.vocabularies.get(fp)
        if hit is None:
            tokens = token_bytes(raw_tokenizer(tokenizer))
            hit = Vocabulary(tokens, vocab_hash(tokens))
            self.vocabularies.put(fp, hit)
        return hit

    def automaton(self, regex: str, vocab: Vocabulary, eos_ids, config: CompileConfig | None = None
                  ) -> TokenDFA:
        """The TokenDFA of `regex` over `vocab`: from memory, else compile.compile_regex (disk or a build)."""
        key = cache_key(regex, vocab.tokens, eos_ids, vocab_key=vocab.hash)
        dfa = self.automata.get(key)
        if dfa is None:
            dfa = compile_regex(regex, vocab.tokens, eos_ids, config, vocab_key=vocab.hash)
            self.loads += 1
            self.automata.put(key, dfa)
        return dfa
