"""GPTQ for the compressed-tensors test writer (tests/model/gptq.py, tests/model/gptq_hessians.py).

* On a random linear whose inputs are correlated (the case GPTQ exists for), GPTQ's output error
  ||X W^T - X Wq^T|| on the same grid (same scheme, same observer for the group qparams) is well below
  round-to-nearest's, on its calibration inputs and on fresh inputs from the same distribution.
* The writer's claim: with observer="gptq" the checkpoint's weights, as compressed-tensors decompresses them
  from the files, are exactly GPTQ's dequantized weights (the package did the packing, the integers are
  GPTQ's), and a linear without calibration data gets the observer's round-to-nearest.
* The statistics cover every linear the writer quantizes, under the same module names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compressed_tensors.quantization import apply_quantization_config
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from compressed_tensors.quantization.utils import generate_gparam
from ct_observers import calibrate, observe, quantized
from ct_writer import (
    build_tree,
    package_dequantized,
    quant_config,
    released_tensors,
    split_linears,
    write_ct_checkpoint,
)
from gptq import GPTQConfig, apply_gptq, gptq_quantize, layer_error
from gptq_hessians import CalibrationConfig, collect_hessians

from model import DiffusionGemma, load_tokenizer

SMALL = Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small"
BF16 = torch.bfloat16


def _correlated(n: int, k: int, seed: int) -> torch.Tensor:
    """n inputs of width k with strongly correlated, unevenly scaled features (a few latent directions plus
    noise, as hidden states are), fixed by seed."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(8, k, generator=torch.Generator().manual_seed(99))
    scale = torch.linspace(0.2, 3.0, k)
    return (torch.randn(n, 8, generator=gen) @ mix + 0.3 * torch.randn(n, k, generator=gen)) * scale


@pytest.mark.parametrize("scheme", ["w4a16", "nvfp4"])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_output_error_below_round_to_nearest(scheme, act_order):
    N, K = 64, 256
    args = quant_config(scheme).config_groups["group_0"].weights
    w = (torch.randn(N, K, generator=torch.Generator().manual_seed(1)) * 0.05).to(BF16)
    gs = generate_gparam(w.min(), w.max()) if scheme == "nvfp4" else None
    x_cal, x_new = _correlated(2048, K, seed=2), _correlated(2048, K, seed=3)
    H = x_cal.double().T @ x_cal.double()
    wq, scale, zero = gptq_quantize(w, H, args, GPTQConfig(act_order=act_order), gs)
    rtn = fake_quantize(w, *observe(w, args, "minmax", gs), args, global_scale=gs)
    assert wq.dtype == w.dtype and wq.shape == w.shape
    assert torch.equal(fake_quantize(wq, scale, zero, args, global_scale=gs), wq)  # on the grid
    for x in (x_cal, x_new):
        assert layer_error(x, w, wq) < 0.7 * layer_error(x, w, rtn)


def test_gptq_without_correlation_is_round_to_nearest():
    """H = identity: no column can compensate another, so GPTQ is round-to-nearest (its updates are 0) with
    the observer's qparams. GPTQ divides by the scale in fp32, so the reference rounds w in fp32 too (the
    package rounding a bf16 weight divides in bf16, which can tip a value lying next to a half step)."""
    args = quant_config("w4a16").config_groups["group_0"].weights
    w = (torch.randn(32, 128, generator=torch.Generator().manual_seed(4)) * 0.05).to(BF16)
    wq, scale, zero = gptq_quantize(w, torch.eye(128, dtype=torch.float64), args)
    rtn_scale, rtn_zero = observe(w, args, "minmax", None)
    assert torch.equal(scale, rtn_scale) and torch.equal(zero, rtn_zero)
    assert torch.equal(wq, fake_quantize(w.float(), scale, zero, args).to(BF16))


@pytest.fixture(scope="module")
def small():
    return DiffusionGemma.from_pretrained(str(SMALL), dtype=BF16)


def _synthetic_hessians(small) -> dict[str, torch.Tensor]:
    """A correlated H for the self-conditioning block and every quantized linear of layer 0 but one expert's
    down_proj (the others go without, as an idle expert does: the writer falls back to the observer)."""
    linears = split_linears(released_tensors(small))[0]
    names = [n for n in sorted(linears)
             if ("layers.0." in n or "self_conditioning" in n) and "router" not in n]
    out = {}
    for i, name in enumerate(names):
        x = _correlated(512, linears[name].shape[1], seed=10 + i)
        out[name] = x.double().T @ x.double()
    del out["model.decoder.layers.0.experts.5.down_proj"]
    return out


@pytest.mark.parametrize("scheme", ["w4a16", "nvfp4"])
def test_package_decompresses_to_gptq_weights(small, tmp_path, scheme):
    hessians = _synthetic_hessians(small)
    # GPTQ's dequantized weights, made the way the writer makes them, before any compression
    tree = build_tree(split_linears(released_tensors(small))[0])
    apply_quantization_config(tree, quant_config(scheme), show_progress=False)
    calibrate(tree)
    fallback = apply_gptq(tree, hessians)
    gptq = {n: m.weight.detach().clone() for n, m in tree.named_modules() if quantized(m)}
    assert len(hessians) == 4 + 3 + 3 * 8 + 3 - 1  # layer 0's attention, mlp, experts; self-conditioning
    assert set(fallback) == gptq.keys() - hessians.keys()

    deq = package_dequantized(write_ct_checkpoint(small, tmp_path / "gptq", scheme, observer="gptq",
                                                  hessians=hessians))
    rtn = package_dequantized(write_ct_checkpoint(small, tmp_path / "rtn", scheme))
    assert deq.keys() == gptq.keys()
    assert [n for n in hessians if not torch.equal(deq[n], gptq[n])] == []  # the claim
    # GPTQ moved every weight it had data for off round-to-nearest; the others are round-to-nearest
    assert sorted(n for n in deq if torch.equal(deq[n], rtn[n])) == sorted(fallback)


def test_hessians_cover_every_quantized_linear_and_split_the_experts_by_route():
    """batch=1 (no encoder pads), so a hook here on layer 0's experts sees exactly the tokens the statistics
    use: each token goes to top-2 distinct experts, so the experts' gate H sum to twice its Gram matrix."""
    fp32 = DiffusionGemma.from_pretrained(str(SMALL), dtype=torch.float32)
    seen = []
    hook = fp32.layers[0].experts.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].double()))
    cfg = CalibrationConfig(examples=6, noise_levels=(1.0,), batch=1)
    H = collect_hessians(fp32, load_tokenizer(str(SMALL)), cfg)
    hook.remove()
    tree = build_tree(split_linears(released_tensors(fp32))[0])
    apply_quantization_config(tree, quant_config("w4a16"), show_progress=False)
    names = {n for n, m in tree.named_modules() if quantized(m)}
    assert H.keys() <= names
    assert {n for n in names - H.keys() if ".experts." not in n} == set()  # only an idle expert may lack one
    for name, h in H.items():
        assert torch.allclose(h, h.T) and (h.diagonal() >= 0).all() and h.diagonal().sum() > 0, name
    base = "model.decoder.layers.0.experts."
    assert torch.equal(H[f"{base}0.gate_proj"], H[f"{base}0.up_proj"])  # one input: the routed tokens
    routed = sum(H[f"{base}{e}.gate_proj"] for e in range(8) if f"{base}{e}.gate_proj" in H)
    gram = sum(x.T @ x for x in seen)
    assert torch.allclose(routed, 2 * gram, rtol=1e-9, atol=1e-6)
