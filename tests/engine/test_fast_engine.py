"""Fast mode: per-row streams make a row's tokens independent of batch mates, order and batch size;
continuous batching; commit hooks; KV budget admission; same sampling distribution as reference mode."""

from __future__ import annotations

import torch
from tiny import left_padded, tiny_pair

from engine import generate
from engine.commit_hook import ArgmaxCommit
from engine.counters import Counters
from engine.fast import Engine, Request
from engine.params import GenerationParams
from engine.scheduler import kv_bytes_per_token

P_EOS = GenerationParams(max_new_tokens=24, max_denoising_steps=5, eos_token_ids=(5, 7), pad_token_id=0)


def _requests(params_list, lengths, base_seed=0):
    g = torch.Generator().manual_seed(base_seed)
    return [
        Request(
            id=f"r{i}", input_ids=torch.randint(3, 256, (n,), generator=g).tolist(), seed=100 + i, params=p
        )
        for i, (p, n) in enumerate(zip(params_list, lengths))
    ]


def _key(c):
    return (c.token_ids, c.finish_reason, c.canvases, c.denoising_steps)


def test_row_output_independent_of_batch(stop_pair):
    """Mixed params (steps, early stop, EOS) so rows sit at different canvases in one decoder batch, leave
    early and are replaced; each row equals its solo run whatever the batch size or order. fp32 model."""
    _, ours = stop_pair
    p9 = P_EOS.with_(eos_token_ids=(9,))  # 9 dominates this model: these rows end early on EOS
    mixed = [
        p9,
        GenerationParams(max_new_tokens=16, max_denoising_steps=3),
        GenerationParams(max_new_tokens=32, max_denoising_steps=4, confidence_threshold=0.5),
        p9.with_(max_denoising_steps=6, confidence_threshold=0.5),
        GenerationParams(max_new_tokens=8, max_denoising_steps=2),
    ]
    reqs = _requests(mixed * 2, [5, 9, 12, 3, 7, 10, 4, 6, 8, 11])
    solo = {r.id: _key(Engine(ours, max_batch_rows=1).generate([r])[0]) for r in reqs}
    for rows, order in ((2, reqs), (4, reqs[::-1]), (16, reqs[3:] + reqs[:3])):
        c = Counters()
        eng = Engine(ours, max_batch_rows=rows, counters=c, check_every=2)
        got = {x.id: _key(x) for x in eng.run(order)}
        assert got == solo, rows
        assert eng.peak_rows == min(rows, len(reqs))
    assert any(v[1] == "eos" for v in solo.values()) and any(v[1] == "length" for v in solo.values())


def test_rows_in_float64_are_exactly_batch_invariant(tmp_path):
    """In float64 the decoder logits of a row are (to rounding far below any decision) batch independent,
    so this also holds for a model whose fp32 batch variance could flip a sample."""
    _, ours = tiny_pair(tmp_path, seed=2, boost={5: 1.5})
    ours = ours.to(torch.float64)
    reqs = _requests([P_EOS] * 4, [4, 9, 6, 12], base_seed=5)
    solo = [_key(Engine(ours, max_batch_rows=1).generate([r])[0]) for r in reqs]
    assert [_key(c) for c in Engine(ours, max_batch_rows=4).generate(reqs)] == solo


def test_no_work_for_frozen_or_finished_rows(stop_pair):
    _, ours = stop_pair
    p = GenerationParams(max_new_tokens=24, max_denoising_steps=8, confidence_threshold=0.5)
    c = Counters()
    comps = Engine(ours, counters=c, check_every=2).generate(_requests([p] * 3, [5, 9, 12]))
    live = sum(x.denoising_steps for x in comps)
    assert live < 3 * 3 * 8  # some rows froze
    # A frozen row stays in the batch at most until the next check (check_every - 1 extra forwards).
    assert c.decoder_rows - live <= sum(x.canvases for x in comps) * 1
    assert c.steady_syncs == 0
    assert c.host_syncs <= c.steps / 2 + 1


def test_fast_generate_layout_and_hooks(eos_pair):
    _, ours = eos_pair
    ids, mask = left_padded([5, 9, 12], 256, seed=3)
    kw = dict(max_new_tokens=24, max_denoising_steps=4, eos_token_id=[5, 7], pad_token_id=0)
    out = generate(ours, ids, mask, mode="fast", seed=7, **kw)
    assert out.shape[0] == 3 and (out.shape[1] - 12) % 8 == 0 and torch.equal(out[:, :12], ids)
    # Same seed -> same tokens; an explicit argmax hook (called with the kept logits) changes nothing.
    assert torch.equal(out, generate(ours, ids, mask, mode="fast", seed=7, **kw))

    class CallingArgmax(ArgmaxCommit):  # a subclass is called like any custom hook
        calls = 0

        def commit(self, logits_CV, state, *, tokens_left, last_canvas):
            CallingArgmax.calls += 1
            assert logits_CV.shape == (8, 256) and logits_CV.dtype == torch.float32
            return super().commit(logits_CV, state, tokens_left=tokens_left, last_canvas=last_canvas)

    assert torch.equal(out, generate(ours, ids, mask, mode="fast", seed=7, commit_hook=CallingArgmax(), **kw))
    assert CallingArgmax.calls > 0
    ref_hooked = generate(ours, ids, mask, seed=7, commit_hook=CallingArgmax(), **kw)
    assert torch.equal(ref_hooked, generate(ours, ids, mask, seed=7, **kw))


