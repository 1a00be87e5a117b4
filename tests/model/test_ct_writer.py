"""The compressed-tensors checkpoint writer (tests/model/ct_writer.py) itself: per scheme, the files hold
exactly the published names, dtypes and shapes (per-expert linears, no fused expert tensors, bf16 router),
config.json's quantization_config names the scheme and format, and the package-dequantized twin differs from
the original weights (quantization happened) by at most the scheme's step. The bounds below are derived from
the scheme's arithmetic, not from the package's code: fp8 e4m3 keeps 3 mantissa bits (relative half-step
2^-4), int4 rounds to the nearest multiple of its group scale, e2m1's widest gap is 2 (between 4 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ct_writer import (
    PRESETS,
    dequantized_twin,
    package_dequantized,
    read_ct_tensors,
    released_tensors,
    split_linears,
    write_ct_checkpoint,
)
from safetensors import safe_open

from model import DiffusionGemma, DiffusionGemmaConfig
from model.weights import checkpoint_layout

SMALL = Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small"
FP8, BF16, F32 = torch.float8_e4m3fn, torch.bfloat16, torch.float32


@pytest.fixture(scope="module")
def small():
    return DiffusionGemma.from_pretrained(str(SMALL))  # bf16, as the published checkpoints


@pytest.fixture(scope="module")
def written(small, tmp_path_factory):
    """scheme -> (ct dir, twin dir) for the small model, each written once."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(scheme: str) -> tuple[Path, Path]:
        if scheme not in cache:
            root = tmp_path_factory.mktemp(scheme)
            ct = write_ct_checkpoint(small, root / "ct", scheme, source_dir=SMALL)
            cache[scheme] = ct, dequantized_twin(small, ct, root / "twin")
        return cache[scheme]

    return get


