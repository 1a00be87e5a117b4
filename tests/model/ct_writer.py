"""Test oracle for quantized checkpoints: compressed-tensors checkpoints of our models written by the real
`compressed_tensors` package (https://github.com/neuralmagic/compressed-tensors), and their "dequantized
twins" made by the same package's decompression. No packing or dequantization code lives here, so a loader
checked against these files cannot share a misreading of the format with its oracle.

Published layout (what the community DiffusionGemma checkpoints hold, and vLLM's gemma4 loader reads): every
linear keeps its released module name (`model.decoder.layers.{i}.self_attn.q_proj`, `...mlp.gate_proj`,
`model.decoder.self_conditioning.up_proj`, ...); the fused experts of the bf16 checkpoint
(`experts.gate_up_proj` [E, 2I, H] = gate rows then up rows, `experts.down_proj` [E, H, I]) are stored per
expert as `model.decoder.layers.{i}.experts.{e}.{gate,up,down}_proj`. Each quantized linear holds the
package's compressed tensors for its scheme; the router (`router.proj`) is ignored and stays in the model
dtype, as do embeddings, norms and scalars. config.json gets `quantization_config` from
`ModelCompressor.update_config`.

How: an nn.Module tree whose `named_modules()` names are the checkpoint module names gets the scheme through
`apply_quantization_config`; its weight qparams are computed the way llm-compressor's weight calibration
does (tests/model/ct_observers.py: its min-max or MSE observer, with compressed-tensors' own
`calculate_qparams` / `generate_gparam`; for nvfp4 the global scale is shared by q/k/v and by gate/up, as
llm-compressor's fused-layer rule does for vLLM's fused modules), or, with observer="gptq", the weights and
their qparams are GPTQ's (tests/model/gptq.py, from calibration statistics of tests/model/gptq_hessians.py),
as the published 4-bit checkpoints are made; `ModelCompressor.compress_model` then compresses it and its
state dict is saved as is. llm-compressor: https://github.com/vllm-project/llm-compressor.

Legend: N output rows, K input columns of a linear's weight w_NK; G columns per scale group.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationStrategy,
    apply_quantization_config,
    preset_name_to_scheme,
)
from ct_observers import OBSERVERS, calibrate, quantized
from gptq import GPTQConfig, apply_gptq
from gptq_hessians import CalibrationConfig, collect_hessians
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from model import load_tokenizer
from model.config import DiffusionGemmaConfig
from model.transformer import DiffusionGemma
from model.weights import checkpoint_layout

Tensors = dict[str, torch.Tensor]

# our scheme name -> compressed-tensors preset (PRESET_SCHEMES in the package's quantization/quant_scheme.py)
PRESETS = {
    "fp8_dynamic": "FP8_DYNAMIC",  # fp8 weights, per-channel scale; dynamic per-token fp8 activations
    "fp8_tensor": "FP8",  # fp8 weights, per-tensor scale; static per-tensor fp8 activations (input_scale)
    "w4a16": "W4A16",  # int4 symmetric, group 128
    "w4a16_asym": "W4A16_ASYM",  # int4 with zero points, group 128
    "nvfp4": "NVFP4",  # e2m1, fp8 group-16 scales, fp32 global scale; fp4 activations (input_global_scale)
    "nvfp4a16": "NVFP4A16",  # the same weights, bf16 activations
}
IGNORE = ["re:.*router.*"]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "router.proj")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja")


class _Node(nn.Module):
    """A container module; its place in the tree gives the checkpoint module name."""


def quant_config(scheme: str, group_size: int | None = None) -> QuantizationConfig:
    """The package's QuantizationConfig for one of PRESETS (all Linear modules but the router)."""
    if scheme not in PRESETS:
        raise ValueError(f"scheme: expected one of {sorted(PRESETS)}, got {scheme!r}")
    qs = preset_name_to_scheme(PRESETS[scheme], ["Linear"])
    if group_size is not None:
        if qs.weights.strategy != QuantizationStrategy.GROUP:
            raise ValueError(f"group_size: scheme {scheme!r} has a fixed grouping ({qs.weights.strategy})")
        qs.weights = QuantizationArgs(**{**qs.weights.model_dump(), "group_size": group_size})
    return QuantizationConfig(config_groups={"group_0": qs}, ignore=list(IGNORE))


