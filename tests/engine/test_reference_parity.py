"""Reference mode == transformers DiffusionGemmaForBlockDiffusion.generate(...).sequences, token for token."""

from __future__ import annotations

import pytest
import torch
from tiny import left_padded

from engine import generate
from engine.counters import Counters

CASES = [
    # (lengths, generate kwargs)
    ([7], dict()),
    ([5, 9, 12], dict()),
    ([5, 9, 12], dict(eos_token_id=[5, 7], pad_token_id=0)),
    ([4, 11, 6], dict(eos_token_id=7, pad_token_id=0, stability_threshold=None)),  # early stopping off
    ([9, 9, 9], dict(eos_token_id=[5, 7])),  # EOS without pad: rows keep generating
]


@pytest.mark.parametrize("lengths,kw", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_equals_transformers(eos_pair, lengths, kw, seed):
    hf, ours = eos_pair
    ids, mask = left_padded(lengths, 256, seed=seed + 10)
    kws = dict(max_new_tokens=20, max_denoising_steps=4, **kw)  # 20 -> 3 canvases of 8
    torch.manual_seed(seed)
    ref = hf.generate(ids, attention_mask=mask, **kws).sequences
    out = generate(ours, ids, mask, seed=seed, **kws)
    assert out.shape == ref.shape
    assert torch.equal(out, ref), f"\nours\n{out[:, ids.shape[1] :]}\nref\n{ref[:, ids.shape[1] :]}"


def test_reference_eos_and_pad_are_exercised(eos_pair):
    """The EOS/pad cases above really hit EOS (some rows stop early, pads fill after EOS)."""
    hf, ours = eos_pair
    ids, mask = left_padded([5, 9, 12], 256, seed=11)
    out = generate(
        ours, ids, mask, seed=1, max_new_tokens=20, max_denoising_steps=4, eos_token_id=[5, 7], pad_token_id=0
    )
    assert (out[:, 12:] == 0).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_early_stopping_matches(stop_pair, seed):
    """Rows freeze at different steps (frozen-row state kept exactly as the reference keeps it)."""
    hf, ours = stop_pair
    ids, mask = left_padded([5, 9, 12], 256, seed=3)
    kws = dict(
        max_new_tokens=24, max_denoising_steps=6, confidence_threshold=0.5, eos_token_id=5, pad_token_id=0
    )
    torch.manual_seed(seed)
    ref = hf.generate(ids, attention_mask=mask, **kws)
    c = Counters()
    out = generate(ours, ids, mask, seed=seed, counters=c, **kws)
    assert torch.equal(out, ref.sequences)
    assert c.live_forwards < c.decoder_rows or c.steps < 18, "no row stopped early: the case tests nothing"


def test_whole_batch_early_exit(stop_pair):
    """Everything confident at once: the step loop breaks early (RNG use must still match)."""
    hf, ours = stop_pair
    ids, mask = left_padded([6, 8], 256, seed=4)
    kws = dict(max_new_tokens=16, max_denoising_steps=6, confidence_threshold=6.0, stability_threshold=0)
    torch.manual_seed(3)
    ref = hf.generate(ids, attention_mask=mask, **kws).sequences
    c = Counters()
    out = generate(ours, ids, mask, seed=3, counters=c, **kws)
    assert torch.equal(out, ref)
    assert c.steps == 2  # one step per canvas


def test_defaults_come_from_generation_config(eos_pair, tmp_path):
    """No kwargs: the checkpoint's generation config (here none: transformers' global defaults)."""
    hf, ours = eos_pair
    ids = torch.tensor([[3, 4, 5, 6]])
    torch.manual_seed(0)
    ref = hf.generate(ids, max_new_tokens=8, max_denoising_steps=3).sequences
    out = generate(ours, ids, seed=0, max_new_tokens=8, max_denoising_steps=3)
    assert torch.equal(out, ref)
