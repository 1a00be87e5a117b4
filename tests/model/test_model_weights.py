"""Checkpoint loading: save/reload round trip, sharded index, fsspec URLs, optional tied lm_head, and one test
per failure mode (each asserting that the message names the key / field and the expected shape)."""

from __future__ import annotations

import json

import fsspec
import pytest
import torch
from safetensors.torch import load_file, save_file

from model import DiffusionGemma, DiffusionGemmaConfig
from model.weights import checkpoint_layout


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = DiffusionGemma(DiffusionGemmaConfig.tiny()).eval()
    with torch.no_grad():
        for b in model.buffers():
            b.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(str(d))
    return model, d


def _copy(src, dst, edit=None):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    if edit:
        edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def _same(a: DiffusionGemma, b: DiffusionGemma) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), k


def test_round_trip_keys_and_values(saved):
    model, d = saved
    keys = set(load_file(str(d / "model.safetensors")))
    assert keys == set(checkpoint_layout(model.config))
    assert "lm_head.weight" not in keys
    assert all(k.startswith("model.decoder.") or k.endswith(".layer_scalar") for k in keys)
    loaded = DiffusionGemma.from_pretrained(str(d), dtype=torch.float32)
    _same(model, loaded)
    assert loaded.config == model.config
    bf = DiffusionGemma.from_pretrained(str(d))  # default dtype is bf16
    assert all(p.dtype == torch.bfloat16 for p in bf.state_dict().values())


def test_encoder_and_decoder_layer_scalars_are_separate(saved):
    model, d = saved
    t = load_file(str(d / "model.safetensors"))
    enc = t["model.encoder.language_model.layers.0.layer_scalar"]
    dec = t["model.decoder.layers.0.layer_scalar"]
    assert not torch.equal(enc, dec)
    assert torch.equal(model.layers[0].encoder_layer_scalar, enc)


def test_fsspec_memory_url(saved):
    model, d = saved
    fs = fsspec.filesystem("memory")
    for name in ("config.json", "model.safetensors"):
        fs.pipe(f"/ckpt/{name}", (d / name).read_bytes())
    _same(model, DiffusionGemma.from_pretrained("memory://ckpt", dtype=torch.float32))
    _same(model, DiffusionGemma.from_pretrained(f"file://{d}", dtype=torch.float32))


def test_sharded_index_with_vision_and_tied_head(saved, tmp_path):
    model, d = saved
    tensors = load_file(str(d / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map = {}
    for fname, keys in shards.items():
        part = {k: tensors[k] for k in keys}
        if fname.startswith(
            "model-00002"
        ):  # extras a released file may hold: vision tower, a tied lm_head copy
            part["model.encoder.vision_tower.patch_embedder.input_proj.weight"] = torch.zeros(3, 4)
            part["lm_head.weight"] = tensors["model.decoder.embed_tokens.weight"]
        save_file(part, str(tmp_path / fname))
        weight_map.update({k: fname for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    _same(model, DiffusionGemma.from_pretrained(str(tmp_path), dtype=torch.float32))


def test_text_weights_fall_back_to_encoder_names(saved, tmp_path):
    model, d = saved

    def move(t):
        t["model.encoder.language_model.norm.weight"] = t.pop("model.decoder.norm.weight")

    _same(model, DiffusionGemma.from_pretrained(str(_copy(d, tmp_path / "c", move)), dtype=torch.float32))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.pop("model.decoder.layers.1.self_attn.k_proj.weight"),
            r"missing tensor 'model\.decoder\.layers\.1\.self_attn\.k_proj\.weight' "
            r"\(expected shape \[32, 64\]\)",
        ),
        (
            lambda t: t.update({"model.decoder.layers.0.experts.down_proj": torch.zeros(8, 64, 25)}),
            r"'model\.decoder\.layers\.0\.experts\.down_proj' has shape \[8, 64, 25\], "
            r"expected \[8, 64, 24\]",
        ),
        (  # a full-attention layer has no v_proj (V comes from k_proj)
            lambda t: t.update({"model.decoder.layers.1.self_attn.v_proj.weight": torch.zeros(32, 64)}),
            r"unexpected tensor 'model\.decoder\.layers\.1\.self_attn\.v_proj\.weight'",
        ),
    ],
    ids=["missing", "wrong_shape", "unexpected"],
)
def test_bad_tensor_named_with_its_shape(saved, tmp_path, edit, message):
    _, d = saved
    with pytest.raises(ValueError, match=message):
        DiffusionGemma.from_pretrained(str(_copy(d, tmp_path / "c", edit)))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickle_checkpoint_refused(saved, tmp_path, name):
    _, d = saved
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    (tmp_path / name).write_bytes(b"\x80\x04not-unpickled")
    with pytest.raises(ValueError, match="refusing to unpickle") as ei:
        DiffusionGemma.from_pretrained(str(tmp_path))
    assert name in str(ei.value)


def test_pickle_shard_in_index_refused(saved, tmp_path):
    _, d = saved
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "pytorch_model.bin"}})
    )
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: only \.safetensors"):
        DiffusionGemma.from_pretrained(str(tmp_path))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c["text_config"].update(hidden_size="64"), "text_config.hidden_size"),
        (lambda c: c["text_config"].update(hidden_activation="relu"), "text_config.hidden_activation"),
        (
            lambda c: c["text_config"]["rope_parameters"]["full_attention"].update(rope_type="yarn"),
            "text_config.rope_parameters.full_attention.rope_type",
        ),
        (lambda c: c["text_config"].update(layer_types=["sliding_attention"] * 3), "text_config.layer_types"),
        (lambda c: c["text_config"].update(num_key_value_heads=3), "text_config.num_key_value_heads"),
        (
            lambda c: c["text_config"].update(per_layer_config={"x1": {"head_dim": 32}}),
            "text_config.per_layer_config",
        ),
        (lambda c: c.update(canvas_length=0), "canvas_length"),
        (lambda c: c.update(model_type="gemma4"), "model_type"),
    ],
)
def test_bad_config_field_named(saved, tmp_path, edit, field):
    _, d = saved
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    with pytest.raises(ValueError) as ei:
        DiffusionGemma.from_pretrained(str(tmp_path))
    assert field in str(ei.value)
