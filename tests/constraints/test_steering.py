"""Steering (constraints/steering.py and the optional per-step hook methods of engine/denoise.py):
the extension point is inert when unused, every option keeps 100% validity in both modes, the skeleton
seeds only tokens every valid output starts with, and the options dataclass rejects bad values."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from constraints import build_hook, check_output, decode_text
from constraints.steering import Skeleton, SteeringOptions
from engine.denoise import steer_rows
from tests.constraints.tok_factory import gemma_style

SECTION = {
    "json_schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "n": {"type": "integer", "minimum": 0, "maximum": 99},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "n", "ok"],
    }
}
OPTION_SETS = [
    SteeringOptions(constrained_stop=True),
    SteeringOptions(valid_sampling=True),
    SteeringOptions(seed_canvas=True),
    SteeringOptions.all(),
]
MAX_NEW = 40  # 3 canvases of 16: the carried state and the last-canvas rule are exercised


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from constraints import CompileConfig
    from model import DiffusionGemma, DiffusionGemmaConfig

    torch.manual_seed(0)
    tok = gemma_style(500)
    cfg = dataclasses.replace(DiffusionGemmaConfig.tiny(), eos_token_ids=(1,))
    model = DiffusionGemma(cfg).eval()
    cc = CompileConfig(cache_dir=tmp_path_factory.mktemp("steer-cache"), in_process=True)
    hook = build_hook(SECTION, tok, model.config, max_new_tokens=MAX_NEW, pad_token_id=0, config=cc)
    assert hook.steering == SteeringOptions.off()  # commit-only by default: steering costs a DP per step
    steered = build_hook({**SECTION, "steering": "kept"}, tok, model.config, max_new_tokens=MAX_NEW,
                         pad_token_id=0, config=cc)
    assert steered.steering == SteeringOptions.kept()  # the job spec's opt-in reaches the hook
    prompts = [tok.encode(p).ids for p in ("Give me data", "name and number please", "x")]
    return tok, model, hook, prompts


class Passthrough:
    """A steering hook that changes nothing but counts the loop's calls (the plumbing must be inert)."""

    def __init__(self, hook):
        self.hook, self.seeds, self.steers = hook, 0, 0
        self.steering_on = True

    def initial_state(self):
        return self.hook.initial_state()

    def commit(self, logits_CV, state, *, tokens_left, last_canvas):
        return self.hook.commit(logits_CV, state, tokens_left=tokens_left, last_canvas=last_canvas)

    def seed_canvas(self, canvas_C, state, *, tokens_left, last_canvas):
        self.seeds += 1
        return canvas_C.clone()

    def steer(self, logits_CV, argmax_C, keep_C, sampled_C, state, *, tokens_left, last_canvas):
        self.steers += 1
        return argmax_C.clone(), sampled_C.clone()


def _reference(model, prompts, hook, seed=0, steps=3, **kw):
    from engine import generate

    L = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    out = generate(
        model,
        ids,
        mask,
        seed=seed,
        max_new_tokens=MAX_NEW,
        max_denoising_steps=steps,
        eos_token_id=1,
        pad_token_id=0,
        commit_hook=hook,
        **kw,
    )
    return out[:, L:].tolist()


def _fast(model, prompts, hooks, seed=0, steps=3, rows=2, **kw):
    from engine.fast import Engine, Request
    from engine.params import GenerationParams

    p = GenerationParams(
        max_new_tokens=MAX_NEW, max_denoising_steps=steps, eos_token_ids=(1,), pad_token_id=0, **kw
    )
    reqs = [
        Request(id=str(i), input_ids=x, seed=seed + i, params=p, commit_hook=h)
        for i, (x, h) in enumerate(zip(prompts, hooks))
    ]
    return Engine(model, max_batch_rows=rows).generate(reqs)