def released_tensors(model: DiffusionGemma) -> dict[str, torch.Tensor]:
    """{released key: tensor} of what our save_pretrained writes, on the CPU in the model's dtype."""
    state = model.state_dict()
    return {key: state[ours].detach().to("cpu") for key, (ours, _) in checkpoint_layout(model.config).items()}


def expert_rows(key: str, experts: int) -> list[list[str]] | None:
    """For a fused expert key: per expert, the checkpoint module names whose weights are stacked along the
    rows to make it (gate then up for gate_up_proj); None for any other key."""
    for fused, parts in (("gate_up_proj", ("gate_proj", "up_proj")), ("down_proj", ("down_proj",))):
        if key.endswith(f".experts.{fused}"):
            base = key.removesuffix(fused)
            return [[f"{base}{e}.{p}" for p in parts] for e in range(experts)]
    return None


def split_linears(tensors: Tensors) -> tuple[Tensors, Tensors]:
    """{released key: tensor} -> ({checkpoint module name: weight [N, K]} for every linear, experts split per
    expert, {released key: tensor} for everything else)."""
    linears: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        rows = expert_rows(key, t.shape[0]) if t.dim() == 3 else None
        if rows is not None:
            for e, names in enumerate(rows):
                for name, w_NK in zip(names, t[e].chunk(len(names)), strict=True):
                    linears[name] = w_NK
        elif key.endswith(tuple(f"{n}.weight" for n in LINEARS)):
            linears[key.removesuffix(".weight")] = t
        else:
            rest[key] = t
    return linears, rest


def build_tree(linears: dict[str, torch.Tensor]) -> nn.Module:
    """An nn.Module tree whose named_modules() are the checkpoint module names, one bias-free nn.Linear per
    entry holding (a copy of) its weight."""
    root = _Node()
    for name, w_NK in linears.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, _Node())
            node = node._modules[part]
        with torch.device("meta"):  # skips nn.Linear's random init
            lin = nn.Linear(w_NK.shape[1], w_NK.shape[0], bias=False, dtype=w_NK.dtype)
        lin.weight = nn.Parameter(w_NK.clone().contiguous(), requires_grad=False)
        node.add_module(leaf, lin)
    return root


