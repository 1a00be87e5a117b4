"""Checkpoint I/O: the declarative key map between the released safetensors names and our modules, a streaming
safetensors reader over any fsspec filesystem, and save/load.

What the released file holds (the names transformers' DiffusionGemma loads; v5.23.0, as pinned in
pyproject.toml: https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/models/diffusion_gemma/modeling_diffusion_gemma.py)
is the text stack once, under `model.decoder.*`, plus the encoder's own `layer_scalar` buffers under
`model.encoder.language_model.layers.{i}.layer_scalar`; no `lm_head.weight` (tied to the embeddings); vision
tensors under `model.encoder.vision_tower.*` and `model.encoder.embed_vision.*`, which a text-only model
skips. Loading builds the model on the meta device, checks every header against the key map first (missing /
unexpected / mis-shaped tensors fail before any data is read, naming key and expected shape), then reads
tensors one at a time into place, so peak host memory stays near one copy of the weights.
Only safetensors is ever read: `.bin` / `.pt` checkpoints are refused, nothing is unpickled.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import fsspec
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from torch import nn

from model.config import DiffusionGemmaConfig
from model.quant.checkpoint import OnLoadQuantizer, QuantPlan, load_quantized, unquantized_experts_warning
from model.quant.scheme import CheckpointQuant, QuantScheme

TEXT = "model.decoder."
ENCODER_TEXT = "model.encoder.language_model."  # fallback location of text weights (tied copies)
SKIPPED = ("model.encoder.vision_tower.", "model.encoder.embed_vision.")
OPTIONAL_TIED = "lm_head.weight"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# Per-layer tensors: (name under layers.{i}., symbolic shape, sliding layers only). Symbols: H hidden,
# QD = heads*D, KD = kv_heads*D (per layer), D head dim (per layer), I dense width, F = 2*moe width,
# Im moe width, E experts. The same names are used by our Block modules.
LAYER_TENSORS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("input_layernorm.weight", ("H",), False),
    ("self_attn.q_proj.weight", ("QD", "H"), False),
    ("self_attn.k_proj.weight", ("KD", "H"), False),
    ("self_attn.v_proj.weight", ("KD", "H"), True),
    ("self_attn.o_proj.weight", ("H", "QD"), False),
    ("self_attn.q_norm.weight", ("D",), False),
    ("self_attn.k_norm.weight", ("D",), False),
    ("post_attention_layernorm.weight", ("H",), False),
    ("pre_feedforward_layernorm.weight", ("H",), False),
    ("mlp.gate_proj.weight", ("I", "H"), False),
    ("mlp.up_proj.weight", ("I", "H"), False),
    ("mlp.down_proj.weight", ("H", "I"), False),
    ("post_feedforward_layernorm_1.weight", ("H",), False),
    ("router.proj.weight", ("E", "H"), False),
    ("router.scale", ("H",), False),
    ("router.per_expert_scale", ("E",), False),
    ("pre_feedforward_layernorm_2.weight", ("H",), False),
    ("experts.gate_up_proj", ("E", "F", "H"), False),
    ("experts.down_proj", ("E", "H", "Im"), False),
    ("post_feedforward_layernorm_2.weight", ("H",), False),
    ("post_feedforward_layernorm.weight", ("H",), False),
    ("layer_scalar", ("1",), False),
)
# Model-level tensors: (our name, symbolic shape); released name is TEXT + our name.
TOP_TENSORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embed_tokens.weight", ("V", "H")),
    ("norm.weight", ("H",)),
    ("self_conditioning.pre_norm.weight", ("H",)),
    ("self_conditioning.gate_proj.weight", ("I", "H")),
    ("self_conditioning.up_proj.weight", ("I", "H")),
    ("self_conditioning.down_proj.weight", ("H", "I")),
)

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,  # fp8 quantized weights and nvfp4 group scales (model/quant/)
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def checkpoint_layout(config: DiffusionGemmaConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """released key -> (our state_dict key, shape) for every text tensor the checkpoint must hold."""
    t = config.text
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    base = {
        "H": t.hidden_size,
        "I": t.intermediate_size,
        "F": 2 * t.moe_intermediate_size,
        "Im": t.moe_intermediate_size,
        "E": t.num_experts,
        "V": t.vocab_size,
        "1": 1,
    }
    for name, sym in TOP_TENSORS:
        out[TEXT + name] = (name, tuple(base[s] for s in sym))
    for i in range(t.num_hidden_layers):
        D, KV = t.layer_head_dim(i), t.layer_kv_heads(i)
        dims = {**base, "D": D, "QD": t.num_attention_heads * D, "KD": KV * D}
        for name, sym, sliding_only in LAYER_TENSORS:
            if sliding_only and not t.is_sliding(i):
                continue
            ours = f"layers.{i}.{name}"
            out[f"{TEXT}layers.{i}.{name}"] = (ours, tuple(dims[s] for s in sym))
        out[f"{ENCODER_TEXT}layers.{i}.layer_scalar"] = (f"layers.{i}.encoder_layer_scalar", (1,))
    return out


# -- safetensors over fsspec ---------------------------------------------------------------------------
def read_header(f: Any, where: str) -> tuple[dict[str, dict], int]:
    """-> ({key: {"dtype", "shape", "data_offsets"}}, byte offset of the data section)."""
    raw = f.read(8)
    if len(raw) != 8:
        raise ValueError(f"{where}: not a safetensors file (truncated header)")
    (n,) = struct.unpack("<Q", raw)
    if n > 100 * 2**20:
        raise ValueError(f"{where}: not a safetensors file (header length {n})")
    try:
        header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def read_tensor(f: Any, entry: dict, data_start: int, where: str) -> torch.Tensor:
    start, end = entry["data_offsets"]
    if entry["dtype"] not in _DTYPES:
        raise ValueError(f"{where}: unsupported dtype {entry['dtype']}")
    buf = bytearray(end - start)
    f.seek(data_start + start)
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = f.readinto(view[got:])
        if not n:
            raise ValueError(f"{where}: file truncated")
        got += n
    dtype = _DTYPES[entry["dtype"]]
    if not buf:
        return torch.empty(entry["shape"], dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(entry["shape"])


def _weight_files(fs: Any, root: str, where: str) -> list[str]:
    """The safetensors files of a checkpoint dir (sharded index or single file); refuses pickle formats."""
    index = f"{root}/model.safetensors.index.json"
    if fs.exists(index):
        with fs.open(index, "r") as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{where}/model.safetensors.index.json: missing or empty 'weight_map'")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not name.endswith(".safetensors"):
                raise ValueError(f"{where}/{name}: only .safetensors shards are loaded (no unpickling)")
        return [f"{root}/{name}" for name in files]
    single = f"{root}/model.safetensors"
    if fs.exists(single):
        return [single]
    pickles = (
        [p for p in fs.ls(root, detail=False) if str(p).endswith(PICKLE_SUFFIXES)] if fs.exists(root) else []
    )
    if pickles:
        names = ", ".join(str(p).rsplit("/", 1)[-1] for p in pickles)
        raise ValueError(
            f"{where}: only pickle checkpoints found ({names}); refusing to unpickle, "
            "convert them to safetensors"
        )
    raise FileNotFoundError(f"{where}: no model.safetensors or model.safetensors.index.json")


def _plan(config: DiffusionGemmaConfig, headers: dict[str, dict[str, dict]], where: str,
          quant: QuantPlan | None = None):
    """Match headers to the key map -> {our key: (file, released key)}; raise on any mismatch. With `quant`,
    the quantized linears' stored parts are matched by it instead (model/quant/checkpoint.py)."""
    layout = checkpoint_layout(config)
    if quant is not None:
        layout = {k: v for k, v in layout.items() if v[0] not in quant.replaced}
    plan: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    fallback: dict[str, tuple[str, str]] = {}
    for path, header in headers.items():
        for key, entry in header.items():
            if key.startswith(SKIPPED):
                continue
            claimed = quant.claim(key, path, entry) if quant is not None else False
            if isinstance(claimed, str):
                problems.append(claimed)
            if claimed:
                continue
            target = key
            if key == OPTIONAL_TIED:
                target = TEXT + "embed_tokens.weight"
            elif key not in layout and key.startswith(ENCODER_TEXT):
                target = TEXT + key[len(ENCODER_TEXT) :]
            if target not in layout:
                problems.append(
                    f"unexpected tensor {key!r} {list(entry['shape'])} in {path.rsplit('/', 1)[-1]}"
                )
                continue
            ours, shape = layout[target]
            if tuple(entry["shape"]) != shape:
                problems.append(f"tensor {key!r} has shape {list(entry['shape'])}, expected {list(shape)}")
                continue
            if target == key:
                plan[ours] = (path, key)
            else:
                fallback.setdefault(ours, (path, key))  # only used when the primary name is absent
    for ours, src in fallback.items():
        plan.setdefault(ours, src)
    for key, (ours, shape) in layout.items():
        if ours not in plan:
            problems.append(f"missing tensor {key!r} (expected shape {list(shape)})")
    problems += quant.missing() if quant is not None else []
    if problems:
        more = f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ValueError(f"{where}: checkpoint does not match the config: " + "; ".join(problems[:20]) + more)
    return plan