def test_off_attaches_nothing(setup):
    _, _, hook, _ = setup
    assert not hook.steering_on
    assert steer_rows([hook, None], [hook.initial_state(), None], [MAX_NEW] * 2, [False] * 2) is None
    on = hook.with_options(SteeringOptions(seed_canvas=True))
    rows = steer_rows([on, hook], [on.initial_state()] * 2, [MAX_NEW] * 2, [False] * 2)
    assert rows[0].hook is on and rows[1] is None


def test_extension_point_inert_reference(setup):
    _, model, hook, prompts = setup
    spy = Passthrough(hook)
    assert _reference(model, prompts, spy) == _reference(model, prompts, hook)
    assert spy.seeds > 0 and spy.steers > 0


def test_extension_point_inert_fast(setup):
    """Mixed batches (a steering row beside plain ones, rows joining and leaving) give the same tokens."""
    _, model, hook, prompts = setup
    spy = Passthrough(hook)
    prompts = prompts * 2
    plain = _fast(model, prompts, [hook, None, hook, None, hook, hook])
    spied = _fast(model, prompts, [spy, None, hook, None, spy, hook])
    assert [c.canvas_tokens for c in spied] == [c.canvas_tokens for c in plain]
    assert spy.seeds > 0 and spy.steers > 0


@pytest.mark.parametrize(
    "opts",
    OPTION_SETS,
    ids=lambda o: "+".join(k for k in ("constrained_stop", "valid_sampling", "seed_canvas") if getattr(o, k)),
)
def test_every_option_stays_valid(setup, opts):
    """A few seeds, both modes, with and without adaptive stopping (a huge confidence threshold makes rows
    freeze as soon as their (constrained) argmax is stable); the options must also change the tokens."""
    tok, model, hook, prompts = setup
    steered = hook.with_options(opts, track_argmax=True)
    rows, plain = [], []
    for seed, kw in ((0, {}), (1, {"confidence_threshold": 50.0, "steps": 6})):
        rows += _reference(model, prompts, steered, seed, **kw)
        plain += _reference(model, prompts, hook, seed, **kw)
    texts = [decode_text(steered, _cut(r)) for r in rows]
    for kw in ({}, {"confidence_threshold": 50.0, "steps": 6}):
        comps = _fast(model, prompts, [steered] * len(prompts), seed=5, **kw)
        texts += [decode_text(steered, c.token_ids) for c in comps]
        for c in comps:
            assert c.finish_reason == "eos" and c.hook_state.argmax_valid is not None
    for text in texts:
        status, _, err = check_output(SECTION, text)
        assert status == "ok", (text, err)
    assert rows != plain, "steering changed no token: the test exercises nothing"


def _cut(row: list[int]) -> list[int]:
    return row[: row.index(1)] if 1 in row else row


def test_steer_returns_the_commit_path(setup):
    """steer's argmax is the valid path the commit would take; kept positions take it, others keep theirs."""
    tok, model, hook, _ = setup
    h = hook.with_options(SteeringOptions(constrained_stop=True, valid_sampling=True))
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, model.config.text.vocab_size, generator=g) * 3
    state = h.initial_state()
    keep = torch.zeros(16, dtype=torch.bool)
    keep[::3] = True
    sampled = torch.full((16,), 7, dtype=torch.long)
    am, sm = h.steer(logits, logits.argmax(-1), keep, sampled, state, tokens_left=MAX_NEW, last_canvas=False)
    committed, _, _ = h.commit(logits, state, tokens_left=MAX_NEW, last_canvas=False)
    assert torch.equal(am, committed)
    assert torch.equal(sm, torch.where(keep, committed, sampled))
    off = hook.with_options(SteeringOptions(seed_canvas=True))
    assert (
        off.steer(logits, logits.argmax(-1), keep, sampled, state, tokens_left=MAX_NEW, last_canvas=False)
        is None
    )


