"""Tokenizer: tokenizer.json through `tokenizers`, left padding, and the checkpoint's chat template
rendered in a sandboxed jinja2 environment (Gemma-4 turn format, thinking off by default).

Owns `load_tokenizer(dir_or_url)`, `Tokenizer`, `left_pad`, `encode_prompt` (a prompt's ids, chat or
plain) and `encode_messages` (a conversation's ids). Semantics follow the HF Gemma tokenizer the checkpoint
ships with: `encode` prepends <bos> when `add_bos_token` (default) unless add_special_tokens=False;
`apply_chat_template` renders the template (which writes <bos> itself) and, by default, tokenizes it
without adding special tokens; batches are LEFT padded with <pad>.
The template comes from tokenizer_config.json "chat_template" or chat_template.jinja in the same directory;
when neither exists the default Gemma-4 template next to this file is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import torch
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

DEFAULT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")


def _raise(message: str) -> None:
    raise TemplateError(message)


class Tokenizer:
    """encode / decode / batch_encode (left padding) / apply_chat_template, plus the special ids."""

    def __init__(
        self,
        tk: HFTokenizer,
        chat_template: str | None = None,
        *,
        bos_token: str = "<bos>",
        eos_token: str = "<eos>",
        pad_token: str = "<pad>",
        add_bos_token: bool = True,
    ):
        self.tk = tk
        self.chat_template = chat_template
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.bos_token_id = self._special(bos_token, "bos_token")
        self.eos_token_id = self._special(eos_token, "eos_token")
        self.pad_token_id = self._special(pad_token, "pad_token")
        self.add_bos_token = add_bos_token
        self._env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._env.globals["raise_exception"] = _raise
        self._compiled = None

    def _special(self, token: str, field: str) -> int:
        tid = self.tk.token_to_id(token)
        if tid is None:
            raise ValueError(f"tokenizer: {field} {token!r} is not in the vocabulary")
        return tid

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.tk.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tk.encode(text, add_special_tokens=False).ids
        return [self.bos_token_id, *ids] if add_special_tokens and self.add_bos_token else ids

    def decode(self, ids: list[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_encode(
        self, texts: list[str] | list[list[int]], add_special_tokens: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded batch -> (ids_BL long, valid_BL bool); accepts strings or already-tokenized lists."""
        seqs = [list(t) if not isinstance(t, str) else self.encode(t, add_special_tokens) for t in texts]
        return left_pad(seqs, self.pad_token_id)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: bool = False,
        tokenize: bool = True,
        **extra: Any,
    ) -> list[int] | str:
        """Render messages ({"role", "content"}) with the checkpoint's template; ids unless tokenize=False."""
        if self.chat_template is None:
            raise ValueError(
                "tokenizer: no chat template (tokenizer_config.json chat_template / chat_template.jinja)"
            )
        if self._compiled is None:
            self._compiled = self._env.from_string(self.chat_template)
        text = self._compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            pad_token=self.pad_token,
            **extra,
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists -> (ids_BL, valid_BL); the reference's (and Gemma's) padding side."""
    L = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    valid = torch.zeros(len(seqs), L, dtype=torch.bool)
    for b, s in enumerate(seqs):
        if s:
            ids[b, L - len(s) :] = torch.tensor(s, dtype=torch.long)
            valid[b, L - len(s) :] = True
    return ids, valid


def encode_prompt(tok: Tokenizer, prompt: str, *, chat: bool = True) -> list[int]:
    """The ids a generation starts from: with `chat`, one user turn rendered by the chat template with the
    generation prompt (the template writes <bos>); without, the plain text after <bos>. Inference (engine,
    pipeline, CLI) and training (train/forward.py) encode prompts here, so they see the same ids."""
    if not chat:
        return list(tok.encode(prompt))
    return encode_messages(tok, [{"role": "user", "content": prompt}])


def encode_messages(tok: Tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """The ids a generation starts from for a conversation ({"role", "content"} turns, OpenAI style, the
    last one the user's): the chat template with the generation prompt. `encode_prompt` of a prompt is
    `encode_messages` of its one user turn. Raises jinja2's TemplateError for a turn the template refuses."""
    return list(tok.apply_chat_template(list(messages), add_generation_prompt=True))


def _token_str(v: Any, default: str) -> str:
    if isinstance(v, dict):  # {"content": "<bos>", ...} (AddedToken form)
        v = v.get("content")
    return v if isinstance(v, str) else default


def load_tokenizer(dir_or_url: str) -> Tokenizer:
    """Load tokenizer.json (+ tokenizer_config.json, chat_template.jinja) from a directory or fsspec URL."""
    base = str(dir_or_url).rstrip("/")
    fs, root = fsspec.core.url_to_fs(base)
    tj = f"{root}/tokenizer.json"
    if not fs.exists(tj):
        raise FileNotFoundError(f"{base}/tokenizer.json: not found")
    with fs.open(tj, "r", encoding="utf-8") as f:
        try:
            tk = HFTokenizer.from_str(f.read())
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{base}/tokenizer.json: cannot parse ({e})") from None
    cfg: dict[str, Any] = {}
    if fs.exists(f"{root}/tokenizer_config.json"):
        with fs.open(f"{root}/tokenizer_config.json", "r", encoding="utf-8") as f:
            cfg = json.load(f)
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": "..."}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if template is None and fs.exists(f"{root}/chat_template.jinja"):
        with fs.open(f"{root}/chat_template.jinja", "r", encoding="utf-8") as f:
            template = f.read()
    if template is None:
        template = DEFAULT_TEMPLATE.read_text(encoding="utf-8")
    if not isinstance(template, str):
        raise ValueError(f"{base}/tokenizer_config.json: chat_template must be a string")
    return Tokenizer(
        tk,
        template,
        bos_token=_token_str(cfg.get("bos_token"), "<bos>"),
        eos_token=_token_str(cfg.get("eos_token"), "<eos>"),
        pad_token=_token_str(cfg.get("pad_token"), "<pad>"),
        add_bos_token=bool(cfg.get("add_bos_token", True)),
    )
