"""DiffusionGemma configuration: parse config.json / generation_config.json as transformers 5.23 writes them.

Owns the top-level `DiffusionGemmaConfig` (text stack, canvas length, stop ids, sampler defaults), the
checkpoint's sampler defaults `GenerationDefaults`, and the presets `tiny(**overrides)` and `full_size()`,
written as data in the checkpoint files' form (`TINY_TEXT`, `FULL_SIZE_TEXT`, `FULL_SIZE_GENERATION`) and
read by the parsers here. The text stack's `TextConfig` lives in model/text_config.py and is re-exported here.
Anything we cannot run exactly like the reference raises ValueError naming the offending field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

import fsspec

from model.text_config import FULL, SLIDING, TextConfig, _ids, _opt_id

__all__ = ["FULL", "FULL_SIZE_GENERATION", "FULL_SIZE_TEXT", "PLACEHOLDER_VISION_CONFIG", "SLIDING",
           "TINY_TEXT", "DiffusionGemmaConfig", "GenerationDefaults", "TextConfig", "embed_scale"]


# transformers' DiffusionGemmaConfig builds a full-size vision tower when vision_config is absent, so a
# text-only checkpoint (the shipped small model, test and bench fixtures) names this tiny one; our loader
# skips its weights.
PLACEHOLDER_VISION_CONFIG: dict = {
    "model_type": "gemma4_vision", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "position_embedding_size": 64,
    "patch_size": 4, "pooling_kernel_size": 1,
}


# The tiny preset's text_config (`DiffusionGemmaConfig.tiny`), in config.json's global_head_dim form: full
# layers D=32 with one KV head, sliding layers D=16 with two. Layer types come from the layer count.
TINY_TEXT: dict[str, Any] = {
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 24,
    "num_experts": 8, "top_k_experts": 2, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32, "num_global_key_value_heads": 1,
    "sliding_window": 8,
}

# google/diffusiongemma-26B-A4B-it's text_config in the same form: 30 layers in transformers' default 5:1
# sliding/full pattern (full layers 5, 11, ..., 29: D=512 with two KV heads).
FULL_SIZE_TEXT: dict[str, Any] = {
    "vocab_size": 262_144, "hidden_size": 2816, "intermediate_size": 2112, "moe_intermediate_size": 704,
    "num_experts": 128, "top_k_experts": 8, "num_hidden_layers": 30, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 256, "global_head_dim": 512, "num_global_key_value_heads": 2,
    "sliding_window": 1024, "max_position_embeddings": 262_144,
}
# ... and its generation_config.json (the sampler defaults, stop ids <eos>, <turn|>, <|tool_response>).
FULL_SIZE_GENERATION: dict[str, Any] = {
    "max_new_tokens": 256, "max_denoising_steps": 48, "t_max": 0.8, "t_min": 0.4,
    "sampler_config": {"entropy_bound": 0.1}, "stability_threshold": 1, "confidence_threshold": 0.005,
    "eos_token_id": [1, 106, 50], "pad_token_id": 0,
}


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampler defaults from generation_config.json; None where the file does not set them."""

    max_new_tokens: int | None = None
    max_denoising_steps: int | None = None
    t_max: float | None = None
    t_min: float | None = None
    entropy_bound: float | None = None
    stability_threshold: int | None = None
    confidence_threshold: float | None = None
    eos_token_id: tuple[int, ...] | None = None
    pad_token_id: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationDefaults:
        if not isinstance(d, dict):
            raise ValueError("generation_config: expected an object")
        sc = d.get("sampler_config")
        eb = sc.get("entropy_bound") if isinstance(sc, dict) else d.get("entropy_bound")
        eos = d.get("eos_token_id")
        out = {
            "max_new_tokens": d.get("max_new_tokens"),
            "max_denoising_steps": d.get("max_denoising_steps"),
            "t_max": d.get("t_max"),
            "t_min": d.get("t_min"),
            "entropy_bound": eb,
            "stability_threshold": d.get("stability_threshold"),
            "confidence_threshold": d.get("confidence_threshold"),
            "eos_token_id": None if eos is None else _ids(eos, "generation_config.eos_token_id"),
            "pad_token_id": _opt_id(d.get("pad_token_id"), "generation_config.pad_token_id"),
        }
        for name in ("max_new_tokens", "max_denoising_steps", "stability_threshold"):
            v = out[name]
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"generation_config.{name}: expected a non-negative int, got {v!r}")
        for name in ("t_max", "t_min", "entropy_bound", "confidence_threshold"):
            v = out[name]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ValueError(f"generation_config.{name}: expected a non-negative number, got {v!r}")
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name == "entropy_bound":
                d["sampler_config"] = {"entropy_bound": float(v), "_cls_name": "EntropyBoundSamplerConfig"}
            else:
                d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