def test_track_argmax(setup):
    """argmax_valid is True exactly when the commit did not have to change the raw argmax."""
    tok, model, hook, _ = setup
    h = hook.with_options(track_argmax=True)
    V = model.config.text.vocab_size
    target = tok.encode('{"name": "ab", "n": 5, "ok": true}').ids + [1]
    logits = torch.zeros(len(target) + 4, V)
    logits[torch.arange(len(target)), torch.tensor(target)] = 10.0
    _, st, done = h.commit(logits, h.initial_state(), tokens_left=logits.shape[0], last_canvas=True)
    assert done and st.argmax_valid is True
    logits[2, 5] = 50.0  # an argmax that breaks the object
    _, st, _ = h.commit(logits, h.initial_state(), tokens_left=logits.shape[0], last_canvas=True)
    assert st.argmax_valid is False
    assert hook.commit(logits, hook.initial_state(), tokens_left=40, last_canvas=True)[1].argmax_valid is None


def test_skeleton_seeds_forced_prefix(setup):
    tok, _, hook, _ = setup
    sk = Skeleton(hook.dfa, hook.vocab, ":,")
    assert sk.forced_bytes(0, 100) == b'{"name": "'
    ids = sk.seed(0, 16)
    seeded = b"".join(hook.vocab[i] for i in ids)
    assert ids and b'{"name": "'.startswith(seeded)
    assert sk.seed(0, 1) == ids[:1]
    assert Skeleton(hook.dfa, hook.vocab, "").forced_bytes(0, 100) == b'{"name":"'
    # seeding rewrites only the start of the first step's canvas
    h = hook.with_options(SteeringOptions(seed_canvas=True))
    canvas = torch.full((16,), 9, dtype=torch.long)
    out = h.seed_canvas(canvas, h.initial_state(), tokens_left=MAX_NEW, last_canvas=False)
    assert out[: len(ids)].tolist() == ids and (out[len(ids) :] == 9).all() and (canvas == 9).all()
    # no one-byte token for some byte: nothing is seeded
    holey = [None if b == b"{" else b for b in hook.vocab]
    assert Skeleton(hook.dfa, holey).seed(0, 16) == []


def test_skeleton_choice_has_no_forced_prefix(setup, tmp_path):
    from constraints import CompileConfig

    tok = setup[0]
    cc = CompileConfig(cache_dir=tmp_path, in_process=True)
    h = build_hook({"choice": ["yes", "no"]}, tok, [1], max_new_tokens=8, pad_token_id=0, config=cc)
    assert Skeleton(h.dfa, h.vocab).seed(0, 8) == []
    h2 = build_hook(
        {"choice": ["label_a", "label_b"]}, tok, [1], max_new_tokens=16, pad_token_id=0, config=cc
    )
    assert Skeleton(h2.dfa, h2.vocab).forced_bytes(0, 50) == b"label_"


@pytest.mark.parametrize(
    "kw",
    [
        dict(constrained_stop=1),
        dict(valid_sampling="yes"),
        dict(seed_canvas=None),
        dict(seed_space_after=" "),
        dict(seed_space_after=5),
    ],
)
def test_options_reject_bad_values(kw):
    with pytest.raises(ValueError, match="SteeringOptions"):
        SteeringOptions(**kw)


def test_options_parse_and_hook_type(setup):
    assert SteeringOptions.parse("off") == SteeringOptions()
    assert SteeringOptions.parse("all") == SteeringOptions.all()
    assert SteeringOptions.parse("kept") == SteeringOptions.kept() == SteeringOptions(valid_sampling=True)
    assert SteeringOptions.parse("seed_canvas, valid_sampling") == SteeringOptions(
        seed_canvas=True, valid_sampling=True
    )
    with pytest.raises(ValueError, match="unknown option"):
        SteeringOptions.parse("seed_canvas,warp_drive")
    with pytest.raises(ValueError, match="SteeringOptions"):
        setup[2].with_options({"seed_canvas": True})
