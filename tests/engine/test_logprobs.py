"""Request.logprobs / generate(output_logprobs=True): each committed token's log-probability is log_softmax of
the processed logits of the step its commit read (engine/commit_hook.py), recomputed here from the logits the
model's head produced; a hook's (low) choice is scored truthfully; the fast heads give the reference's numbers
for the same row; asking for logprobs changes no token."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from tiny import left_padded

import kernels
from constraints import build_hook
from engine import generate
from engine.counters import Counters
from engine.fast import Engine, Request
from engine.params import GenerationParams, first_stop
from engine.sampler import ReferenceNoise, RowNoise
from model import DiffusionGemma, load_tokenizer
from model.tokenizer import encode_prompt
from pipeline.model_path import shipped_dir
from train import synthdata

C = 8  # the tiny models' canvas
EOS = (5, 7)


def _record_head(monkeypatch, model) -> list[torch.Tensor]:
    """The processed logits of every step the reference head computes (model.head), in order."""
    seen: list[torch.Tensor] = []
    real = model.head

    def head(h_BCH, temperature_B=None, narrow=False):
        out = real(h_BCH, temperature_B, narrow)
        seen.append(out[0].clone())
        return out

    monkeypatch.setattr(model, "head", head)
    return seen


def _gather_logsoftmax(proc_BCV: torch.Tensor, tokens_BC: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(proc_BCV, dim=-1).gather(-1, tokens_BC[..., None])[..., 0]


class SecondBest:
    """A commit hook that commits each position's second most likely token (never the argmax)."""

    def initial_state(self):
        return None

    def commit(self, logits_CV, state, *, tokens_left, last_canvas):
        return logits_CV.topk(2, dim=-1).indices[:, 1], state, False


class RecordingArgmax:
    """A commit hook that commits the argmax of the logits it reads and keeps a copy of them."""

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def initial_state(self):
        return None

    def commit(self, logits_CV, state, *, tokens_left, last_canvas):
        self.seen.append(logits_CV.clone())
        return logits_CV.argmax(dim=-1), state, False


def _output_end(new: list[int]) -> int:
    cut = first_stop(new, EOS)
    return len(new) if cut is None else cut


@pytest.mark.parametrize("hook", [None, SecondBest()], ids=["argmax", "second_best"])
def test_reference_logprobs_are_log_softmax_of_the_last_step(eos_pair, monkeypatch, hook):
    """Early stopping off: every canvas commits after its last step, from that step's processed logits."""
    _, ours = eos_pair
    ids, mask = left_padded([5, 9, 12], 256, seed=3)
    N = 4
    kw = dict(max_new_tokens=24, max_denoising_steps=N, eos_token_id=list(EOS), pad_token_id=0,
              stability_threshold=None, t_max=0.9, t_min=0.5, commit_hook=hook)
    plain = generate(ours, ids, mask, seed=1, **kw)
    seen = _record_head(monkeypatch, ours)
    seq, lp = generate(ours, ids, mask, seed=1, output_logprobs=True, **kw)
    assert torch.equal(seq, plain)  # asking for logprobs changes no token
    new = seq[:, ids.shape[1]:]
    K = new.shape[1] // C
    assert lp.shape == new.shape and len(seen) == K * N
    last = [seen[k * N + N - 1] for k in range(K)]
    want = torch.cat([_gather_logsoftmax(last[k], new[:, k * C:(k + 1) * C]) for k in range(K)], dim=1)
    best = torch.cat([torch.log_softmax(p, -1).amax(-1) for p in last], dim=1)
    ends = [_output_end(row) for row in new.tolist()]
    for b, end in enumerate(ends):
        assert torch.equal(lp[b, :end], want[b, :end]), b
        assert lp[b, end:].isnan().all()  # the output ends at the first EOS
        if hook is None:
            assert torch.equal(lp[b, :end], best[b, :end])  # the argmax commit: the most likely token
        else:
            assert (lp[b, :end] < best[b, :end]).all()  # a hook's choice, scored as it is
    assert min(ends) < new.shape[1] and max(ends) > C  # EOS ended some row; some row went on