@dataclass(frozen=True)
class DiffusionGemmaConfig:
    """Top level: the text stack, the canvas length, stop ids and the checkpoint's sampler defaults."""

    text: TextConfig
    canvas_length: int = 256
    eos_token_ids: tuple[int, ...] = (1,)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    boi_token_id: int | None = 255_999
    eoi_token_id: int | None = 258_882
    image_token_id: int | None = 258_880
    # The raw vision_config, kept only so save_pretrained can write a config transformers can read back.
    vision_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.canvas_length, bool)
            or not isinstance(self.canvas_length, int)
            or self.canvas_length < 1
        ):
            raise ValueError(f"canvas_length: expected an int >= 1, got {self.canvas_length!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], generation: dict[str, Any] | None = None) -> DiffusionGemmaConfig:
        if not isinstance(d, dict):
            raise ValueError("config: expected a JSON object")
        if d.get("model_type") != "diffusion_gemma":
            raise ValueError(f"model_type: expected 'diffusion_gemma', got {d.get('model_type')!r}")
        if "text_config" not in d:
            raise ValueError("text_config: missing")
        if d.get("tie_word_embeddings", True) is not True:
            raise ValueError("tie_word_embeddings: untied LM heads are not supported")
        text = TextConfig.from_dict(d["text_config"])
        eos = d.get("eos_token_id")
        return cls(
            text=text,
            canvas_length=d.get("canvas_length", 256),
            eos_token_ids=_ids(eos, "eos_token_id") if eos is not None else text.eos_token_id,
            generation=GenerationDefaults.from_dict(generation)
            if generation is not None
            else GenerationDefaults(),
            boi_token_id=_opt_id(d.get("boi_token_id", 255_999), "boi_token_id"),
            eoi_token_id=_opt_id(d.get("eoi_token_id", 258_882), "eoi_token_id"),
            image_token_id=_opt_id(d.get("image_token_id", 258_880), "image_token_id"),
            vision_config=d.get("vision_config"),
        )

    @classmethod
    def from_dir(cls, path_or_url: str) -> DiffusionGemmaConfig:
        """Read config.json (+ generation_config.json when present) from a directory or fsspec URL."""
        base = str(path_or_url).rstrip("/")
        fs, root = fsspec.core.url_to_fs(base)
        cfg_path = f"{root}/config.json"
        if not fs.exists(cfg_path):
            raise FileNotFoundError(f"{base}/config.json: not found")
        with fs.open(cfg_path, "r") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{base}/config.json: invalid JSON ({e})") from None
        gen = None
        gen_path = f"{root}/generation_config.json"
        if fs.exists(gen_path):
            with fs.open(gen_path, "r") as f:
                gen = json.load(f)
        return cls.from_dict(d, generation=gen)

    def to_dict(self) -> dict[str, Any]:
        """config.json in the transformers 5.23 form (what save_pretrained writes)."""
        d: dict[str, Any] = {
            "architectures": ["DiffusionGemmaForBlockDiffusion"],
            "model_type": "diffusion_gemma",
            "text_config": self.text.to_dict(),
            "canvas_length": self.canvas_length,
            "eos_token_id": list(self.eos_token_ids),
            "boi_token_id": self.boi_token_id,
            "eoi_token_id": self.eoi_token_id,
            "image_token_id": self.image_token_id,
            "tie_word_embeddings": True,
        }
        if self.vision_config is not None:
            d["vision_config"] = self.vision_config
        return d

    def reference_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of transformers' DiffusionGemmaConfig that build this network (tests and benches
        build the reference model from them): the text stack, the canvas length and a vision tower (the
        placeholder unless this config names one). Stop ids and sampler defaults are not included."""
        return {"text_config": self.text.to_dict(), "canvas_length": self.canvas_length,
                "vision_config": self.vision_config or PLACEHOLDER_VISION_CONFIG}

    @classmethod
    def tiny(cls, canvas_length: int = 16, **text: Any) -> DiffusionGemmaConfig:
        """The spec's parity fixture geometry: 4 layers (S,F,S,F), W=8, 8 experts top-2, V=512, C=16.

        Keyword arguments override `TINY_TEXT` fields in config.json's form, so a test or bench names an
        odd geometry by what it changes. Layers alternate sliding/full (the last one full) unless
        `layer_types` is given; a field set to None is left out (its config.json default: layer_types=None
        is transformers' 5:1 pattern, num_global_key_value_heads=None keeps num_key_value_heads).
        """
        d = {**TINY_TEXT, **text}
        n = d["num_hidden_layers"]
        d.setdefault("layer_types", [SLIDING if i % 2 == 0 else FULL for i in range(n)])
        d = {k: v for k, v in d.items() if v is not None}
        return cls.from_dict(
            {"model_type": "diffusion_gemma", "text_config": d, "canvas_length": canvas_length,
             "eos_token_id": [1, 106]}
        )

    @classmethod
    def full_size(cls) -> DiffusionGemmaConfig:
        """google/diffusiongemma-26B-A4B-it's published geometry and sampler defaults."""
        return cls.from_dict(
            {"model_type": "diffusion_gemma", "text_config": FULL_SIZE_TEXT, "canvas_length": 256,
             "eos_token_id": [1, 106]},
            generation=FULL_SIZE_GENERATION,
        )


def embed_scale(hidden_size: int) -> float:
    """sqrt(H) as a python float; the model casts it to the weight dtype like the reference (bf16: 53.0)."""
    return math.sqrt(hidden_size)