def _assign(model: nn.Module, ours: str, tensor: torch.Tensor) -> None:
    mod_name, _, name = ours.rpartition(".")
    mod = model.get_submodule(mod_name)
    if name in mod._parameters:
        mod._parameters[name] = nn.Parameter(tensor, requires_grad=mod._parameters[name].requires_grad)
    else:
        mod._buffers[name] = tensor


def load_pretrained(
    cls: type, path_or_url: str, *, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu",
    quantization: str | None = None,
) -> nn.Module:
    """Load a checkpoint; a compressed-tensors one (config.json `quantization_config`) loads quantized, and
    `quantization` ("fp8" | "w4a16") quantizes a bf16 checkpoint tensor by tensor as it is read."""
    where = str(path_or_url).rstrip("/")
    config = DiffusionGemmaConfig.from_dir(where)
    fs, root = fsspec.core.url_to_fs(where)
    with fs.open(f"{root.rstrip('/')}/config.json", "r") as f:
        stored_qc = json.load(f).get("quantization_config")
    stored = CheckpointQuant.parse(stored_qc, f"{where}/config.json") if stored_qc is not None else None
    if stored is not None and quantization is not None:
        raise ValueError(f"{where}: the checkpoint is already quantized (compressed-tensors); remove "
                         f"quantization={quantization!r} (model.quantization / --quantization)")
    on_load = OnLoadQuantizer(config, QuantScheme.on_load(quantization), device) if quantization else None
    files = _weight_files(fs, root.rstrip("/"), where)
    headers: dict[str, dict[str, dict]] = {}
    starts: dict[str, int] = {}
    for path in files:
        with fs.open(path, "rb") as f:
            headers[path], starts[path] = read_header(f, path)
    qplan = QuantPlan(config, checkpoint_layout(config), stored, where) if stored is not None else None
    plan = _plan(config, headers, where, qplan)
    unquantized_experts_warning(config, qplan, where)
    with torch.device("meta"):
        model = cls(config)
    by_file: dict[str, list[tuple[str, str]]] = {}
    for ours, (path, key) in plan.items():
        by_file.setdefault(path, []).append((ours, key))
    for path, items in by_file.items():
        items.sort(key=lambda it: headers[path][it[1]]["data_offsets"][0])  # sequential reads
        with fs.open(path, "rb") as f:
            for ours, key in items:
                t = read_tensor(f, headers[path][key], starts[path], f"{path}:{key}")
                if on_load is not None and ours in on_load.targets:
                    on_load.put(model, ours, t)
                    continue
                _assign(model, ours, t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype))
    if qplan is not None:
        def read(path: str, key: str) -> torch.Tensor:
            with fs.open(path, "rb") as f:
                return read_tensor(f, headers[path][key], starts[path], f"{path}:{key}")

        load_quantized(model, qplan, read, device)
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if left:
        raise ValueError(f"{where}: tensors not loaded: {left[:10]}")
    return model.eval()


def save_pretrained(model: nn.Module, directory: str) -> None:
    """config.json (transformers 5.23 form), generation_config.json when set, model.safetensors."""
    config: DiffusionGemmaConfig = model.config
    fs, root = fsspec.core.url_to_fs(str(directory).rstrip("/"))
    fs.makedirs(root, exist_ok=True)
    state = model.state_dict()
    tensors = {
        key: state[ours].detach().to("cpu").contiguous()
        for key, (ours, _) in checkpoint_layout(config).items()
    }
    cfg = config.to_dict()
    cfg["dtype"] = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    with fs.open(f"{root}/config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    gen = config.generation.to_dict()
    if gen:
        with fs.open(f"{root}/generation_config.json", "w") as f:
            json.dump(gen, f, indent=2)
    if "file" in fs.protocol:
        save_file(tensors, f"{root}/model.safetensors", metadata={"format": "pt"})
    else:  # remote: serialise in memory, then upload
        with fs.open(f"{root}/model.safetensors", "wb") as f:
            f.write(st_save(tensors, metadata={"format": "pt"}))


def dtype_name(dtype: torch.dtype) -> str:
    """safetensors dtype tag of a torch dtype (used by tests that hand-craft files)."""
    return _NAMES[dtype]