def _save_tensors(tensors: dict[str, torch.Tensor], out: Path, shards: int) -> None:
    """model.safetensors, or `shards` files of about equal bytes (a module's tensors may straddle two shards,
    as in real checkpoints) plus model.safetensors.index.json."""
    meta = {"format": "pt"}
    if shards <= 1:
        save_file(tensors, str(out / "model.safetensors"), metadata=meta)
        return
    keys = sorted(tensors)
    nbytes = [tensors[k].numel() * tensors[k].element_size() for k in keys]
    total, per = sum(nbytes), sum(nbytes) / shards
    parts: list[list[str]] = [[] for _ in range(shards)]
    acc = 0
    for k, n in zip(keys, nbytes, strict=True):
        parts[min(int(acc // per), shards - 1)].append(k)
        acc += n
    weight_map = {}
    for i, part in enumerate(parts):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, str(out / name), metadata=meta)
        weight_map.update({k: name for k in part})
    with open(out / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _copy_tokenizer(source_dir: str | Path | None, out: Path) -> None:
    if source_dir is None:
        return
    for name in TOKENIZER_FILES:
        if (Path(source_dir) / name).is_file():
            shutil.copyfile(Path(source_dir) / name, out / name)


def write_ct_checkpoint(
    model: DiffusionGemma,
    out_dir: str | Path,
    scheme: str,
    *,
    group_size: int | None = None,
    shards: int = 1,
    source_dir: str | Path | None = None,
    fused_global_scales: bool = True,
    observer: str = "minmax",
    hessians: dict[str, torch.Tensor] | None = None,
    gptq: GPTQConfig | None = None,
) -> Path:
    """Write `model` as a compressed-tensors checkpoint in the published layout (module docstring) -> out_dir.

    scheme: a key of PRESETS; group_size overrides the w4a16 schemes' 128. The unquantized tensors keep the
    model's dtype (a bf16 model gives bf16 scales, as published; an fp32 one fp32 scales). source_dir: copy
    its tokenizer files. fused_global_scales=False gives every nvfp4 linear its own global scale. observer:
    "minmax" (llm-compressor's default) or "mse" (its MSE observer: the best shrink of min-max per group), or
    "gptq": GPTQ (`gptq` its knobs, GPTQConfig() by default) of every linear `hessians` has
    (gptq_hessians.collect_hessians); the rest (experts no calibration token reached) get gptq.observer's
    qparams.
    """
    if observer not in (*OBSERVERS, "gptq"):
        raise ValueError(f"observer: expected one of {(*OBSERVERS, 'gptq')}, got {observer!r}")
    if (observer == "gptq") != (hessians is not None):
        raise ValueError("observer='gptq' needs hessians, and only it uses them")
    gptq = gptq or GPTQConfig()
    out = Path(out_dir)
    qconfig = quant_config(scheme, group_size)
    linears, rest = split_linears(released_tensors(model))
    tree = build_tree(linears)
    apply_quantization_config(tree, qconfig, show_progress=False)
    try:  # the package's quantize (in calibration's fake_quantize, then in compression) checks the group
        calibrate(tree, fused_global_scales=fused_global_scales,
                  observer=gptq.observer if hessians is not None else observer)
        if hessians is not None:
            apply_gptq(tree, hessians, gptq)
        compressor = ModelCompressor.from_pretrained_model(tree)
        compressor.compress_model(tree)
    except ValueError as e:  # the package names no module; say which ones a group does not divide
        g = qconfig.config_groups["group_0"].weights.group_size
        odd = sorted({f"K={w.shape[1]}" for w in linears.values() if g and w.shape[1] % g})
        raise ValueError(f"{out}: compressed-tensors refuses scheme {scheme!r} (group {g}; linears with "
                         f"{', '.join(odd)}): {e}") from e
    tensors = {k: v.contiguous() for k, v in tree.state_dict().items()}
    clash = tensors.keys() & rest.keys()
    if clash:
        raise ValueError(f"{out}: tensors both quantized and passed through: {sorted(clash)[:5]}")
    model.save_pretrained(str(out))  # config.json, generation_config.json (its weights are replaced below)
    (out / "model.safetensors").unlink()
    _save_tensors({**rest, **tensors}, out, shards)
    compressor.update_config(str(out))
    _copy_tokenizer(source_dir, out)
    return out


def read_ct_tensors(ct_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint dir (single file or sharded), by name."""
    ct = Path(ct_dir)
    index = ct / "model.safetensors.index.json"
    files = ["model.safetensors"]
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    out: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(ct / name), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (safe_open is not a dict)
    return out


@torch.no_grad()
def package_dequantized(ct_dir: str | Path) -> dict[str, torch.Tensor]:
    """{checkpoint module name: weight [N, K]} of every quantized linear, as compressed-tensors'
    `ModelCompressor.decompress_model` rebuilds it from the files (the transformers load path: apply the
    config, compress to get the compressed parameter layout, load the files' tensors into it strictly, with
    their dtypes and shapes checked, then decompress). The tree is built in config.json's `dtype`, the dtype
    the checkpoint was written from."""
    ct = Path(ct_dir)
    raw = json.loads((ct / "config.json").read_text())
    config, dtype = DiffusionGemmaConfig.from_dir(str(ct)), getattr(torch, raw["dtype"])
    qconfig = QuantizationConfig.model_validate(raw["quantization_config"])
    files = read_ct_tensors(ct)
    shapes = {key: torch.empty(shape, device="meta") for key, (_, shape) in checkpoint_layout(config).items()}
    tree = build_tree({n: torch.zeros(w.shape, dtype=dtype) for n, w in split_linears(shapes)[0].items()})
    apply_quantization_config(tree, qconfig, show_progress=False)
    calibrate(tree)  # valid qparams for the zero weights, so the layout pass below is well defined
    compressor = ModelCompressor(quantization_config=qconfig)
    compressor.compress_model(tree)
    own = tree.state_dict()
    missing = sorted(own.keys() - files.keys())
    if missing:
        raise ValueError(f"{ct}: tensors of the compressed layout missing from the files: {missing[:5]}")
    bad = [k for k in own if own[k].dtype != files[k].dtype or own[k].shape != files[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(f"{ct}: {k} is {files[k].dtype} {list(files[k].shape)}, the package's compressed "
                         f"layout has {own[k].dtype} {list(own[k].shape)} ({len(bad)} such tensors)")
    tree.load_state_dict({k: files[k] for k in own}, strict=True, assign=True)
    compressor.decompress_model(tree)
    return {name: m.weight.detach() for name, m in tree.named_modules() if quantized(m)}


@torch.no_grad()
def dequantized_twin(model: DiffusionGemma, ct_dir: str | Path, out_dir: str | Path) -> Path:
    """Save `model` with every quantized weight replaced by compressed-tensors' dequantization of ct_dir's
    tensors (experts re-fused: gate rows then up rows), as a plain bf16 checkpoint (our save_pretrained) with
    ct_dir's tokenizer files -> out_dir. A quantized loader must reproduce its weights exactly."""
    ct, out = Path(ct_dir), Path(out_dir)
    deq = package_dequantized(ct)
    twin = copy.deepcopy(model).to(torch.bfloat16)
    state = twin.state_dict()
    used: set[str] = set()
    for key, (ours, _) in checkpoint_layout(model.config).items():
        rows = expert_rows(key, state[ours].shape[0]) if state[ours].dim() == 3 else None
        if rows is not None and all(n in deq for names in rows for n in names):
            state[ours].copy_(torch.stack([torch.cat([deq[n] for n in names]) for names in rows]))
            used.update(n for names in rows for n in names)
        elif key.removesuffix(".weight") in deq:
            state[ours].copy_(deq[key.removesuffix(".weight")])
            used.add(key.removesuffix(".weight"))
    left = sorted(deq.keys() - used)
    if left:
        raise ValueError(f"{ct}: quantized modules with no place in our layout: {left[:5]}")
    twin.save_pretrained(str(out))
    _copy_tokenizer(ct, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python tests/model/ct_writer.py SCHEME OUT [--model DIR]`: a compressed-tensors copy of a model (the
    shipped small model by default, in bf16) for quality runs (`python -m train.evaluate --model OUT`).
    --observer gptq: GPTQ on statistics of the model run in fp32 on train-split examples."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("scheme", choices=sorted(PRESETS))
    ap.add_argument("out")
    small = Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small"
    ap.add_argument("--model", default=str(small))
    ap.add_argument("--observer", choices=(*OBSERVERS, "gptq"), default="minmax")
    ap.add_argument("--examples", type=int, default=CalibrationConfig.examples, help="gptq: train examples")
    ap.add_argument("--act-order", action="store_true", help="gptq: columns by decreasing diag(H)")
    ap.add_argument("--dampening", type=float, default=GPTQConfig.dampening, help="gptq: of mean diag(H)")
    ap.add_argument("--group-observer", choices=OBSERVERS, default="minmax", help="gptq: group qparams")
    a = ap.parse_args(argv)
    src = DiffusionGemma.from_pretrained(a.model, dtype=torch.bfloat16)
    hessians, gptq = None, GPTQConfig(dampening=a.dampening, act_order=a.act_order, observer=a.group_observer)
    if a.observer == "gptq":
        fp32 = DiffusionGemma.from_pretrained(a.model, dtype=torch.float32)
        hessians = collect_hessians(fp32, load_tokenizer(a.model), CalibrationConfig(examples=a.examples))
        print(f"gptq: calibration data for {len(hessians)} linears (the others: round-to-nearest)")
    print(write_ct_checkpoint(src, a.out, a.scheme, source_dir=a.model, observer=a.observer,
                              hessians=hessians, gptq=gptq))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
