"""The text stack's configuration (transformers' DiffusionGemmaTextConfig, text path only).

Owns `TextConfig` (frozen, self-validating), the per-layer geometry accessors, both full-attention geometry
forms of config.json (`per_layer_config` with string layer keys, or `global_head_dim` /
`num_global_key_value_heads`), and the small field validators shared with model/config.py.
Anything we cannot run exactly like the reference raises ValueError naming the offending field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SLIDING = "sliding_attention"
FULL = "full_attention"
_ROPE_TYPES = ("default", "proportional")
_ACTIVATION = "gelu_pytorch_tanh"


def _req_int(d: dict, name: str, where: str, minimum: int = 1) -> int:
    v = d.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{where}.{name}: expected an int >= {minimum}, got {v!r}")
    return v


def _opt_id(v: Any, name: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name}: expected a non-negative int or null, got {v!r}")
    return v


def _ids(v: Any, name: str) -> tuple[int, ...]:
    """An id field that may be an int, a list of ints, or null (-> empty tuple)."""
    if v is None:
        return ()
    items = v if isinstance(v, (list, tuple)) else [v]
    return tuple(_opt_id(x, name) for x in items)


@dataclass(frozen=True)
class TextConfig:
    """The text stack's hyper-parameters (transformers' DiffusionGemmaTextConfig, text path only)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_experts: int
    top_k_experts: int
    num_hidden_layers: int
    layer_types: tuple[str, ...]
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    # layer index -> {"head_dim": D, "num_key_value_heads": KV} overrides (the full-attention layers)
    per_layer_config: dict[int, dict[str, int]] = field(default_factory=dict)
    sliding_window: int = 512
    # layer type -> {"rope_type", "rope_theta", optional "partial_rotary_factor", "factor"}
    rope_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    rms_norm_eps: float = 1e-6
    final_logit_softcapping: float = 30.0
    pad_token_id: int | None = 0
    eos_token_id: tuple[int, ...] = (1,)
    bos_token_id: int | None = 2
    max_position_embeddings: int = 131072

    def __post_init__(self) -> None:
        w = "text_config"
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"{w}.layer_types: has {len(self.layer_types)} entries, "
                f"num_hidden_layers is {self.num_hidden_layers}"
            )
        for i, t in enumerate(self.layer_types):
            if t not in (SLIDING, FULL):
                raise ValueError(f"{w}.layer_types[{i}]: unsupported layer type {t!r}")
        if self.top_k_experts > self.num_experts:
            raise ValueError(f"{w}.top_k_experts: {self.top_k_experts} > num_experts {self.num_experts}")
        for i, over in self.per_layer_config.items():
            if not 0 <= i < self.num_hidden_layers:
                raise ValueError(f"{w}.per_layer_config: layer {i} out of range")
            bad = set(over) - {"head_dim", "num_key_value_heads"}
            if bad:
                raise ValueError(f"{w}.per_layer_config[{i}]: unsupported override(s) {sorted(bad)}")
        for i in range(self.num_hidden_layers):
            d, kv = self.layer_head_dim(i), self.layer_kv_heads(i)
            if d % 2:
                raise ValueError(f"{w}.head_dim: layer {i} head_dim {d} must be even for RoPE")
            if self.num_attention_heads % kv:
                raise ValueError(
                    f"{w}.num_key_value_heads: layer {i} has {kv} KV heads, which do not divide "
                    f"num_attention_heads={self.num_attention_heads}"
                )
        for t in set(self.layer_types):
            rp = self.rope_parameters.get(t)
            if rp is None:
                raise ValueError(f"{w}.rope_parameters: missing entry for layer type {t!r}")
            if rp.get("rope_type") not in _ROPE_TYPES:
                raise ValueError(f"{w}.rope_parameters.{t}.rope_type: unsupported {rp.get('rope_type')!r}")
            if not isinstance(rp.get("rope_theta"), (int, float)) or rp["rope_theta"] <= 0:
                raise ValueError(f"{w}.rope_parameters.{t}.rope_theta: expected a positive number")
        if self.sliding_window < 2:
            raise ValueError(f"{w}.sliding_window: must be >= 2, got {self.sliding_window}")
        if not self.final_logit_softcapping or self.final_logit_softcapping <= 0:
            raise ValueError(f"{w}.final_logit_softcapping: must be a positive number")

    # Per-layer geometry (sliding layers use head_dim / num_key_value_heads unless overridden).
    def is_sliding(self, i: int) -> bool:
        return self.layer_types[i] == SLIDING

    def layer_head_dim(self, i: int) -> int:
        return self.per_layer_config.get(i, {}).get("head_dim", self.head_dim)

    def layer_kv_heads(self, i: int) -> int:
        return self.per_layer_config.get(i, {}).get("num_key_value_heads", self.num_key_value_heads)

    def rope(self, i: int) -> dict[str, Any]:
        return self.rope_parameters[self.layer_types[i]]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextConfig:
        w = "text_config"
        if not isinstance(d, dict):
            raise ValueError(f"{w}: expected an object, got {type(d).__name__}")
        if d.get("model_type", "diffusion_gemma_text") != "diffusion_gemma_text":
            raise ValueError(f"{w}.model_type: expected 'diffusion_gemma_text', got {d.get('model_type')!r}")
        act = d.get("hidden_activation", _ACTIVATION)
        if act != _ACTIVATION:
            raise ValueError(f"{w}.hidden_activation: only {_ACTIVATION!r} is supported, got {act!r}")
        if d.get("attention_bias", False):
            raise ValueError(f"{w}.attention_bias: biases are not supported")
        if d.get("use_bidirectional_attention") == "all":
            raise ValueError(
                f"{w}.use_bidirectional_attention: 'all' (bidirectional encoder) is not supported"
            )
        if d.get("tie_word_embeddings", True) is not True:
            raise ValueError(f"{w}.tie_word_embeddings: untied LM heads are not supported")
        n = _req_int(d, "num_hidden_layers", w)
        layer_types = d.get("layer_types")
        if layer_types is None:  # transformers' default 5:1 pattern
            layer_types = [SLIDING if (i + 1) % 6 else FULL for i in range(n)]
        if not isinstance(layer_types, list) or not layer_types:
            raise ValueError(f"{w}.layer_types: expected a non-empty list")
        layer_types = list(layer_types)
        layer_types[-1] = FULL  # the reference forces the last layer to full attention
        per_layer = _parse_per_layer(d, layer_types)
        rope = d.get("rope_parameters") or {
            SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
            FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
        }
        if not isinstance(rope, dict):
            raise ValueError(f"{w}.rope_parameters: expected an object")
        softcap = d.get("final_logit_softcapping")
        eps = d.get("rms_norm_eps", 1e-6)
        if not isinstance(eps, (int, float)) or eps <= 0:
            raise ValueError(f"{w}.rms_norm_eps: expected a positive number, got {eps!r}")
        return cls(
            vocab_size=_req_int(d, "vocab_size", w),
            hidden_size=_req_int(d, "hidden_size", w),
            intermediate_size=_req_int(d, "intermediate_size", w),
            moe_intermediate_size=_req_int(d, "moe_intermediate_size", w),
            num_experts=_req_int(d, "num_experts", w),
            top_k_experts=_req_int(d, "top_k_experts", w),
            num_hidden_layers=n,
            layer_types=tuple(layer_types),
            num_attention_heads=_req_int(d, "num_attention_heads", w),
            num_key_value_heads=_req_int(d, "num_key_value_heads", w),
            head_dim=_req_int(d, "head_dim", w),
            per_layer_config=per_layer,
            sliding_window=_req_int(d, "sliding_window", w, minimum=2),
            rope_parameters={k: dict(v) for k, v in rope.items()},
            rms_norm_eps=float(eps),
            final_logit_softcapping=30.0 if softcap is None else float(softcap),
            pad_token_id=_opt_id(d.get("pad_token_id", 0), f"{w}.pad_token_id"),
            eos_token_id=_ids(d.get("eos_token_id", 1), f"{w}.eos_token_id"),
            bos_token_id=_opt_id(d.get("bos_token_id", 2), f"{w}.bos_token_id"),
            max_position_embeddings=d.get("max_position_embeddings", 131072),
        )

    def to_dict(self) -> dict[str, Any]:
        """The transformers 5.23 form (per_layer_config with zero-padded string keys)."""
        width = len(str(self.num_hidden_layers - 1))
        return {
            "model_type": "diffusion_gemma_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_experts": self.num_experts,
            "top_k_experts": self.top_k_experts,
            "num_hidden_layers": self.num_hidden_layers,
            "layer_types": list(self.layer_types),
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "per_layer_config": {
                str(i).zfill(width): dict(v) for i, v in sorted(self.per_layer_config.items())
            },
            "sliding_window": self.sliding_window,
            "rope_parameters": {k: dict(v) for k, v in self.rope_parameters.items()},
            "rms_norm_eps": self.rms_norm_eps,
            "final_logit_softcapping": self.final_logit_softcapping,
            "hidden_activation": _ACTIVATION,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_bidirectional_attention": "vision",
            "tie_word_embeddings": True,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id[0] if len(self.eos_token_id) == 1 else list(self.eos_token_id),
            "bos_token_id": self.bos_token_id,
            "max_position_embeddings": self.max_position_embeddings,
        }