def _modules(config: DiffusionGemmaConfig) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """({quantized module name: (N, K)}, passthrough keys), from the released layout alone."""
    quant: dict[str, tuple[int, int]] = {}
    rest: set[str] = set()
    for key, (_, shape) in checkpoint_layout(config).items():
        if key.endswith(".experts.gate_up_proj"):
            E, F, H = shape
            for e in range(E):
                for p in ("gate_proj", "up_proj"):
                    quant[f"{key.removesuffix('gate_up_proj')}{e}.{p}"] = (F // 2, H)
        elif key.endswith(".experts.down_proj"):
            E, H, Im = shape
            for e in range(E):
                quant[f"{key.removesuffix('down_proj')}{e}.down_proj"] = (H, Im)
        elif key.endswith("_proj.weight") and ".router." not in key:
            quant[key.removesuffix(".weight")] = shape
        else:
            rest.add(key)
    return quant, rest


def _expected(scheme: str, n: int, k: int, dtype: torch.dtype, group: int = 128) -> dict:
    """suffix -> (dtype, shape) of one quantized linear's tensors in the published layout."""
    if scheme == "fp8_dynamic":
        return {"weight": (FP8, [n, k]), "weight_scale": (dtype, [n, 1])}
    if scheme == "fp8_tensor":
        return {"weight": (FP8, [n, k]), "weight_scale": (dtype, [1]), "input_scale": (dtype, [1])}
    if scheme.startswith("w4a16"):
        out = {"weight_packed": (torch.int32, [n, k // 8]), "weight_scale": (dtype, [n, k // group]),
               "weight_shape": (torch.int64, [2])}
        if scheme == "w4a16_asym":  # int4 zero points packed 8 to an int32 along the ROWS
            out["weight_zero_point"] = (torch.int32, [-(-n // 8), k // group])
        return out
    out = {"weight_packed": (torch.uint8, [n, k // 2]), "weight_scale": (FP8, [n, k // 16]),
           "weight_global_scale": (F32, [1])}
    if scheme == "nvfp4":
        out["input_global_scale"] = (F32, [1])
    return out


def _headers(ct: Path) -> dict[str, tuple[torch.dtype, list[int]]]:
    out = {}
    for f in sorted(ct.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():  # noqa: SIM118 (safe_open is not a dict)
                sl = h.get_slice(k)
                out[k] = (sl.get_dtype(), list(sl.get_shape()))
    return out


_DTAG = {FP8: "F8_E4M3", BF16: "BF16", F32: "F32", torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8"}


def _check_layout(ct: Path, scheme: str, config: DiffusionGemmaConfig, dtype: torch.dtype, group: int = 128):
    quant, rest = _modules(config)
    want = {}
    for name, (n, k) in quant.items():
        for suffix, (dt, shape) in _expected(scheme, n, k, dtype, group).items():
            want[f"{name}.{suffix}"] = (_DTAG[dt], shape)
    layout = checkpoint_layout(config)
    for key in rest:
        want[key] = (_DTAG[dtype], list(layout[key][1]))
    got = _headers(ct)
    assert sorted(got.keys() - want.keys()) == [] and sorted(want.keys() - got.keys()) == []
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert wrong == {}


@pytest.mark.parametrize("scheme", sorted(PRESETS))
def test_names_dtypes_shapes(small, written, scheme):
    ct, _ = written(scheme)
    _check_layout(ct, scheme, small.config, BF16)
    files = read_ct_tensors(ct)
    assert not any(k.endswith(("experts.gate_up_proj", "experts.down_proj")) for k in files)
    # per-expert modules of every layer, and the router kept as is
    t = small.config.text
    for i in range(t.num_hidden_layers):
        for e in range(t.num_experts):
            assert any(k.startswith(f"model.decoder.layers.{i}.experts.{e}.down_proj.") for k in files)
    state, (_, rest) = small.state_dict(), _modules(small.config)
    assert "model.decoder.layers.2.router.proj.weight" in rest
    for key, (ours, _) in checkpoint_layout(small.config).items():
        if key in rest:  # every unquantized tensor, the router included, is the model's, bit for bit
            assert files[key].dtype == BF16 and torch.equal(files[key], state[ours]), key
    if scheme.startswith("w4a16"):
        ws = files["model.decoder.layers.0.experts.5.down_proj.weight_shape"]
        assert ws.tolist() == [t.hidden_size, t.moe_intermediate_size]


_FORMAT = {"fp8_dynamic": "float-quantized", "fp8_tensor": "float-quantized", "w4a16": "pack-quantized",
           "w4a16_asym": "pack-quantized", "nvfp4": "nvfp4-pack-quantized",
           "nvfp4a16": "nvfp4-pack-quantized"}
_WEIGHTS = {  # (num_bits, type, strategy, group_size, symmetric)
    "fp8_dynamic": (8, "float", "channel", None, True),
    "fp8_tensor": (8, "float", "tensor", None, True),
    "w4a16": (4, "int", "group", 128, True),
    "w4a16_asym": (4, "int", "group", 128, False),
    "nvfp4": (4, "float", "tensor_group", 16, True),
    "nvfp4a16": (4, "float", "tensor_group", 16, True),
}
_INPUTS = {  # (num_bits, strategy, dynamic); the a16 schemes have none
    "fp8_dynamic": (8, "token", True),
    "fp8_tensor": (8, "tensor", False),
    "nvfp4": (4, "tensor_group", "local"),
}


@pytest.mark.parametrize("scheme", sorted(PRESETS))
def test_quantization_config(small, written, scheme):
    ct, _ = written(scheme)
    raw = json.loads((ct / "config.json").read_text())
    qc = raw["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == _FORMAT[scheme]
    assert qc["quantization_status"] == "compressed"
    assert list(qc["config_groups"]) == ["group_0"]
    g = qc["config_groups"]["group_0"]
    assert g["targets"] == ["Linear"] and g["format"] == _FORMAT[scheme]
    w = g["weights"]
    assert (w["num_bits"], w["type"], w["strategy"], w["group_size"], w["symmetric"]) == _WEIGHTS[scheme]
    a = g["input_activations"]
    if scheme in _INPUTS:
        assert (a["num_bits"], a["strategy"], a["dynamic"]) == _INPUTS[scheme]
    else:
        assert a is None
    routers = [f"model.decoder.layers.{i}.router.proj" for i in range(small.config.text.num_hidden_layers)]
    assert sorted(qc["ignore"]) == routers
    # the rest is our save_pretrained's config; tokenizer files came along
    assert DiffusionGemmaConfig.from_dir(str(ct)) == small.config and raw["dtype"] == "bfloat16"
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (ct / name).is_file(), name


def _allowed(scheme: str, files: dict[str, torch.Tensor], name: str, w: torch.Tensor) -> torch.Tensor:
    """Largest |dequantized - original| the scheme allows per element of module `name` (w [N, K] fp32)."""
    if scheme.startswith("fp8"):
        s = files[f"{name}.weight_scale"].float()  # [N, 1] or [1]
        # half a step of 3 mantissa bits, the subnormal half-step, bf16 roundings of w/s and of the product
        return w.abs() * (2**-4 + 2**-7) + s * 2**-9
    if scheme.startswith("w4a16"):
        g = w.shape[1] // files[f"{name}.weight_scale"].shape[1]
        s = files[f"{name}.weight_scale"].float().repeat_interleave(g, dim=1)
        # half a step (a clamped end value is half a step off too), plus bf16 rounding of w/s + zero
        return 0.6 * s + w.abs() * 2**-7
    s = files[f"{name}.weight_scale"].float() / files[f"{name}.weight_global_scale"]
    return s.repeat_interleave(16, dim=1) * 1.0 + w.abs() * 2**-7  # half of e2m1's widest gap (2)


@pytest.mark.parametrize("scheme", sorted(PRESETS))
def test_twin_is_quantized_within_one_step(small, written, scheme):
    ct, twin_dir = written(scheme)
    twin = DiffusionGemma.from_pretrained(str(twin_dir), dtype=F32)  # a plain checkpoint our loader reads
    assert json.loads((twin_dir / "config.json").read_text())["dtype"] == "bfloat16"
    assert "quantization_config" not in json.loads((twin_dir / "config.json").read_text())
    assert (twin_dir / "tokenizer.json").is_file()
    files = read_ct_tensors(ct)
    orig, new = small.state_dict(), twin.state_dict()
    layout = checkpoint_layout(small.config)
    quant, _ = _modules(small.config)
    changed = 0
    for key, (ours, _) in layout.items():
        a, b = orig[ours].float(), new[ours]
        if key.endswith(".experts.gate_up_proj"):
            im = a.shape[1] // 2
            base = key.removesuffix("gate_up_proj")
            parts = [(f"{base}{e}.{p}", e, sl) for e in range(a.shape[0])
                     for p, sl in (("gate_proj", slice(0, im)), ("up_proj", slice(im, None)))]
        elif key.endswith(".experts.down_proj"):
            base = key.removesuffix("down_proj")
            parts = [(f"{base}{e}.down_proj", e, slice(None)) for e in range(a.shape[0])]
        elif key.removesuffix(".weight") in quant:
            parts = [(key.removesuffix(".weight"), None, slice(None))]
        else:
            assert torch.equal(a, b), key  # unquantized: the original bf16 tensor
            continue
        for name, e, rows in parts:
            wa = (a if e is None else a[e])[rows]
            wb = (b if e is None else b[e])[rows]
            err = (wb - wa).abs()
            over = err > _allowed(scheme, files, name, wa)
            assert not over.any(), f"{name}: {int(over.sum())} elements beyond one step, max err {err.max()}"
            changed += int(not torch.equal(wa, wb))
    assert changed == len(quant)  # every quantized linear moved: quantization happened


def test_nvfp4_global_scales_shared_by_fused_layers(small, written, tmp_path):
    files = read_ct_tensors(written("nvfp4a16")[0])
    t = small.config.text

    def gs(name):
        return files[f"{name}.weight_global_scale"].item()

    own = read_ct_tensors(write_ct_checkpoint(small, tmp_path / "own", "nvfp4a16", fused_global_scales=False))
    differs = 0
    for i in range(t.num_hidden_layers):
        attn = f"model.decoder.layers.{i}.self_attn"
        qkv = [p for p in ("q_proj", "k_proj", "v_proj") if f"{attn}.{p}.weight_global_scale" in files]
        assert len({gs(f"{attn}.{p}") for p in qkv}) == 1
        assert gs(f"{attn}.q_proj") == min(own[f"{attn}.{p}.weight_global_scale"].item() for p in qkv)
        for e in range(t.num_experts):
            ex = f"model.decoder.layers.{i}.experts.{e}"
            assert gs(f"{ex}.gate_proj") == gs(f"{ex}.up_proj")
            differs += own[f"{ex}.gate_proj.weight_global_scale"] != own[f"{ex}.up_proj.weight_global_scale"]
    assert differs > 0  # unfused, gate and up get their own


def test_sharded_matches_single_file(small, written, tmp_path):
    single = read_ct_tensors(written("w4a16_asym")[0])
    ct = write_ct_checkpoint(small, tmp_path / "sharded", "w4a16_asym", shards=3)
    assert not (ct / "model.safetensors").exists()
    index = json.loads((ct / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    sharded = read_ct_tensors(ct)
    assert set(index["weight_map"]) == set(sharded) == set(single)
    assert all(torch.equal(sharded[k], single[k]) for k in single)
    by_module: dict[str, set[str]] = {}
    for k, f in index["weight_map"].items():
        by_module.setdefault(k.rsplit(".", 1)[0], set()).add(f)
    assert any(len(fs) > 1 for fs in by_module.values())  # a module straddles two shards


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return DiffusionGemma(DiffusionGemmaConfig.tiny())  # fp32, H=64, moe I=24


@pytest.mark.parametrize("scheme, group", [("w4a16", None), ("w4a16", 32), ("w4a16_asym", 32),
                                           ("nvfp4", None), ("nvfp4a16", None)])
def test_package_refuses_columns_not_divisible_by_the_group(tiny, tmp_path, scheme, group):
    # tiny: o_proj/down_proj K in {64, 128, 96, 24}; 128 does not divide 64, 32 and 16 do not divide 24
    with pytest.raises(ValueError, match="compressed-tensors refuses .*group_size"):
        write_ct_checkpoint(tiny, tmp_path / "ct", scheme, group_size=group)


@pytest.mark.parametrize("scheme", ["fp8_dynamic", "w4a16_asym"])
def test_tiny_fp32_model(tiny, tmp_path, scheme):
    group = 8 if scheme == "w4a16_asym" else None  # 8 divides every K of the tiny geometry
    ct = write_ct_checkpoint(tiny, tmp_path / "ct", scheme, group_size=group)
    _check_layout(ct, scheme, tiny.config, F32, group=8)  # scales and passthrough keep the model's fp32
    twin = DiffusionGemma.from_pretrained(str(dequantized_twin(tiny, ct, tmp_path / "twin")), dtype=F32)
    files, quant = read_ct_tensors(ct), _modules(tiny.config)[0]
    name = "model.decoder.layers.1.self_attn.k_proj"
    w = tiny.layers[1].self_attn.k_proj.weight.detach()
    w_bf16 = w.to(BF16).float()  # the twin is a bf16 checkpoint
    got = twin.layers[1].self_attn.k_proj.weight
    assert name in quant and not torch.equal(got, w_bf16)
    assert ((got - w).abs() <= _allowed(scheme, files, name, w) + w.abs() * 2**-8).all()


@pytest.mark.parametrize("scheme", ["w4a16", "nvfp4"])
def test_mse_observer_beats_min_max_group_by_group(small, tmp_path, scheme):
    """observer="mse" (llm-compressor's MSE observer) never has more squared error than min-max: its grid
    starts at min-max; and it is not min-max itself on real weights."""
    errs = {}
    for observer in ("minmax", "mse"):
        ct = write_ct_checkpoint(small, tmp_path / observer, scheme, observer=observer)
        deq = package_dequantized(ct)
        orig = {n: w for n, w in split_linears(released_tensors(small))[0].items()}
        errs[observer] = {n: ((deq[n].float() - orig[n].float()) ** 2).sum().item() for n in deq}
    assert all(errs["mse"][n] <= errs["minmax"][n] * (1 + 1e-6) for n in errs["mse"])
    assert sum(errs["mse"].values()) < 0.95 * sum(errs["minmax"].values())