def test_hook_can_finish_a_row(eos_pair):
    _, ours = eos_pair

    class Fixed:
        def initial_state(self):
            return 0

        def commit(self, logits_CV, state, *, tokens_left, last_canvas):
            toks = torch.full((logits_CV.shape[0],), 42)
            if state == 1:
                toks[3:] = 0
            return toks, state + 1, state == 1

    p = GenerationParams(max_new_tokens=40, max_denoising_steps=2, pad_token_id=0)
    (c,) = Engine(ours).generate([Request("a", [3, 4, 5], 1, p, commit_hook=Fixed())])
    assert c.finish_reason == "eos" and c.token_ids == [42] * 11 and c.canvases == 2 and c.hook_state == 2


def test_kv_budget_admission_and_errors(eos_pair):
    _, ours = eos_pair
    cfg = ours.config
    p = GenerationParams(max_new_tokens=16, max_denoising_steps=2)
    per_tok = kv_bytes_per_token(cfg, ours.dtype)
    work = 8 * 256 * 12
    need = 10 + 8  # prompt + one encoded canvas
    budget = 2 * (need + 8) * per_tok + 2 * work  # room for two rows of this size, not three
    reqs = _requests([p] * 5, [10] * 5) + [Request("huge", [3] * 500, 0, p)]
    eng = Engine(ours, max_batch_rows=8, kv_budget_bytes=budget)
    comps = {c.id: c for c in eng.run(reqs)}
    assert len(comps) == 6
    assert comps["huge"].finish_reason == "error" and "KV budget" in comps["huge"].error
    assert all(comps[f"r{i}"].finish_reason == "length" for i in range(5))
    assert eng.peak_rows == 2 and eng.peak_bytes <= budget
    # Unbounded: all five share the batch and produce the same tokens.
    free = {c.id: c.token_ids for c in Engine(ours, max_batch_rows=8).run(reqs[:5])}
    assert free == {k: comps[k].token_ids for k in free}


def test_bad_requests_yield_error_completions(eos_pair):
    _, ours = eos_pair
    p = GenerationParams(max_new_tokens=8, max_denoising_steps=2)
    reqs = [
        Request("empty", [], 0, p),
        Request("oov", [3, 999], 0, p),
        Request("long", [3] * 10, 0, p.with_(max_new_tokens=10**6)),
        Request("ok", [3, 4], 0, p),
    ]
    got = {c.id: c for c in Engine(ours).run(reqs)}
    assert [got[k].finish_reason for k in ("empty", "oov", "long", "ok")] == ["error"] * 3 + ["length"]
    assert "empty" in got["empty"].error and "[0, 256)" in got["oov"].error and "maximum" in got["long"].error


def test_fast_and_reference_sample_the_same_distribution(tmp_path):
    """End to end on a tiny model (V=32, many seeds): committed-token histograms of the two modes differ by
    no more than two samples of one law do (total variation against its expected size)."""
    _, ours = tiny_pair(tmp_path, seed=4, vocab_size=32)
    n = 300
    kw = dict(max_new_tokens=8, max_denoising_steps=3)
    ids = torch.tensor([[3, 4, 5, 6, 7]] * n)

    def hist(x):
        return torch.bincount(x[:, 5:].reshape(-1), minlength=32).double() / x[:, 5:].numel()

    ref = hist(generate(ours, ids, seed=0, **kw))
    fast = hist(generate(ours, ids, mode="fast", seed=10_000, **kw))
    tv = 0.5 * (ref - fast).abs().sum().item()
    # TV between two independent histograms of one law: about 0.5 * sum_k sqrt(4 p_k / (pi N)), N = n*C
    # draws (positions of one row are dependent, so the real spread is somewhat larger).
    p = (ref + fast) / 2
    null = 0.5 * torch.sqrt(4 * p / (torch.pi * n * 8)).sum().item()
    assert tv < 1.8 * null, f"TV(reference, fast) = {tv:.3f}, expected about {null:.3f} for one law"


def test_row_noise_samples_the_reference_law():
    """The per-row Gumbel sampler and the reference multinomial draw from the same softmax(proc): many
    keys on fixed logits (one law per canvas position), TV against its null size; a 25% temperature
    change is detected (the test has power)."""
    from engine.sampler import ReferenceNoise, RowKeys, RowNoise

    torch.manual_seed(0)
    V, reps = 16, 8000
    proc = (torch.randn(1, 2, V) * 1.5).expand(reps, 2, V).contiguous()
    keys = RowKeys(
        torch.arange(reps), torch.zeros(reps, dtype=torch.long), torch.zeros(reps, dtype=torch.long)
    )
    keep = torch.ones(reps, 2, dtype=torch.bool)
    fast = RowNoise().sample(proc, keep, keys)
    ref = ReferenceNoise().sample(proc, keep, keys)
    hot = ReferenceNoise().sample(proc / 1.25, keep, keys)
    for c in range(2):
        h = [torch.bincount(x[:, c], minlength=V).double() / reps for x in (fast, ref, hot)]
        p = torch.softmax(proc[0, c].double(), -1)
        null = 0.5 * torch.sqrt(4 * p / (torch.pi * reps)).sum().item()
        tv = 0.5 * (h[0] - h[1]).abs().sum().item()
        assert tv < 1.8 * null, f"position {c}: TV(fast, reference) = {tv:.4f}, null about {null:.4f}"
        assert 0.5 * (h[1] - h[2]).abs().sum().item() > 1.8 * null
