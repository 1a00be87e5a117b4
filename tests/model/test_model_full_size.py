"""The full-size preset (google/diffusiongemma-26B-A4B-it geometry) on the meta device reproduces the released
tensor layout: 691 text tensors under our key map, which together with the 356 vision tensors make the
checkpoint's 1047; about 25.8B parameters in all (25.25B text). Cross-checked against transformers' own
meta-device model with the same text config."""

from __future__ import annotations

import torch

from model import DiffusionGemma, DiffusionGemmaConfig
from model.weights import checkpoint_layout

# The release's vision tower geometry (27 SigLIP-So400m-style layers, standardize on). Not used by our model;
# it only completes the reference model so that its saved-key count can be compared with the release's 1047.
RELEASED_VISION = {
    "model_type": "gemma4_vision", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 72, "standardize": True,
}


def test_full_size_layout_matches_spec():
    cfg = DiffusionGemmaConfig.full_size()
    t = cfg.text
    assert [i for i in range(30) if not t.is_sliding(i)] == [5, 11, 17, 23, 29]
    layout = checkpoint_layout(cfg)
    assert len(layout) == 691
    shapes = {k: s for k, (_, s) in layout.items()}
    L = "model.decoder.layers."
    assert shapes[L + "0.self_attn.q_proj.weight"] == (4096, 2816)
    assert shapes[L + "0.self_attn.k_proj.weight"] == shapes[L + "0.self_attn.v_proj.weight"] == (2048, 2816)
    assert shapes[L + "0.self_attn.o_proj.weight"] == (2816, 4096)
    assert shapes[L + "0.self_attn.q_norm.weight"] == (256,)
    assert shapes[L + "5.self_attn.q_proj.weight"] == (8192, 2816)
    assert shapes[L + "5.self_attn.k_proj.weight"] == (1024, 2816)
    assert shapes[L + "5.self_attn.o_proj.weight"] == (2816, 8192)
    assert shapes[L + "5.self_attn.k_norm.weight"] == (512,)
    assert L + "5.self_attn.v_proj.weight" not in shapes
    assert shapes[L + "7.experts.gate_up_proj"] == (128, 1408, 2816)
    assert shapes[L + "7.experts.down_proj"] == (128, 2816, 704)
    assert shapes[L + "7.router.proj.weight"] == (128, 2816)
    assert shapes["model.decoder.embed_tokens.weight"] == (262144, 2816)
    assert shapes["model.encoder.language_model.layers.29.layer_scalar"] == (1,)
    assert "lm_head.weight" not in shapes

    with torch.device("meta"):
        model = DiffusionGemma(cfg)
    ours = dict(model.state_dict())
    assert {o for o, _ in layout.values()} == set(ours)  # every module tensor is in the key map, once
    assert all(tuple(ours[o].shape) == s for o, s in layout.values())
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e9 - 25.25) < 0.01, n
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    assert abs(experts / 1e9 - 22.84) < 0.01, experts


def test_full_size_matches_transformers_meta_model():
    from transformers import DiffusionGemmaConfig as HFConfig
    from transformers import DiffusionGemmaForBlockDiffusion

    ours = DiffusionGemmaConfig.full_size()
    hf_cfg = HFConfig(**{**ours.reference_kwargs(), "vision_config": RELEASED_VISION}, eos_token_id=[1, 106])
    with torch.device("meta"):
        hf = DiffusionGemmaForBlockDiffusion(hf_cfg)
    tied = hf.all_tied_weights_keys
    saved = {k: tuple(v.shape) for k, v in hf.state_dict().items() if k not in tied}
    assert len(saved) == 1047
    total = sum(p.numel() for p in hf.parameters())
    assert abs(total / 1e9 - 25.82) < 0.01, total
    text_saved = {
        k: s
        for k, s in saved.items()
        if not k.startswith(("model.encoder.vision_tower.", "model.encoder.embed_vision."))
    }
    assert text_saved == {k: s for k, (_, s) in checkpoint_layout(ours).items()}
