"""fp32 parity of our DiffusionGemma against transformers.DiffusionGemmaForBlockDiffusion (1e-5 abs).

Cases together cover: context longer than the sliding window, left padding in a batch of three, several
canvases, perturbed norms/scales with differing encoder/decoder layer_scalar, both config.json geometry forms,
no-padding batches (the reference's mask=None path), KV heads shared by all full layers. Extra cases come from
the JSON file named by $DGBATCH_PARITY_CONFIGS (see dg_oracle.env_cases).
"""

from __future__ import annotations

import json

import pytest
from dg_oracle import ENV_VAR, check_parity, env_cases, tiny_kwargs

TOL = 1e-5


def _assert_close(diffs: dict[str, float]) -> None:
    bad = {k: v for k, v in diffs.items() if not v <= TOL}
    assert not bad, f"parity beyond {TOL}: {bad} (all: {diffs})"


def test_parity_spec_fixture_padding_window_three_canvases(tmp_path):
    # batch of three, left padded (5/9/12 tokens), context > W=8, three canvases, per_layer_config form
    _assert_close(check_parity(tiny_kwargs(16), tmp_path, lengths=(5, 9, 12), canvases=3))


def test_parity_global_head_dim_form(tmp_path):
    # older config.json form (global_head_dim, no softcap); transformers' default layer pattern cut to 3
    # layers (S,S,F); W=4 < context; 4 experts top-3
    case = tiny_kwargs(8, vocab_size=256, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                       num_experts=4, top_k_experts=3, num_hidden_layers=3, layer_types=None,
                       num_attention_heads=2, num_key_value_heads=1, global_head_dim=24,
                       num_global_key_value_heads=2, sliding_window=4)
    del case["text_config"]["final_logit_softcapping"]  # left out, as older files do: defaults must agree
    _assert_close(check_parity(case, tmp_path, lengths=(6,), canvases=2, global_form=True, seed=1))


def test_parity_no_padding_full_layers_share_kv_heads(tmp_path):
    # no padding (the reference passes mask=None), window wider than the prompt, top-1 routing,
    # num_global_key_value_heads unset (full layers keep num_key_value_heads), softcap written explicitly
    case = tiny_kwargs(4, vocab_size=300, hidden_size=48, intermediate_size=64, moe_intermediate_size=8,
                       num_experts=5, top_k_experts=1, num_hidden_layers=2, num_attention_heads=6,
                       num_key_value_heads=3, head_dim=8, global_head_dim=16, num_global_key_value_heads=None,
                       sliding_window=12)
    _assert_close(check_parity(case, tmp_path, lengths=(7, 7), canvases=4, seed=2))


# With no env file this runs once with case=None and only checks that nothing was requested.
@pytest.mark.parametrize("case", env_cases() or [None], ids=lambda c: json.dumps(c, sort_keys=True)[:60])
def test_parity_env_cases(case, tmp_path):
    if case is None:
        assert env_cases() == []
        return
    _assert_close(check_parity(case, tmp_path))


def test_env_case_mechanism(tmp_path, monkeypatch):
    cases = [tiny_kwargs(8, sliding_window=5, top_k_experts=3)]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    monkeypatch.setenv(ENV_VAR, str(path))
    loaded = env_cases()
    assert loaded == cases
    for i, case in enumerate(loaded):
        work = tmp_path / f"case{i}"
        work.mkdir()
        _assert_close(check_parity(case, work))


def test_env_cases_reject_non_list(tmp_path, monkeypatch):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"text_config": {}}))
    monkeypatch.setenv(ENV_VAR, str(path))
    with pytest.raises(ValueError, match="JSON list"):
        env_cases()


def test_bf16_matches_reference_eager_grouped_mm(tmp_path):
    # bf16 numerics follow HF's grouped_mm experts (fp32 top-k sum) and eager attention; measured bit-exact on
    # CPU (bench/bf16_parity.py). The bound is far below the ~0.3 that a numerics change (eager experts, sdpa,
    # bf16 inv_freq) produces, without depending on bit-exact GEMMs across machines.
    import torch
    from dg_oracle import Reference, build_reference
    from transformers import DiffusionGemmaForBlockDiffusion

    from model import DiffusionGemma

    build_reference(tiny_kwargs(16)).to(torch.bfloat16).save_pretrained(tmp_path)
    hf = DiffusionGemmaForBlockDiffusion.from_pretrained(
        tmp_path, dtype=torch.bfloat16, attn_implementation="eager", experts_implementation="grouped_mm"
    ).eval()
    ours = DiffusionGemma.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    ids = torch.randint(3, 512, (1, 12), generator=torch.Generator().manual_seed(0))
    ref, cache = Reference(hf), ours.new_cache(1, 28)
    pos, cpos = torch.arange(12)[None], torch.arange(12, 28)[None]
    with torch.no_grad():
        ref.encode(ids, torch.ones(1, 12, dtype=torch.bool), pos.to(torch.int32))
        ours.encode(ids, cache, positions_BT=pos)
        canvas = torch.randint(0, 512, (1, 16), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(1, 28, dtype=torch.bool)
        theirs = ref.decode(canvas, mask, cpos.to(torch.int32))
        diff = (theirs - ours.decode(canvas, cache, positions_BC=cpos)).abs().max().item()
        sc = (theirs / 0.7).to(torch.bfloat16)
        theirs = ref.decode(canvas, mask, cpos.to(torch.int32), sc=sc)
        diff = max(
            diff,
            (theirs - ours.decode(canvas, cache, positions_BC=cpos, sc_logits_BCV=sc)).abs().max().item(),
        )
    assert diff <= 0.02, diff
