"""Chat input and per-row settings (issue 26 points 1 and 4).

Conversations (pipeline/conversation.py) and their rendering by the checkpoint's chat template
(model/tokenizer.py `encode_messages`), per-row settings from columns and from a sampling_params struct
(pipeline/row_settings.py) and the temperature mapping (engine/params.py `temperature_schedule`); then
whole jobs on a local Ray: one with the stub backend (bad rows, seeds), one on the shipped model whose
rows must equal the engine run directly on the template's ids with the rows' own parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import STUB, spec

from engine.params import MIN_TEMPERATURE, GenerationParams, temperature_schedule
from pipeline import read_results
from pipeline.conversation import parse_messages, with_system
from pipeline.executor import run_job
from pipeline.generator import job_columns
from pipeline.rows import prepare_rows, row_seed
from pipeline.shards import plan_shards, read_shard
from pipeline.spec import InputSpec, JobSpec, SpecError
from pipeline.validate import validate_job

U, A, S = "user", "assistant", "system"


def _turn(role, content):
    return {"role": role, "content": content}


# -- conversations ------------------------------------------------------------------------------------
def test_conversation_rules_name_the_turn_and_the_problem():
    good = [_turn(S, "Be brief."), _turn(U, "Hi"), _turn(A, "Hello!"), _turn(U, [
        {"type": "text", "text": "Two"}, {"type": "text", "text": "parts"}])]
    turns, why = parse_messages(good, "conv")
    assert why is None and turns[-1] == _turn(U, "Two\nparts") and turns[:3] == good[:3]
    assert parse_messages(json.dumps(good), "conv") == (turns, None)  # its JSON text reads the same
    # a Parquet struct fills absent fields with null: such a key counts as absent
    assert parse_messages([{"role": U, "content": "x", "name": None}], "c") == ([_turn(U, "x")], None)
    bad = {
        "conv[1].role 'bot' is not one of system, user, assistant": [_turn(U, "a"), _turn("bot", "b")],
        "conv[1].role 'system' is only allowed as the first turn":
            [_turn(U, "a"), _turn(S, "b"), _turn(U, "c")],
        "conv[1].role is 'assistant': the last turn must be the user's (the model answers it)":
            [_turn(U, "a"), _turn(A, "b")],
        "conv[0].content[1].type 'image_url' is not supported (only text parts)":
            [_turn(U, [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}}])],
        "conv[0] has 'tool_calls': only role and content are supported":
            [{"role": U, "content": "a", "tool_calls": [{"id": "1"}]}],
        "conv[0].content is missing": [{"role": U}],
        "conv[0].content is empty": [_turn(U, "  ")],
        "conv[0].content contains a NUL character": [_turn(U, "a\x00b")],
        "conv is empty": [],
        "conv is a dict, not a list of turns": {"role": U, "content": "a"},
        "conv is null": None,
    }
    for want, value in bad.items():
        assert parse_messages(value, "conv") == (None, want)
    got = parse_messages("[{", "conv")[1]
    assert got.startswith("conv is text that is not JSON (")
    assert with_system([_turn(U, "q")], "S") == [_turn(S, "S"), _turn(U, "q")]
    assert with_system([_turn(S, "own"), _turn(U, "q")], "S") == [_turn(S, "own"), _turn(U, "q")]


def test_multi_turn_conversation_renders_as_the_chat_template():
    from model.tokenizer import encode_messages, encode_prompt, load_tokenizer
    from pipeline.model_path import shipped_dir

    tok = load_tokenizer(str(shipped_dir()))
    turns = [_turn(S, "Label tickets."), _turn(U, "My order is late."), _turn(A, '{"category": "shipping"}'),
             _turn(U, "And now it arrived broken.")]
    # The Gemma-4 turn format written out by hand (model/assets/dgbatch-small/chat_template.jinja).
    text = ("<bos><|turn>system\nLabel tickets.<turn|>\n<|turn>user\nMy order is late.<turn|>\n"
            '<|turn>model\n{"category": "shipping"}<turn|>\n<|turn>user\nAnd now it arrived broken.<turn|>\n'
            "<|turn>model\n<|channel>thought\n<channel|>")
    assert tok.apply_chat_template(turns, tokenize=False) == text
    assert encode_messages(tok, turns) == tok.encode(text, add_special_tokens=False)
    assert encode_prompt(tok, "Hi") == encode_messages(tok, [_turn(U, "Hi")])


# -- per-row settings ---------------------------------------------------------------------------------
def test_temperature_scales_the_schedule():
    assert temperature_schedule(1, 0.8, 0.4) == (0.8, 0.4)  # T = 1 keeps the checkpoint's schedule
    assert temperature_schedule(0.5, 0.8, 0.4) == (0.4, 0.2)
    assert temperature_schedule(0, 0.8, 0.4) == (0.8 * MIN_TEMPERATURE, 0.4 * MIN_TEMPERATURE)
    GenerationParams(t_max=0.8 * MIN_TEMPERATURE, t_min=0.4 * MIN_TEMPERATURE)  # a valid schedule
    with pytest.raises(ValueError, match=r"temperature: expected a finite number >= 0, got -1"):
        temperature_schedule(-1, 0.8, 0.4)
    with pytest.raises(ValueError, match="no temperature schedule"):
        temperature_schedule(0.7, None, None)


def test_settings_from_columns_and_a_sampling_params_struct():
    sp = pa.array([{"temperature": 0.3, "max_tokens": 20, "top_p": 1.0, "top_k": None},
                   None,
                   {"temperature": None, "max_tokens": None, "top_p": 0.9, "top_k": None},
                   {"temperature": None, "max_tokens": None, "top_p": None, "top_k": 5},
                   {"temperature": 0.3, "max_tokens": None, "top_p": None, "top_k": None},
                   None, None, None])
    t = pa.table({"p": ["q"] * 8, "temp": [None, 0.7, None, None, 0.5, -0.5, None, None],
                  "len": [None, 64.0, None, None, None, None, 2.5, None],  # floats, as pandas writes ints
                  "seed": [None, 11, None, None, None, None, None, 11], "sp": sp})
    inp = InputSpec(path="x", prompt_column="p", sampling_params_column="sp",
                    generation_columns={"temperature": "temp", "max_tokens": "len", "seed": "seed"})
    rows = prepare_rows(t, inp, job_seed=3, file_rel="f.parquet", first_row=10)
    assert [r.settings for r in rows[:2]] == [{"temperature": 0.3, "max_new_tokens": 20},
                                              {"temperature": 0.7, "max_new_tokens": 64}]
    assert rows[0].seed == row_seed(3, "f.parquet#10") and rows[1].seed == 11  # its own seed replaces it
    assert rows[1].seed == rows[7].seed and rows[7].settings is None and rows[7].error is None
    assert [r.error for r in rows[2:7]] == [
        "f.parquet row 12: sp.top_p = 0.9 is not supported (only 1)",
        "f.parquet row 13: sp.top_k = 5 is not supported (only -1)",
        "f.parquet row 14: temperature set twice (column 'temp' and sp.temperature)",
        "f.parquet row 15: column 'temp' (temperature): expected a finite number >= 0, got -0.5",
        "f.parquet row 16: column 'len' (max_tokens): expected an int >= 1, got 2.5",
    ]
    text = pa.table({"p": ["q", "q"], "sp": ['{"max_tokens": "12", "seed": 5}', '{"max_new_tokens": 3, '
                                                                                '"max_tokens": 4}']})
    inp = InputSpec(path="x", prompt_column="p", sampling_params_column="sp")
    a, b = prepare_rows(text, inp, job_seed=0, file_rel="f.csv", first_row=0)
    assert a.settings == {"max_new_tokens": 12} and a.seed == 5  # JSON text, numbers as text (a CSV cell)
    assert b.error == ("f.csv row 1: max_new_tokens and max_tokens set the same parameter "
                       "(sp.max_new_tokens, sp.max_tokens)")


def test_spec_input_rules():
    def parse(**inp):
        return JobSpec.parse({"input": {"path": "x", **inp}, "output": "o"})

    with pytest.raises(SpecError, match=r"exactly one of prompt_column or template or messages_column"):
        parse(prompt_column="p", messages_column="m")
    with pytest.raises(SpecError, match="chat cannot be false"):
        parse(messages_column="m", chat=False)
    with pytest.raises(SpecError, match=r"input.generation_columns: unknown setting 'top_p' \(settings: "
                                        r"temperature, seed, max_tokens"):
        parse(prompt_column="p", generation_columns={"top_p": "c"})
    with pytest.raises(SpecError, match="temperature scales the t_max/t_min schedule; set one or the other"):
        parse(prompt_column="p", generation_columns={"temperature": "a", "t_max": "b"})
    ok = parse(messages_column="m", system="S", generation_columns={"max_tokens": "n"})
    assert ok.input.generation_columns == {"max_tokens": "n"}


# -- whole jobs ---------------------------------------------------------------------------------------
def _conversations() -> list:
    return [
        [_turn(U, "Where is my parcel?")],
        [_turn(S, "Own system."), _turn(U, "Hi"), _turn(A, "Hello"), _turn(U, "Refund please")],
        [_turn(U, "Hi"), _turn("bot", "??")],  # malformed: an error row naming the turn
        [_turn(U, "Where is my parcel?")],  # as row 0, with row 0's seed: the same output
        [_turn(U, "Where is my parcel?")],  # as row 0, its own seed: another output
        [_turn(U, "Short answer")],
    ]


def _write_chat(path, settings: dict) -> None:
    convs = _conversations()
    msg_type = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    cols = {"conv": pa.array(convs, msg_type), "key": [f"r{i}" for i in range(len(convs))], **settings}
    pq.write_table(pa.table(cols), path)


def test_chat_job_with_per_row_settings_through_the_pipeline(tmp_path, ray_local):
    _write_chat(tmp_path / "in.parquet", {"seed": [7, None, None, 7, 8, None],
                                          "temp": [None, 0.5, None, None, None, -1.0]})
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
               input={"prompt_column": None, "messages_column": "conv", "system": "You label tickets.",
                      "id_column": "key", "generation_columns": {"seed": "seed", "temperature": "temp"}})
    m = run_job(job, backend_factory=STUB, progress=False)
    rows = {r["id"]: r for r in read_results(str(tmp_path / "out")).to_pylist()}
    opened = "system: You label tickets.\nuser: Where is my parcel?"  # the job's system prompt opens it
    assert rows["r0"]["text"].split(": ", 1)[1] == opened[:40]
    assert ": system: Own system.\nuser: Hi\nassistant:" in rows["r1"]["text"]  # its own system turn
    assert rows["r1"]["text"].endswith('{"temperature": 0.5}')
    assert rows["r2"]["error"] == "in.parquet row 2: conv[1].role 'bot' is not one of system, user, assistant"
    assert rows["r0"]["seed"] == rows["r3"]["seed"] == 7 and rows["r4"]["seed"] == 8
    assert rows["r0"]["text"] == rows["r3"]["text"] != rows["r4"]["text"]  # a per-row seed reproduces
    assert rows["r5"]["error"] == ("in.parquet row 5: column 'temp' (temperature): expected a finite number "
                                   ">= 0, got -1.0")
    assert m["rows_by_status"] == {"ok": 4, "invalid": 0, "error": 2}


def test_chat_job_on_the_shipped_model_equals_the_engine_on_the_template(tmp_path, ray_local):
    from engine.fast import Engine, Request
    from model.tokenizer import encode_messages
    from pipeline.model_path import load_model_and_tokenizer
    from pipeline.spec import ModelSpec

    _write_chat(tmp_path / "in.parquet", {"len": [16, 8, 16, 16, 16, 40],
                                          "sp": [{"temperature": 0.5}, None, None, None, {"temperature": 0.0},
                                                 {"temperature": 1.5}]})
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
               input={"prompt_column": None, "messages_column": "conv", "system": "You label tickets.",
                      "id_column": "key", "generation_columns": {"max_tokens": "len"},
                      "sampling_params_column": "sp"},
               generation={"max_new_tokens": 16, "max_denoising_steps": 4, "seed": 1},
               resources={"replicas": 1, "shard_rows": 8, "batch_size": 4})
    run_job(job, progress=False)
    rows = {r["id"]: r for r in read_results(str(tmp_path / "out")).to_pylist()}
    assert rows["r2"]["status"] == "error" and "conv[1].role 'bot'" in rows["r2"]["error"]
    model, tok, _ = load_model_and_tokenizer(ModelSpec())
    base = GenerationParams.from_model(model, max_new_tokens=16, max_denoising_steps=4)
    want = {}
    temps = {"r0": 0.5, "r4": 0.0, "r5": 1.5}
    for i, conv in enumerate(_conversations()):
        key = f"r{i}"
        if key == "r2":
            continue
        params = base.with_(max_new_tokens={"r1": 8, "r5": 40}.get(key, 16))
        if key in temps:
            t_max, t_min = temperature_schedule(temps[key], base.t_max, base.t_min)
            params = params.with_(t_max=t_max, t_min=t_min)
        turns = conv if conv[0]["role"] == S else [_turn(S, "You label tickets."), *conv]
        want[key] = Request(key, encode_messages(tok, turns), rows[key]["seed"], params)
    got = {c.id: c for c in Engine(model, max_batch_rows=4).run(list(want.values()))}
    for key in want:
        assert rows[key]["status"] == "ok", rows[key]["error"]
        assert rows[key]["text"] == tok.decode(got[key].token_ids, skip_special_tokens=True), key
        assert rows[key]["num_tokens"] == got[key].num_tokens and rows[key]["num_tokens"] <= \
            want[key].params.max_new_tokens + 32  # rounded up to whole canvases at most


def test_the_chat_example_validates(tmp_path):
    root = Path(__file__).parents[2]
    job = JobSpec.load(root / "jobs" / "examples" / "chat.yaml").model_dump(mode="json")
    job["input"]["path"] = str(root / job["input"]["path"])
    job["output"]["path"] = str(tmp_path / "out")
    parsed = JobSpec.parse(job)
    checked = validate_job(parsed, check_model=False, identity={})
    assert checked.rows == 4 and checked.files[0].format == "jsonl"
    table = read_shard(plan_shards(checked.files, 8)[0], job_columns(parsed)).table
    rows = prepare_rows(table, parsed.input, job_seed=0, file_rel="chat.jsonl", first_row=0)
    assert [r.error is None for r in rows] == [True, True, True, False]  # the last is malformed on purpose
    assert [r.settings for r in rows[:3]] == [
        {"temperature": 0.5, "max_new_tokens": 32}, {"max_new_tokens": 32},  # a null temperature: the job's
        {"temperature": 1.0, "max_new_tokens": 64}]


def test_a_rows_own_max_tokens_gets_the_shared_constraint_at_its_budget():
    from constraints import check_feasible
    from model import DiffusionGemmaConfig, load_tokenizer
    from pipeline.backend import _ConstraintHooks
    from pipeline.model_path import shipped_dir
    from pipeline.rows import PreparedRow

    tok, cfg = load_tokenizer(str(shipped_dir())), DiffusionGemmaConfig.from_dir(str(shipped_dir()))
    job = JobSpec.parse({"input": {"path": "in", "prompt_column": "p"}, "output": "o",
                         "structured_output": {"regex": "[a-z]{20}"}})
    hooks = _ConstraintHooks(job, tok, cfg, max_new_tokens=64)
    row = PreparedRow(0, "r", 0, "x")
    assert hooks.for_row(row) is hooks.shared and hooks.for_row(row, 64) is hooks.shared
    roomy = hooks.for_row(row, 128)
    assert roomy is not hooks.shared and roomy.max_new_tokens == 128 and hooks.for_row(row, 128) is roomy
    least = check_feasible(job.structured_output, tok, cfg, max_new_tokens=64)
    short = hooks.for_row(row, least - 1)  # too few tokens for the constraint: that row's error
    assert isinstance(short, str) and short.startswith(f"max_new_tokens {least - 1}: ")
