"""Request.stop: the row's output text ends before the first occurrence of any stop string (vLLM's rule),
token_ids keep the shortest prefix whose text holds everything before it, finish_reason "stop", and the row
ends after the canvas that completed the stop string. engine/stop_strings.py's rule on the shipped tokenizer,
then the engine on the shipped model (real text) and on a tiny model."""

from __future__ import annotations

import pytest
import torch

from engine.fast import Engine, Request
from engine.params import GenerationParams
from engine.stop_strings import find_stop, stop_problem
from model import DiffusionGemma, load_tokenizer
from model.tokenizer import encode_prompt
from pipeline.model_path import shipped_dir
from train import synthdata


@pytest.fixture(scope="module")
def shipped():
    model_dir = str(shipped_dir())
    return DiffusionGemma.from_pretrained(model_dir, dtype=torch.float32).eval(), load_tokenizer(model_dir)


def _brute_prefix(ids: list[int], head: str, det) -> int:
    """The rule, by a linear scan: the fewest tokens whose text starts with `head`."""
    return next(k for k in range(len(ids) + 1) if det(ids[:k]).startswith(head))


def test_find_stop_rule_on_the_shipped_tokenizer(shipped):
    _, tok = shipped
    det = tok.decode
    text = 'naïve café order {"city": "Zandsharport", "qty": 12} — done'
    ids = tok.encode(text, add_special_tokens=False)
    assert det(ids) == text
    pieces = [det(ids[:k]) for k in range(len(ids) + 1)]
    # every stop string that starts inside a token (and one that starts a token, and multi-byte ones)
    starts_inside = 0
    for s in ("city", '"Zand', "é", "ï", "—", "2}", "ity", "rp", "ne", "sharp"):
        hit = find_stop(ids, (s,), det)
        i = text.find(s)
        assert hit is not None and hit.stop == s and hit.text == text[:i]
        assert hit.n_tokens == _brute_prefix(ids, text[:i], det)
        kept = pieces[hit.n_tokens]
        assert kept.startswith(hit.text)
        starts_inside += kept != hit.text  # the token holding the stop string's start runs past the cut
    assert starts_inside >= 4
    # the earliest occurrence wins whatever the order of the stop strings; at the very start: no token
    hit = find_stop(ids, ("done", "café", "order"), det)
    assert (hit.stop, hit.text) == ("café", "naïve ")
    hit = find_stop(ids, ("naï",), det)
    assert (hit.n_tokens, hit.text) == (0, "")
    assert find_stop(ids, ("absent", "Zandsharport!"), det) is None
    assert stop_problem(("a", "bc")) is None and stop_problem(["a"]) is None
    assert stop_problem("abc") and stop_problem(("",)) and stop_problem((3,))


def _extraction_requests(tok, model, n: int, **kw) -> list[Request]:
    params = GenerationParams.from_model(model, max_new_tokens=4 * model.config.canvas_length,
                                         max_denoising_steps=8)
    exs = synthdata.dataset("heldout", n, "extraction")
    return [Request(id=str(i), input_ids=encode_prompt(tok, ex.prompt), seed=100 + i, params=params, **kw)
            for i, ex in enumerate(exs)]


