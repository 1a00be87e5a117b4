"""The training forward equals the cached inference passes; a micro run learns and resumes exactly."""

from __future__ import annotations

import torch
from training_helpers import assert_learns_and_resumes

from model import DiffusionGemma, load_tokenizer
from train.forward import Batch, context_of, corrupt, decode_canvases, encode_context
from train.loop import ASSET_DIR, TrainConfig, small_model_config, train, train_batch


def _micro_cfg(out, stop_after=0):
    return TrainConfig(out=str(out), steps=14, stop_after=stop_after, batch_size=4, hidden=32, layers=2,
                       canvas=16, warmup=2, lr=3e-3, eval_every=0, ckpt_every_s=1e9, self_cond_frac=0.5,
                       families=("extraction",), seed=0)  # pinned: the defaults follow the shipped recipe


def test_train_forward_matches_encode_decode():
    tok = load_tokenizer(str(ASSET_DIR))
    cfg = small_model_config(tok.vocab_size, hidden=32, layers=4, canvas=16)
    cfg = type(cfg)(**{**cfg.__dict__, "text": type(cfg.text)(**{**cfg.text.__dict__, "sliding_window": 12})})
    torch.manual_seed(0)
    model = DiffusionGemma(cfg).float().eval()
    with torch.no_grad():  # move every scale away from 1 and make the two layer_scalar copies differ
        for p in model.parameters():
            if p.dim() < 2:
                p.add_(0.2 * torch.randn_like(p))
        for i, layer in enumerate(model.layers):
            layer.layer_scalar.fill_(0.8 + 0.1 * i)
            layer.encoder_layer_scalar.fill_(1.3 - 0.1 * i)
    b = train_batch(TrainConfig(batch_size=3), 1, tok, 16)  # an extraction batch: 3 canvases of 16
    B, K, C = b.targets_BKC.shape
    L = b.prompt_BL.shape[1]
    assert K >= 2 and L > cfg.text.sliding_window  # multi-canvas and window truncation both exercised
    noisy = corrupt(b.targets_BKC, cfg.text.vocab_size, 1e-3, torch.Generator().manual_seed(0)).view(B, K * C)
    sc = torch.randn(B, K * C, cfg.text.vocab_size)
    with torch.no_grad():
        ids, valid = context_of(b)
        ours = decode_canvases(model, encode_context(model, ids, valid), valid, L, noisy, C, sc)
        cache = model.new_cache(B, L + K * C)
        model.encode(b.prompt_BL, cache, positions_BT=torch.arange(L).expand(B, L),
                     valid_BT=b.prompt_valid_BL)
        for k in range(K):
            pos = (L + k * C + torch.arange(C)).expand(B, C)
            part = slice(k * C, (k + 1) * C)
            ref = model.decode(noisy[:, part], cache, positions_BC=pos, sc_logits_BCV=sc[:, part])
            torch.testing.assert_close(ours[:, k * C:(k + 1) * C], ref, atol=1e-5, rtol=0)
            model.encode(b.targets_BKC[:, k], cache, positions_BT=pos)


def test_micro_training_learns_and_resumes(tmp_path):
    tok = load_tokenizer(str(ASSET_DIR))
    # stop at 7, resume to the end: identical weights (data and noise are functions of the step)
    assert_learns_and_resumes(lambda out, stop: train(_micro_cfg(out, stop), tok=tok, progress=False),
                              tmp_path, 7, 14, window=3)
    assert (tmp_path / "a" / "loss_curve.png").stat().st_size > 1000


def test_canvas_mask_excludes_canvases_after_the_reply():
    tok = load_tokenizer(str(ASSET_DIR))
    b = train_batch(TrainConfig(batch_size=6, families=("labeling",)), 0, tok, 8)
    assert isinstance(b, Batch)
    for row, mask in zip(b.targets_BKC, b.canvas_mask_BK):
        flat = row.reshape(-1).tolist()
        last = flat.index(106)  # <turn|> ends every reply
        assert mask.tolist() == [k * 8 <= last for k in range(len(mask))]