def _parse_per_layer(d: dict, layer_types: list[str]) -> dict[int, dict[str, int]]:
    """Both geometry forms -> {layer: overrides}. Zero-padded string keys ("05") and ints are accepted."""
    w = "text_config"
    raw = d.get("per_layer_config")
    if raw is not None:
        if not isinstance(raw, dict):
            raise ValueError(f"{w}.per_layer_config: expected an object keyed by layer index")
        out: dict[int, dict[str, int]] = {}
        for k, v in raw.items():
            try:
                idx = int(k)
            except (TypeError, ValueError):
                raise ValueError(f"{w}.per_layer_config: key {k!r} is not a layer index") from None
            if not isinstance(v, dict):
                raise ValueError(f"{w}.per_layer_config[{k!r}]: expected an object")
            for name in v:
                _req_int(v, name, f"{w}.per_layer_config[{k!r}]")
            out[idx] = dict(v)
        return out
    gd = d.get("global_head_dim", 512)
    gkv = d.get("num_global_key_value_heads")
    over = {"head_dim": _req_int({"global_head_dim": gd}, "global_head_dim", w)}
    if gkv is not None:
        over["num_key_value_heads"] = _req_int(d, "num_global_key_value_heads", w)
    return {i: dict(over) for i, t in enumerate(layer_types) if t == FULL}