def test_stop_strings_end_rows_early_on_the_shipped_model(shipped):
    """Rows whose output would take two canvases stop after the first when a stop string occurs there; rows
    without stop strings (or with one that never occurs) in the same batch are unchanged."""
    torch.set_num_threads(1)
    model, tok = shipped
    C = model.config.canvas_length

    def det(ids):
        return tok.decode(ids, skip_special_tokens=True)

    base_reqs = _extraction_requests(tok, model, 4, logprobs=True)
    base = Engine(model, detokenize=det).generate(base_reqs)
    assert all(b.finish_reason == "eos" and b.canvases == 2 for b in base[:2])
    texts = [det(b.token_ids) for b in base]
    # row 0: a stop string that is a whole token of the first canvas; row 1: one that starts inside a token
    # (the last character of the token before it)
    pieces0 = [det(base[0].token_ids[:k]) for k in range(C)]
    j = next(k for k in range(8, C - 1) if len(pieces0[k + 1]) - len(pieces0[k]) >= 3
             and texts[0].find(pieces0[k + 1][len(pieces0[k]):]) == len(pieces0[k]))
    stop0 = pieces0[j + 1][len(pieces0[j]):]
    pieces1 = [det(base[1].token_ids[:k]) for k in range(C)]
    j1 = next(k for k in range(8, C - 1) if len(pieces1[k]) - len(pieces1[k - 1]) >= 2
              and texts[1].find(pieces1[k][-1] + pieces1[k + 1][len(pieces1[k]):]) == len(pieces1[k]) - 1)
    stop1 = pieces1[j1][-1] + pieces1[j1 + 1][len(pieces1[j1]):]
    stops = [(stop0,), ("\x00never", stop1), (), ("\x00never",)]
    reqs = [Request(r.id, r.input_ids, r.seed, r.params, logprobs=True, stop=s)
            for r, s in zip(base_reqs, stops)]
    got = Engine(model, detokenize=det).generate(reqs)

    for b, c, text, stop in ((base[0], got[0], texts[0], stop0), (base[1], got[1], texts[1], stop1)):
        cut = text.find(stop)
        assert c.finish_reason == "stop" and c.stop_reason == stop and c.text == text[:cut]
        n = _brute_prefix(b.token_ids, text[:cut], det)
        assert c.token_ids == b.token_ids[:n] and c.num_tokens == n
        assert c.canvases == 1 < b.canvases and c.denoising_steps < b.denoising_steps
        assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(b.logprobs[:n]), rtol=0, atol=1e-5)
    assert det(got[0].token_ids) == got[0].text  # the stop string starts a token: the tokens' text is the cut
    assert det(got[1].token_ids) == got[1].text + stop1[0]  # it starts inside one: that token is kept
    for b, c in zip(base[2:], got[2:]):  # no stop string, or one that never occurs: as before
        assert (c.token_ids, c.finish_reason, c.canvases, c.denoising_steps) == (
            b.token_ids, b.finish_reason, b.canvases, b.denoising_steps)
        assert c.text is None and c.stop_reason is None


def test_stop_string_across_a_canvas_boundary_and_row_errors(eos_pair):
    """Tiny model, text = the ids spelled out: a stop string that spans two canvases ends the row after the
    second; the other rows of the batch are unchanged. A row with stop strings but no detokenize, bad stop
    strings, or a failing detokenize is an error Completion; its batch mates are not."""
    _, ours = eos_pair

    def det(ids):
        return "".join(f"<{t}>" for t in ids)

    p = GenerationParams(max_new_tokens=32, max_denoising_steps=3)
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(3, 256, (5 + i,), generator=g).tolist() for i in range(3)]
    base = Engine(ours, max_batch_rows=3).generate(
        [Request(str(i), x, 40 + i, p) for i, x in enumerate(prompts)])
    assert all(b.canvases == 4 for b in base)
    t = base[0].token_ids
    stop = f"{t[6]}><{t[7]}><{t[8]}>"  # starts inside token 6 (after its "<"), ends in the second canvas
    reqs = [Request("0", prompts[0], 40, p, stop=(stop,)), Request("1", prompts[1], 41, p),
            Request("2", prompts[2], 42, p, stop=("<999>",))]
    got = Engine(ours, max_batch_rows=3, detokenize=det).generate(reqs)
    text = det(t)
    assert text.find(stop) == len(det(t[:6])) + 1  # its first occurrence is the one placed
    assert got[0].finish_reason == "stop" and got[0].canvases == 2 and got[0].stop_reason == stop
    assert got[0].text == det(t[:6]) + "<" and got[0].token_ids == t[:7]
    for b, c in zip(base[1:], got[1:]):
        assert (c.token_ids, c.finish_reason, c.canvases) == (b.token_ids, b.finish_reason, b.canvases)

    def broken(ids):
        raise RuntimeError("no decoder")

    bad = [Request("a", prompts[0], 1, p, stop=("x",)), Request("b", prompts[1], 2, p, stop="x"),
           Request("c", prompts[2], 3, p, stop=("",)), Request("d", prompts[0], 4, p)]
    out = Engine(ours).generate(bad)
    assert [c.finish_reason for c in out] == ["error", "error", "error", "length"]
    assert "detokenize" in out[0].error and "stop" in out[1].error and "stop" in out[2].error
    out = Engine(ours, detokenize=broken).generate([bad[0], bad[3]])
    assert out[0].finish_reason == "error" and "detokenize failed" in out[0].error
    assert out[1].token_ids == Engine(ours).generate([bad[3]])[0].token_ids
