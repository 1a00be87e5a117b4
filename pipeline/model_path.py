"""Which model a job runs: resolving `model.path`, the shipped default, and the labelled random fallback.

`model.path: null` means the small model shipped at `model/assets/dgbatch-small` (found next to the
installed `model` package, without importing torch). Until that directory holds weights, the pipeline
builds a small RANDOM-WEIGHT model (the model package's tiny preset, the shipped tokenizer) under
`~/.cache/dgbatch/` and labels it as such everywhere it reports the model: its text is noise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from pipeline.spec import ModelSpec, SpecError
from pipeline.storage import filesystem

SHIPPED = "assets/dgbatch-small"
FALLBACK_LABEL = "RANDOM-WEIGHT fallback model (untrained, output is noise; the shipped model is missing)"


def shipped_dir() -> Path:
    spec = importlib.util.find_spec("model")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("model.path: not set and the `model` package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / SHIPPED


def _has_weights(d: Path) -> bool:
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def resolve_model_path(m: ModelSpec) -> tuple[str, str]:
    """(model directory or URL, label for reports). Does not build anything."""
    if m.path is not None:
        return m.path, "user model"
    d = shipped_dir()
    if _has_weights(d):
        return str(d), "shipped small model (dgbatch-small)"
    return str(fallback_dir()), FALLBACK_LABEL


def fallback_dir() -> Path:
    root = Path(os.environ.get("DGBATCH_CACHE", Path.home() / ".cache" / "dgbatch"))
    return root / "random-tiny"


def check_model_path(m: ModelSpec) -> None:
    """Fail naming the path if a user-given model directory has no config.json."""
    path, label = resolve_model_path(m)
    if label == FALLBACK_LABEL:
        return  # built on first use
    fs, p = filesystem(path)
    try:
        ok = fs.exists(f"{p.rstrip('/')}/config.json")
    except Exception as exc:  # noqa: BLE001
        raise SpecError(f"model.path {path}: cannot be read: {type(exc).__name__}: {exc}") from exc
    if not ok:
        raise SpecError(f"model.path {path}: no config.json there; expected a model directory")
    from model.quant.scheme import checkpoint_scheme

    try:
        config = json.loads(fs.cat_file(f"{p.rstrip('/')}/config.json"))
        stored = checkpoint_scheme(config) if isinstance(config, dict) else None
    except ValueError as exc:  # an unsupported quantization_config fails here, before any work
        raise SpecError(f"model.path {path}: {exc}") from None
    if stored is not None and m.quantization is not None:
        raise SpecError(f"model.quantization: {path} is already quantized ({stored[0]}); remove "
                        "model.quantization to load it as it is")


def model_identity(m: ModelSpec) -> dict[str, Any]:
    """What identifies the weights for the plan fingerprint: resolved path, label, config bytes hash."""
    path, label = resolve_model_path(m)
    ident: dict[str, Any] = {"resolved": path, "label": label}
    try:
        fs, p = filesystem(path)
        ident["config_sha256"] = hashlib.sha256(fs.cat_file(f"{p.rstrip('/')}/config.json")).hexdigest()
    except Exception:  # noqa: BLE001 - fallback not built yet, or a stub backend's fake path
        ident["config_sha256"] = None
    return ident


def ensure_fallback() -> Path:
    """Build the random-weight tiny model (once) in fallback_dir(), with the shipped tokenizer files."""
    d = fallback_dir()
    if _has_weights(d):
        return d
    import dataclasses
    import shutil

    import torch

    from model import DiffusionGemma, DiffusionGemmaConfig

    tmp = d.with_name(d.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in shipped_dir().iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copy(f, tmp / f.name)
    # The tiny preset's geometry, widened to the shipped tokenizer's vocabulary so every id embeds.
    tok = json.loads((shipped_dir() / "tokenizer.json").read_text())
    vocab = max([*tok["model"]["vocab"].values(), *(t["id"] for t in tok.get("added_tokens", []))]) + 1
    cfg = DiffusionGemmaConfig.tiny()
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=vocab))
    torch.manual_seed(0)
    DiffusionGemma(cfg).save_pretrained(str(tmp))
    (tmp / "dgbatch_label.json").write_text(json.dumps({"label": FALLBACK_LABEL}))
    try:
        os.replace(tmp, d)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def load_model_and_tokenizer(m: ModelSpec):
    """(model, tokenizer, directory) for a replica; builds the labelled fallback when needed."""
    import torch

    from model import DiffusionGemma, load_tokenizer

    path, label = resolve_model_path(m)
    if label == FALLBACK_LABEL:
        path = str(ensure_fallback())
    dtype = getattr(torch, m.dtype)
    try:
        net = DiffusionGemma.from_pretrained(path, dtype=dtype, quantization=m.quantization)
        tok = load_tokenizer(path)
    except Exception as exc:
        raise SpecError(f"model.path {path}: cannot load model: {type(exc).__name__}: {exc}") from exc
    return net, tok, path
