"""Config parsing: both full-attention geometry forms, softcap default, eos forms, generation_config.json,
presets round-tripping through the transformers 5.23 config.json form, the lazy package exports."""

from __future__ import annotations

import json

import pytest

from model import DiffusionGemmaConfig, TextConfig

BASE = {
    "model_type": "diffusion_gemma",
    "canvas_length": 16,
    "eos_token_id": [1, 106],
    "text_config": {
        "model_type": "diffusion_gemma_text",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "top_k_experts": 2,
        "num_hidden_layers": 12,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 8,
    },
}


def _cfg(**text):
    d = json.loads(json.dumps(BASE))
    d["text_config"].update(text)
    return d


def test_both_geometry_forms_agree():
    padded = {
        "05": {"head_dim": 32, "num_key_value_heads": 1},
        "11": {"head_dim": 32, "num_key_value_heads": 1},
    }
    a = DiffusionGemmaConfig.from_dict(_cfg(per_layer_config=padded))
    b = DiffusionGemmaConfig.from_dict(_cfg(global_head_dim=32, num_global_key_value_heads=1))
    assert a == b
    t = a.text
    assert [i for i in range(12) if not t.is_sliding(i)] == [5, 11]  # default 5:1 pattern
    assert (t.layer_head_dim(5), t.layer_kv_heads(5), t.layer_head_dim(4), t.layer_kv_heads(4)) == (
        32,
        1,
        16,
        2,
    )
    # without num_global_key_value_heads the full layers keep num_key_value_heads
    c = DiffusionGemmaConfig.from_dict(_cfg(global_head_dim=32)).text
    assert (c.layer_head_dim(11), c.layer_kv_heads(11)) == (32, 2)


def test_defaults_softcap_eos_and_last_layer_forced_full():
    cfg = DiffusionGemmaConfig.from_dict(_cfg(layer_types=["sliding_attention"] * 12))
    assert cfg.text.final_logit_softcapping == 30.0
    assert cfg.text.layer_types[-1] == "full_attention"
    assert cfg.eos_token_ids == (1, 106) and cfg.canvas_length == 16
    assert cfg.text.rope(0)["rope_type"] == "default" and cfg.text.rope(11)["rope_type"] == "proportional"
    d = _cfg(final_logit_softcapping=50.0)
    d["eos_token_id"] = 1
    cfg = DiffusionGemmaConfig.from_dict(d)
    assert cfg.text.final_logit_softcapping == 50.0 and cfg.eos_token_ids == (1,)


def test_generation_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_cfg()))
    gen = {
        "max_new_tokens": 256,
        "max_denoising_steps": 48,
        "t_max": 0.8,
        "t_min": 0.4,
        "stability_threshold": 1,
        "confidence_threshold": 0.005,
        "eos_token_id": [1, 106, 50],
        "pad_token_id": 0,
        "sampler_config": {"entropy_bound": 0.1, "_cls_name": "EntropyBoundSamplerConfig"},
    }
    (tmp_path / "generation_config.json").write_text(json.dumps(gen))
    g = DiffusionGemmaConfig.from_dir(str(tmp_path)).generation
    assert g.max_denoising_steps == 48 and g.entropy_bound == 0.1 and g.eos_token_id == (1, 106, 50)
    assert g.pad_token_id == 0 and g.t_max == 0.8
    assert DiffusionGemmaConfig.full_size().generation == g
    (tmp_path / "generation_config.json").write_text(json.dumps({"t_max": "hot"}))
    with pytest.raises(ValueError, match="generation_config.t_max"):
        DiffusionGemmaConfig.from_dir(str(tmp_path))


@pytest.mark.parametrize("preset", [DiffusionGemmaConfig.tiny, DiffusionGemmaConfig.full_size])
def test_presets_round_trip(preset):
    cfg = preset()
    again = DiffusionGemmaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())), cfg.generation.to_dict())
    assert again == cfg
    assert isinstance(cfg.text, TextConfig)


def test_full_size_geometry():
    t = DiffusionGemmaConfig.full_size().text
    assert (t.hidden_size, t.num_experts, t.top_k_experts, t.sliding_window) == (2816, 128, 8, 1024)
    assert t.to_dict()["per_layer_config"]["05"] == {"head_dim": 512, "num_key_value_heads": 2}


def test_engine_exports_the_functions():
    """`from engine import generate` is the function, also after engine/generate.py is imported."""
    import engine
    import engine.generate  # noqa: F401
    from engine import GenerationParams, generate

    assert callable(generate) and not isinstance(generate, type(engine)) and generate is engine.generate
    assert isinstance(GenerationParams, type)
