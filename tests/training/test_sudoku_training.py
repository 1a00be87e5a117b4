"""Sudoku training (train/sudoku.py, train/sudoku_data.py, the pinned positions of train/forward.py): the data
stream is a pure function of the step and never yields a held-out puzzle, pins hold clean digits and carry
no loss, and a micro run learns and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import assert_learns_and_resumes

import train.forward as forward
from model import DiffusionGemma, load_tokenizer
from sudoku.grid import canvas_text, check_solution, parse
from sudoku.puzzles import count_solutions
from train.sudoku import PROMPT_TOKENS, TOKENIZER_DIR, SudokuConfig, sudoku_model_config, train
from train.sudoku_data import END_OF_TURN, HELDOUT_SEED, build_batch, build_pool, load_heldout, sample_rows

DIGIT_IDS = {str(d): 372 + d for d in range(10)}  # '0'..'9' are single tokens 372..381


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(TOKENIZER_DIR))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return build_pool(6, seed=1, cache=tmp_path_factory.mktemp("pool") / "pool.jsonl")


def test_pool_cache_and_heldout_seed_refused(pool, tmp_path):
    cache = tmp_path / "p.jsonl"
    a = build_pool(3, seed=2, cache=cache)
    assert json.loads(cache.read_text().splitlines()[0]) == {"n": 3, "seed": 2}
    assert (build_pool(3, seed=2, cache=cache) == a).all()
    for p_81, s_81 in pool.tolist():
        assert count_solutions(p_81, 2) == 1
        assert check_solution("".join(map(str, p_81)), "".join(map(str, s_81))) is None
    with pytest.raises(ValueError, match="held-out"):
        build_pool(3, seed=HELDOUT_SEED)


def test_rows_are_valid_unique_and_a_function_of_the_step(pool):
    rows = sample_rows(pool, 7, 3, 16, 45, 0.5, set())
    assert rows == sample_rows(pool, 7, 3, 16, 45, 0.5, set())
    assert rows != sample_rows(pool, 7, 4, 16, 45, 0.5, set())
    # a batch is all pinned or all prompt-only (one prompt length), and both kinds come up
    assert all(len({pin for _, _, pin in sample_rows(pool, 7, step, 4, 45, 0.5, set())}) == 1
               for step in range(12))
    assert {sample_rows(pool, 7, step, 1, 45, 0.5, set())[0][2] for step in range(12)} == {True, False}
    minimal = min(int((p > 0).sum()) for p in pool[:, 0])
    for puzzle, solution, _ in rows:
        assert minimal <= sum(c != "0" for c in puzzle) <= 45
        assert check_solution(puzzle, solution) is None
        assert count_solutions(parse(puzzle), 2) == 1


def test_rows_never_equal_an_excluded_puzzle(pool):
    rows = sample_rows(pool, 7, 3, 8, 45, 0.5, set())
    banned = {rows[0][0], rows[3][0]}
    again = sample_rows(pool, 7, 3, 8, 45, 0.5, banned)
    assert not banned & {p for p, _, _ in again}
    assert again[:2] == rows[1:3]  # the excluded draw is skipped; the stream goes on from the next draw


def test_training_never_sees_heldout_puzzles(pool):
    heldout = {r["puzzle"] for r in load_heldout()}
    assert len(heldout) == 1000
    for step in range(20):
        assert not heldout & {p for p, _, _ in sample_rows(pool, 27, step, 32, 45, 0.5, set())}


def test_batch_layout_and_pins(pool, tok):
    one = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    for pin in (True, False):
        rows = [(p, s, pin) for p, s, _ in sample_rows(pool, 7, 0, 6, 45, 0.5, set())]
        b, pinned = build_batch(rows, tok, 164)
        assert b.targets_BKC.shape == (6, 1, 164) and pinned.shape == (6, 1, 164)
        assert b.prompt_BL.shape[1] == (24 if pin else PROMPT_TOKENS)
        for i, (puzzle, solution, _) in enumerate(rows):
            t = b.targets_BKC[i, 0].tolist()
            assert t[:162] == one(canvas_text(solution)) and t[162] == END_OF_TURN and t[163] == 0
            assert t[1:162:2] == [DIGIT_IDS[c] for c in solution]  # each digit one token, after its marker
            want = [k % 2 == 0 or puzzle[k // 2] != "0" for k in range(162)] + [True, False]
            assert pinned[i, 0].tolist() == (want if pin else [False] * 164)  # markers, clues, the stop
            prompt = b.prompt_BL[i].tolist()
            if not pin:  # the prompt holds the puzzle's canvas text, then the chat template's tail
                text = one(canvas_text(puzzle))
                assert any(prompt[j:j + 162] == text for j in range(len(prompt) - 161))


def test_pinned_positions_stay_clean_and_carry_no_loss(pool, tok, monkeypatch):
    torch.manual_seed(0)
    model = DiffusionGemma(sudoku_model_config(tok.vocab_size, 32, 2, 164, 352)).float()
    b, _ = build_batch(sample_rows(pool, 7, 0, 3, 30, 0.0, set()), tok, 164)  # prompt-only: no pins
    pinned = torch.zeros_like(b.targets_BKC, dtype=torch.bool)
    pinned[:, 0, :40] = True
    seen = []
    real = forward.decode_hidden  # the graded pass (the head then runs only on graded positions)
    monkeypatch.setattr(forward, "decode_hidden", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    free = forward.diffusion_loss(model, b, eps=0.5, self_cond=False, gen=gen())
    loss = forward.diffusion_loss(model, b, eps=0.5, self_cond=False, gen=gen(), pinned_BKC=pinned)
    free_canvas, pin_canvas = seen
    tgt = b.targets_BKC.view(3, 164)
    assert torch.equal(pin_canvas[:, :40], tgt[:, :40])  # pins hold the clean digits
    assert torch.equal(pin_canvas[:, 40:], free_canvas[:, 40:])  # same noise elsewhere
    assert (free_canvas[:, :40] != tgt[:, :40]).any()  # without pins those cells were corrupted
    # the pinned loss is the mean cross-entropy over unpinned positions only
    with torch.no_grad():
        forward.diffusion_loss(model, b, eps=0.5, self_cond=False, gen=gen(), pinned_BKC=pinned)
        ids, valid = forward.context_of(b)
        logits = model.logits(real(model, forward.encode_context(model, ids, valid), valid,
                                   b.prompt_BL.shape[1], seen[-1], 164))  # the head on every position
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                               reduction="none").view(3, 164)
    torch.testing.assert_close(loss.detach(), ce[:, 40:].mean(), atol=1e-5, rtol=0)
    assert not torch.isclose(loss, free)
    nothing = forward.diffusion_loss(model, b, eps=0.5, self_cond=False, gen=gen(),
                                     pinned_BKC=torch.zeros_like(pinned))
    torch.testing.assert_close(nothing, free)


def test_config_checks_itself():
    with pytest.raises(ValueError, match="81 markers, 81 digits"):
        SudokuConfig(canvas=162)
    with pytest.raises(ValueError, match="sliding_window"):
        SudokuConfig(sliding_window=300)
    with pytest.raises(ValueError, match="pin_frac"):
        SudokuConfig(pin_frac=1.5)
    with pytest.raises(ValueError, match="max_clues"):
        SudokuConfig(max_clues=90)


def _micro(out, stop_after=0):
    return SudokuConfig(out=str(out), steps=8, stop_after=stop_after, batch_size=4, hidden=32, layers=2,
                        warmup=2, lr=3e-3, pool=4, eval_every=0, ckpt_every_s=1e9, seed=3, time_budget_s=0)


def test_micro_training_learns_and_resumes(tmp_path):
    assert_learns_and_resumes(lambda out, stop: train(_micro(out, stop), progress=False), tmp_path, 4, 8)
