"""model/quant/scheme.py: which compressed-tensors configs load, which are refused (naming the field), and how
targets / ignore pick the scheme of a module; model/quant/quantize.py's on-load layouts."""

from __future__ import annotations

import pytest
import torch

from kernels.dequant import dequantize
from model.quant.quantize import pack_int4, quantize_fp8, quantize_w4a16
from model.quant.scheme import CheckpointQuant, QuantScheme, checkpoint_scheme

FP8_W = {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False}
FP8_A = {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True}
W4_W = {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}
NV_W = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "symmetric": True}


def _qc(weights, acts=None, ignore=("lm_head", "re:.*router.*"), targets=("Linear",), **top):
    group = {"targets": list(targets), "weights": weights, "input_activations": acts}
    return {"quant_method": "compressed-tensors", "format": "mixed", "quantization_status": "compressed",
            "config_groups": {"group_0": group}, "ignore": list(ignore), **top}


@pytest.mark.parametrize("weights,acts,want", [
    (FP8_W, FP8_A, ("fp8", None)),
    ({**FP8_W, "strategy": "tensor"}, {**FP8_A, "strategy": "tensor", "dynamic": False}, ("fp8", None)),
    (W4_W, None, ("w4a16", 128)),
    ({**W4_W, "symmetric": False, "group_size": 32}, None, ("w4a16", 32)),
    ({**W4_W, "strategy": "channel", "group_size": None}, None, ("w4a16", None)),
    (NV_W, {**NV_W, "dynamic": "local"}, ("nvfp4", 16)),
    (NV_W, None, ("nvfp4", 16)),
])
def test_supported_schemes_parse(weights, acts, want):
    assert checkpoint_scheme({"quantization_config": _qc(weights, acts)}) == want


@pytest.mark.parametrize("qc,needle", [
    (_qc({**FP8_W, "strategy": "block", "block_structure": [128, 128]}), "strategy"),
    (_qc({"num_bits": 8, "type": "int", "strategy": "channel"}), "int 8-bit weights are not supported"),
    (_qc({**NV_W, "group_size": 32}), "MXFP4"),
    (_qc(W4_W, {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True}), "input_activations"),
    (_qc(FP8_W, kv_cache_scheme={"num_bits": 8, "type": "float"}), "kv_cache_scheme"),
    ({**_qc(FP8_W), "quant_method": "modelopt"}, "quant_method"),
    (_qc(FP8_W, targets=("re:(",)), "regular expression"),
    ({**_qc(FP8_W), "config_groups": {}}, "config_groups"),
])
def test_unsupported_configs_are_refused_naming_the_field(qc, needle):
    with pytest.raises(ValueError, match="quantization_config") as err:
        CheckpointQuant.parse(qc)
    assert needle in str(err.value)


def test_ignore_wins_and_regex_targets_match_full_names():
    q = CheckpointQuant.parse(_qc(FP8_W, targets=("re:.*experts\\.\\d+\\..*", "q_proj")))
    assert q.scheme_for("model.decoder.layers.0.experts.5.gate_proj").name == "fp8"
    assert q.scheme_for("model.decoder.layers.0.self_attn.q_proj").name == "fp8"
    assert q.scheme_for("model.decoder.layers.0.self_attn.k_proj") is None
    assert q.scheme_for("model.decoder.layers.0.router.proj") is None
    experts_left_bf16 = CheckpointQuant.parse(_qc(FP8_W, ignore=("re:.*experts.*",)))
    assert experts_left_bf16.scheme_for("model.decoder.layers.0.experts.0.up_proj") is None
    assert checkpoint_scheme({"quantization_config": _qc(FP8_W, ignore=("re:.*experts.*",))}) == ("fp8", None)
    assert checkpoint_scheme({}) is None


def test_on_load_schemes():
    assert QuantScheme.on_load("w4a16") == QuantScheme("w4a16", 128)
    assert QuantScheme.on_load("fp8", 64) == QuantScheme("fp8", None)
    with pytest.raises(ValueError, match="nvfp4 is loaded from an NVFP4 checkpoint"):
        QuantScheme.on_load("nvfp4")


def test_on_load_quantizers_round_trip_within_half_a_step():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 7, 40, generator=g)
    w[0, 0] = 0  # an all-zero row stays exactly zero
    q4 = quantize_w4a16(w, 16)  # K=40: the last group holds 8 columns
    step = q4.scale.float().repeat_interleave(16, -1)[..., :40]
    err = (dequantize(q4, torch.float32) - w).abs()
    inside = (w <= 7 * step) & (w >= -8 * step)  # values the clip leaves in range: nearest grid point
    assert (err[inside] <= step[inside] / 2 + 1e-6).all(), err[inside].max()
    assert inside.float().mean() > 0.9  # the clip trims outliers only
    # the MSE search never does worse than plain max|w| scaling (its first candidate), group by group
    gw = torch.nn.functional.pad(w, (0, 8)).unflatten(-1, (3, 16))  # [3, 7, groups, 16]
    plain = (gw.abs().amax(-1, keepdim=True) / 7.5).clamp_min(1e-30).to(torch.bfloat16).float()
    # rounded to bf16 as kernels/dequant.py rounds the product
    plain_w = (torch.round(gw / plain).clamp(-8, 7) * plain).to(torch.bfloat16).float()
    plain_err = ((plain_w - gw) ** 2).sum(-1)
    ours = (torch.nn.functional.pad(err, (0, 8)).unflatten(-1, (3, 16)) ** 2).sum(-1)
    assert (ours <= plain_err + 1e-6).all() and ours.sum() < plain_err.sum()
    assert dequantize(q4, torch.float32)[0, 0].abs().max() == 0
    q8 = quantize_fp8(w)
    rel = (dequantize(q8, torch.float32) - w).abs() / w.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    assert rel.max() < 2 ** -4, rel.max()  # e4m3 keeps 3 mantissa bits
    assert dequantize(q8, torch.float32)[0, 0].abs().max() == 0


def test_pack_int4_layout_column_c_in_word_c_div_8_bits_4c():
    q = torch.tensor([[-8, -7, 0, 1, 2, 3, 4, 7, 5]])
    words = pack_int4(q)
    assert words.shape == (1, 2) and words.dtype == torch.int32
    nibbles = [(int(words[0, c // 8]) >> (4 * (c % 8))) & 0xF for c in range(9)]
    assert nibbles == [v + 8 for v in q[0].tolist()]