def test_reference_frozen_rows_report_the_step_they_froze_at(stop_pair, monkeypatch):
    """Adaptive stopping: a frozen row commits the argmax of the step it froze at, and its logprobs come from
    that step's logits, not from the later steps its batch mates took (a temperature schedule makes them
    differ)."""
    _, ours = stop_pair
    ids, mask = left_padded([5, 9, 12], 256, seed=3)
    kw = dict(max_new_tokens=24, max_denoising_steps=6, confidence_threshold=0.5, eos_token_id=5,
              pad_token_id=0, t_max=0.9, t_min=0.5)
    plain = generate(ours, ids, mask, seed=1, **kw)
    seen = _record_head(monkeypatch, ours)
    canvas_of: list[int] = []
    seq, lp = generate(ours, ids, mask, seed=1, output_logprobs=True,
                       on_step=lambda am, k, cur: canvas_of.append(k), **kw)
    assert torch.equal(seq, plain) and len(canvas_of) == len(seen)
    new = seq[:, ids.shape[1]:]
    froze_before_last = 0
    for k in range(new.shape[1] // C):
        steps = [i for i, kk in enumerate(canvas_of) if kk == k]
        for b in range(new.shape[0]):
            tok, got = new[b, k * C:(k + 1) * C], lp[b, k * C:(k + 1) * C]
            valid = ~got.isnan()
            if not valid.any():
                continue
            match = [s for s in steps
                     if torch.equal(_gather_logsoftmax(seen[s][b], tok)[valid], got[valid])
                     and torch.equal(seen[s][b].argmax(-1)[valid], tok[valid])]
            assert match, (b, k)
            froze_before_last += steps[-1] not in match
    assert froze_before_last > 0, "no row froze before its batch's last step: the case tests nothing"


def _fixed_canvas(self, keys, C, V, device):
    """A first canvas that depends only on the canvas index (replaces both modes' random one)."""
    return ((torch.arange(C)[None, :] * 37 + 11 + 5 * keys.canvas_B.cpu()[:, None]) % V).to(device)


HEADS = {
    "sweep": (),  # the CPU fast mode's head (engine/heads.py ChunkedSweepHead)
    "materialised": ("fused_sample",),  # MaterialisedHead: fp32 logits, the fused sampler's statistics
    "fused": ("fused_sample", "head_sample"),  # FusedHead: the GPU head mode, from the raw LM head output
}


def _head_backend(head: str):
    """The kernels' dispatch that makes engine/heads.py fast_head choose `head` on the CPU (Triton's
    interpreter runs the forced kernels)."""
    return kernels.use_backend("triton", ops=HEADS[head]) if HEADS[head] else contextlib.nullcontext()


@pytest.mark.parametrize("hook", [None, SecondBest()], ids=["argmax", "second_best"])
@pytest.mark.parametrize("head", list(HEADS))
def test_fast_logprobs_equal_the_reference_for_the_same_row(eos_pair, monkeypatch, head, hook):
    """One denoising step per canvas from a fixed first canvas: both modes see the same inputs, so a row's
    tokens are the same in reference and fast mode, and so are its logprobs (up to the heads' rounding)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(ReferenceNoise, "init_canvas", _fixed_canvas)
    monkeypatch.setattr(RowNoise, "init_canvas", _fixed_canvas)
    _, ours = eos_pair
    ids, mask = left_padded([5, 9, 12], 256, seed=3)
    kw = dict(max_new_tokens=24, max_denoising_steps=1, eos_token_id=list(EOS), pad_token_id=0)
    seq, lp = generate(ours, ids, mask, seed=0, output_logprobs=True, commit_hook=hook, **kw)
    new = seq[:, ids.shape[1]:].tolist()
    p = GenerationParams(max_new_tokens=24, max_denoising_steps=1, eos_token_ids=EOS, pad_token_id=0)
    reqs = [Request(f"r{b}", ids[b][mask[b].bool()].tolist(), seed=b, params=p, commit_hook=hook,
                    logprobs=True) for b in range(3)]
    with _head_backend(head):
        comps = Engine(ours, max_batch_rows=3).generate(reqs)
    for b, c in enumerate(comps):
        end = _output_end(new[b])
        assert c.token_ids == new[b][:end] and len(c.logprobs) == end
        assert torch.allclose(torch.tensor(c.logprobs), lp[b, :end], rtol=0, atol=2e-5), b
    assert any(c.finish_reason == "eos" for c in comps) and max(len(c.token_ids) for c in comps) > C


@pytest.mark.parametrize("head", list(HEADS))
def test_fast_argmax_logprobs_equal_log_softmax_of_the_logits_a_hook_reads(stop_pair, monkeypatch, head):
    """Fast mode, several steps, rows frozen by adaptive stopping at different steps: an argmax row's
    logprobs (from the head's statistics, engine/heads.py argmax_logprob) equal log_softmax of the kept
    logits a commit hook reads at the same commit (recorded here). Asking for logprobs changes no token."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _, ours = stop_pair
    params = [GenerationParams(max_new_tokens=16, max_denoising_steps=8, confidence_threshold=2.0,
                               t_max=0.9, t_min=0.5),
              GenerationParams(max_new_tokens=16, max_denoising_steps=3),
              GenerationParams(max_new_tokens=24, max_denoising_steps=4, eos_token_ids=(9,))]

    def run(logprobs: bool, hooks: list | None = None):
        reqs = [Request(f"r{i}", list(range(4 + i, 10 + 2 * i)), seed=20 + i, params=p, logprobs=logprobs,
                        commit_hook=None if hooks is None else hooks[i]) for i, p in enumerate(params)]
        return Engine(ours, max_batch_rows=3, check_every=2).generate(reqs)

    hooks = [RecordingArgmax() for _ in params]
    with _head_backend(head):
        plain, with_lp, hooked = run(False), run(True), run(True, hooks)
    key = lambda c: (c.token_ids, c.finish_reason, c.canvases, c.denoising_steps)  # noqa: E731
    assert [key(c) for c in with_lp] == [key(c) for c in plain] == [key(c) for c in hooked]
    assert all(c.logprobs is None for c in plain)
    for c, h, hk in zip(with_lp, hooked, hooks):
        n = len(c.token_ids)
        recorded = torch.cat([_gather_logsoftmax(x, x.argmax(-1)) for x in hk.seen])[:n]
        assert torch.equal(torch.tensor(h.logprobs), recorded)  # the hook path: log_softmax of what it read
        assert torch.allclose(torch.tensor(c.logprobs), recorded, rtol=0, atol=2e-5), c.id
        assert all(v <= 0 for v in c.logprobs)
    assert with_lp[0].denoising_steps < 8 * with_lp[0].canvases  # row 0 froze early
    assert with_lp[2].finish_reason == "eos"


def test_logprobs_are_per_row_and_independent_of_batch_mates(eos_pair):
    """Rows without logprobs in the same batch report none and keep their tokens; a row's logprobs are its
    solo run's, and cost no logits kept per step. generate(mode="fast") lays them out like the sequences
    (NaN past each row's output)."""
    _, ours = eos_pair
    p = GenerationParams(max_new_tokens=24, max_denoising_steps=4, eos_token_ids=EOS, pad_token_id=0)
    g = torch.Generator().manual_seed(2)
    reqs = [Request(f"r{i}", torch.randint(3, 256, (4 + 2 * i,), generator=g).tolist(), seed=30 + i, params=p,
                    logprobs=i % 2 == 0) for i in range(4)]
    solo = [Engine(ours, max_batch_rows=1).generate([r])[0] for r in reqs]
    counters = Counters()
    both = Engine(ours, max_batch_rows=4, counters=counters).generate(reqs)
    assert counters.logit_passes == 0  # the CPU sweep wrote no [B, C, V] logits for them
    for s, c, r in zip(solo, both, reqs):
        assert (c.token_ids, c.finish_reason) == (s.token_ids, s.finish_reason)
        if r.logprobs:
            assert len(c.logprobs) == len(c.token_ids)
            assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(s.logprobs), rtol=0, atol=1e-5)
        else:
            assert c.logprobs is None
    ids, mask = left_padded([5, 9], 256, seed=3)
    kw = dict(max_new_tokens=24, max_denoising_steps=4, eos_token_id=list(EOS), pad_token_id=0)
    seq, lp = generate(ours, ids, mask, mode="fast", seed=4, output_logprobs=True, **kw)
    assert torch.equal(seq, generate(ours, ids, mask, mode="fast", seed=4, **kw))
    new = seq[:, ids.shape[1]:].tolist()
    for b in range(2):
        end = _output_end(new[b])
        assert not lp[b, :end].isnan().any() and lp[b, end:].isnan().all()
        assert all(v <= 0 or math.isnan(v) for v in lp[b].tolist())


def test_choice_rows_report_their_label_tokens_logprobs_beside_the_label_scores():
    """A `choice` row on the shipped model: its hook state keeps the scorer's label scores (Completion.
    hook_state.label_scores, constraints/choice.py), and its logprobs score the committed label tokens under
    the same logits: the chosen label's score is their sum plus the (non-positive) EOS and tail terms."""
    model_dir = str(shipped_dir())
    model = DiffusionGemma.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = load_tokenizer(model_dir)
    C = model.config.canvas_length
    labels = ["billing", "shipping", "technical", "account"]
    p = GenerationParams.from_model(model, max_new_tokens=C)
    reqs = [Request(str(i), encode_prompt(tok, ex.prompt), 5 + i, p, logprobs=True,
                    commit_hook=build_hook({"choice": labels}, tok.tk, model.config, max_new_tokens=C,
                                           canvas_length=C))
            for i, ex in enumerate(synthdata.dataset("heldout", 3, "labeling"))]
    for c in Engine(model).generate(reqs):
        chosen = c.hook_state.chosen
        assert tok.decode(c.token_ids) == chosen and len(c.logprobs) == len(c.token_ids) >= 1
        assert all(v <= 0 for v in c.logprobs)
        assert sum(c.logprobs) >= c.hook_state.label_scores[chosen] - 1e-6
