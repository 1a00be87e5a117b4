"""Quantized loading (model/quant/checkpoint.py via model/weights.py) against checkpoints written by the real
compressed-tensors package (tests/model/ct_writer.py), in the published per-expert layout.

For every scheme: our dequantized weights equal the package's own decompression bit for bit; our logits equal
the dequantized twin's (the same model with those weights in bf16); the fp32 reference mode gives identical
tokens for the quantized model and its twin. Bad checkpoints fail at load naming the tensor or field.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from ct_writer import dequantized_twin, write_ct_checkpoint
from safetensors.torch import load_file, save_file

from engine.generate import generate
from kernels.dequant import dequantize
from model import DiffusionGemma
from model.moe import Experts
from model.quant.modules import QuantExperts, QuantLinear, weight_bytes

SMALL = Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small"
SCHEMES = ("fp8_dynamic", "fp8_tensor", "w4a16", "w4a16_asym", "nvfp4", "nvfp4a16")
# Same dequantized weights and the same torch path: only a GEMM's summation order could differ.
LOGIT_TOL = 1e-3


@pytest.fixture(scope="module")
def small_bf16():
    return DiffusionGemma.from_pretrained(str(SMALL), dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def written(small_bf16, tmp_path_factory):
    """scheme -> (compressed-tensors dir, dequantized twin dir), written once per module."""
    out = {}
    for scheme in SCHEMES:
        d = tmp_path_factory.mktemp(scheme)
        ct = write_ct_checkpoint(small_bf16, d / "ct", scheme, source_dir=SMALL, shards=2)
        out[scheme] = (ct, dequantized_twin(small_bf16, ct, d / "twin"))
    return out


def _logits(m: DiffusionGemma) -> torch.Tensor:
    ids = torch.randint(3, 3000, (2, 12), generator=torch.Generator().manual_seed(0))
    C = m.config.canvas_length
    cache = m.new_cache(2, 12 + C)
    pos, cpos = torch.arange(12)[None].expand(2, -1), torch.arange(12, 12 + C)[None].expand(2, -1)
    with torch.no_grad():
        m.encode(ids, cache, positions_BT=pos)
        canvas = torch.randint(0, 3000, (2, C), generator=torch.Generator().manual_seed(1))
        return m.decode(canvas, cache, positions_BC=cpos)


def _weight_diff(q: DiffusionGemma, twin: DiffusionGemma) -> tuple[float, int]:
    """(max |ours - twin| over every quantized weight, how many quantized modules)."""
    sd, worst, count = twin.state_dict(), 0.0, 0
    for name, mod in q.named_modules():
        pairs = []
        if isinstance(mod, QuantLinear):
            pairs = [(mod.qweight, sd[f"{name}.weight"])]
        elif isinstance(mod, QuantExperts):
            pairs = [(mod.qgate_up, sd[f"{name}.gate_up_proj"]), (mod.qdown, sd[f"{name}.down_proj"])]
        for qt, dense in pairs:
            count += 1
            worst = max(worst, (dequantize(qt, dense.dtype) - dense).abs().max().item())
    return worst, count


@pytest.mark.parametrize("scheme", SCHEMES)
def test_weights_and_logits_equal_the_package_dequantized_twin(scheme, written, small_bf16):
    ct, tw = written[scheme]
    q = DiffusionGemma.from_pretrained(str(ct), dtype=torch.bfloat16)
    twin = DiffusionGemma.from_pretrained(str(tw), dtype=torch.bfloat16)
    worst, count = _weight_diff(q, twin)
    t = q.config.text
    layers, sliding = t.num_hidden_layers, sum(t.is_sliding(i) for i in range(t.num_hidden_layers))
    # q, k, o + v (sliding layers) + dense MLP + experts' gate_up and down + self-conditioning MLP
    assert count == 3 * layers + sliding + 3 * layers + 2 * layers + 3
    assert worst == 0.0, f"{scheme}: our dequantization differs from compressed-tensors' by {worst}"
    diff = (_logits(q) - _logits(twin)).abs().max().item()
    assert diff <= LOGIT_TOL, f"{scheme}: logits differ from the dequantized twin by {diff}"
    # it is quantized (not a bf16 model in disguise): smaller, and not equal to the original weights
    assert weight_bytes(q) < 0.75 * weight_bytes(small_bf16)
    assert (_logits(q) - _logits(small_bf16)).abs().max().item() > 0


@pytest.mark.parametrize("scheme", ("fp8_dynamic", "w4a16_asym", "nvfp4"))
def test_fp32_reference_mode_tokens_identical_to_twin(scheme, written):
    ct, tw = written[scheme]
    prompt = torch.randint(3, 3000, (2, 10), generator=torch.Generator().manual_seed(3))
    valid = torch.ones_like(prompt)
    outs = []
    for d in (ct, tw):
        m = DiffusionGemma.from_pretrained(str(d), dtype=torch.float32)
        outs.append(generate(m, prompt, valid, mode="reference", seed=7, max_new_tokens=64,
                             max_denoising_steps=12))
    assert torch.equal(outs[0], outs[1])


def test_on_load_quantization_matches_its_own_dequantized_weights():
    base = DiffusionGemma.from_pretrained(str(SMALL), dtype=torch.float32)
    for scheme in ("fp8", "w4a16"):
        q = DiffusionGemma.from_pretrained(str(SMALL), dtype=torch.float32, quantization=scheme)
        twin = DiffusionGemma.from_pretrained(str(SMALL), dtype=torch.float32)
        sd = twin.state_dict()
        for name, mod in q.named_modules():
            if isinstance(mod, QuantLinear):
                sd[f"{name}.weight"].copy_(dequantize(mod.qweight, torch.float32))
            elif isinstance(mod, QuantExperts):
                sd[f"{name}.gate_up_proj"].copy_(dequantize(mod.qgate_up, torch.float32))
                sd[f"{name}.down_proj"].copy_(dequantize(mod.qdown, torch.float32))
        assert isinstance(q.layers[0].experts, QuantExperts)
        assert (_logits(q) - _logits(twin)).abs().max().item() <= LOGIT_TOL
        assert weight_bytes(q) < (0.45 if scheme == "fp8" else 0.3) * weight_bytes(base)


def _edit(src: Path, dst: Path, change) -> Path:
    """Copy a single-file checkpoint dir and apply change(tensors, config) to it."""
    shutil.copytree(src, dst)
    files = sorted(dst.glob("model-*.safetensors")) or [dst / "model.safetensors"]
    tensors = {}
    for f in files:
        tensors.update(load_file(str(f)))
        f.unlink()
    (dst / "model.safetensors.index.json").unlink(missing_ok=True)
    cfg = json.loads((dst / "config.json").read_text())
    change(tensors, cfg)
    save_file(tensors, str(dst / "model.safetensors"))
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_bad_quantized_checkpoints_fail_at_load_naming_the_problem(written, tmp_path):
    ct, _ = written["w4a16_asym"]
    key = "model.decoder.layers.1.experts.3.up_proj.weight_zero_point"
    cases = {
        "missing": (lambda t, c: t.pop(key), key),
        "shape": (lambda t, c: t.__setitem__(key, t[key][:, :0]), key),
        "extra": (lambda t, c: t.__setitem__("model.decoder.layers.0.mlp.up_proj.weight_bogus",
                                             torch.zeros(1)), "weight_bogus"),
        "scheme": (lambda t, c: c["quantization_config"]["config_groups"]["group_0"]["weights"].update(
            num_bits=8), "int 8-bit weights are not supported"),
    }
    for name, (change, needle) in cases.items():
        d = _edit(ct, tmp_path / name, change)
        with pytest.raises(ValueError) as err:
            DiffusionGemma.from_pretrained(str(d))
        assert needle in str(err.value), (name, str(err.value)[:300])
    with pytest.raises(ValueError, match="already quantized"):
        DiffusionGemma.from_pretrained(str(ct), quantization="fp8")


def test_experts_left_bf16_by_the_quantizer_load_with_a_warning(small_bf16, tmp_path, caplog):
    """The trap of nn.Linear-only tools: experts stored fused and bf16 beside quantized dense linears."""
    ct = write_ct_checkpoint(small_bf16, tmp_path / "ct", "fp8_dynamic", source_dir=SMALL)

    def unquantize_experts(t, c):
        for i in range(small_bf16.config.text.num_hidden_layers):
            for k in [k for k in t if f"layers.{i}.experts." in k]:
                del t[k]
            sd = small_bf16.state_dict()
            t[f"model.decoder.layers.{i}.experts.gate_up_proj"] = sd[f"layers.{i}.experts.gate_up_proj"]
            t[f"model.decoder.layers.{i}.experts.down_proj"] = sd[f"layers.{i}.experts.down_proj"]
        c["quantization_config"]["ignore"].append("re:.*experts.*")

    d = _edit(ct, tmp_path / "bf16_experts", unquantize_experts)
    with caplog.at_level(logging.WARNING):
        m = DiffusionGemma.from_pretrained(str(d), dtype=torch.bfloat16)
    assert type(m.layers[0].experts) is Experts
    assert isinstance(m.layers[0].self_attn.q_proj, QuantLinear)
    assert "stored unquantized" in caplog.text
