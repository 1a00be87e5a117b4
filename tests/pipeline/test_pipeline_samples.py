"""Several samples per prompt (`generation.n`) and the familiar generation knobs (issue 26 points 2 and 3).

Through the real pipeline on a local Ray: stub-backend jobs with n = 3 (every (id, sample_index) exactly
once, samples differ, error rows complete), a driver killed mid-run and rerun equal to an uninterrupted
run, an n = 2 job on the S3 server on loopback, the export's lines per sample; then the shipped model:
samples under a JSON Schema each valid, and the knobs (max_tokens, stop, logprobs, temperature). Spec
checks (did you mean, conflicts) need no Ray.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from pipeline_helpers import STUB, kill_driver_after_commits, spec, write_prompts

from pipeline import read_results, status
from pipeline.executor import run_job
from pipeline.rows import row_seed, sample_seed
from pipeline.spec import JobSpec, SpecError

HERE = Path(__file__).parent


def _assert_samples_once(table: pa.Table, ids: list[str], n: int) -> None:
    """Every (id, sample_index) for sample_index 0..n-1 exactly once, in (input order, sample) order."""
    got = list(zip(table.column("id").to_pylist(), table.column("sample_index").to_pylist()))
    dup = [k for k, c in Counter(got).items() if c > 1]
    assert not dup, f"duplicated (id, sample): {dup[:5]}"
    assert sorted(got) == sorted((i, k) for i in ids for k in range(n))
    assert table.schema.field("sample_index").type == pa.int32()


def _sorted(table: pa.Table) -> list[dict]:
    drop = {"attempt", "latency_s"}  # which attempt wrote a row, and its timing, differ between runs
    rows = [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: (r["id"], r["sample_index"]))


def test_n_samples_every_id_and_sample_once(tmp_path, ray_local):
    prompts = [f"question {i}" for i in range(10)]
    prompts[4] = None  # a bad row: its n samples are error rows, so the (id, sample) set stays complete
    write_prompts(tmp_path / "in.parquet", prompts)
    ids = [f"in.parquet#{i}" for i in range(10)]
    one = spec(str(tmp_path / "in.parquet"), str(tmp_path / "one"), output={"passthrough_columns": ["n"]},
               generation={"seed": 5})
    m1 = run_job(one, backend_factory=STUB, progress=False)
    three = {**one, "output": {"path": str(tmp_path / "three"), "passthrough_columns": ["n"]},
             "generation": {"seed": 5, "n": 3}}
    m3 = run_job(three, backend_factory=STUB, progress=False)
    t1, t3 = read_results(str(tmp_path / "one")), read_results(str(tmp_path / "three"))
    _assert_samples_once(t1, ids, 1)
    _assert_samples_once(t3, ids, 3)
    assert t1.schema == t3.schema  # n = 1 has today's layout plus sample_index (0)
    assert set(t1.column("sample_index").to_pylist()) == {0}
    rows = {(r["id"], r["sample_index"]): r for r in t3.to_pylist()}
    for i, rid in enumerate(ids):
        s = [rows[(rid, k)] for k in range(3)]
        assert [r["n"] for r in s] == [i] * 3  # passthrough repeated for each sample
        if i == 4:
            assert all(r["status"] == "error" and "is null" in r["error"] for r in s)
            continue
        assert [r["seed"] for r in s] == [sample_seed(row_seed(5, rid), k) for k in range(3)]
        assert s[0]["seed"] == row_seed(5, rid) and len({r["seed"] for r in s}) == 3
        assert len({r["text"] for r in s}) == 3  # the stub's text hashes the seed: samples differ
    # sample 0 is the n = 1 row
    assert _sorted(t1) == [r for r in _sorted(t3) if r["sample_index"] == 0]
    # the output is in (input order, sample_index) order within a shard
    assert t3.column("sample_index").to_pylist()[:6] == [0, 1, 2, 0, 1, 2]
    assert m1["rows"] == 10 and m3["rows"] == 30
    assert m3["rows_by_status"] == {"ok": 27, "invalid": 0, "error": 3}
    st = status(str(tmp_path / "three"))
    assert st["rows"] == 10 and st["rows_committed"] == 10 and st["succeeded"]
    # n shapes the output: a resumed run with another n is refused
    with pytest.raises(SpecError, match="holds a different job.*changed: generation"):
        run_job({**three, "generation": {"seed": 5, "n": 2}}, backend_factory=STUB, progress=False)


def test_killed_n3_run_resumed_equals_an_uninterrupted_run(tmp_path, ray_local):
    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(32)])
    ids = [f"in.parquet#{i}" for i in range(32)]
    out, ref = tmp_path / "out", tmp_path / "ref"
    job = spec(str(tmp_path / "in.parquet"), str(out), resources={"shard_rows": 4}, generation={"n": 3})
    cmd = kill_driver_after_commits(tmp_path, job, ray_local.get_runtime_context().gcs_address, 2)
    commits = out / "_commits"
    before = {p.name: p.read_text() for p in commits.iterdir()}
    assert 2 <= len(before) < 8 and not (out / "_SUCCESS").exists()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    after = {p.name: p.read_text() for p in commits.iterdir()}
    assert all(after[k] == v for k, v in before.items())  # committed shards were not redone
    resumed = read_results(str(out))
    _assert_samples_once(resumed, ids, 3)
    run_job({**job, "output": {"path": str(ref)}}, backend_factory=STUB, progress=False)
    assert _sorted(resumed) == _sorted(read_results(str(ref)))
    assert json.loads((out / "_manifest.json").read_text())["rows"] == 96


def test_n_samples_on_s3_and_exported_one_line_per_sample(tmp_path, bucket, s3_endpoint, ray_local):
    import fsspec

    from pipeline.export import ExportConfig, export

    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    write_prompts(f"{bucket}/in/a.parquet", [f"q{i}" for i in range(6)], storage_options=opts)
    job = spec(f"{bucket}/in/", f"{bucket}/out", generation={"n": 2},
               storage={"endpoint_url": s3_endpoint})
    run_job(job, backend_factory=STUB, progress=False)
    t = read_results(f"{bucket}/out", s3_endpoint)
    _assert_samples_once(t, [f"a.parquet#{i}" for i in range(6)], 2)
    dest = tmp_path / "out.jsonl"
    export(ExportConfig(f"{bucket}/out", format="openai-batch", dest=str(dest), endpoint_url=s3_endpoint))
    lines = [json.loads(x) for x in dest.read_text().splitlines()]
    assert len(lines) == 12 and len({x["id"] for x in lines}) == 12  # one line (and request id) per sample
    got = sorted((x["custom_id"], x["response"]["body"]["choices"][0]["index"]) for x in lines)
    assert got == sorted((f"a.parquet#{i}", k) for i in range(6) for k in range(2))
    assert fsspec.filesystem("s3", **opts).exists(f"{bucket}/out/_SUCCESS")


# -- the shipped model ---------------------------------------------------------------------------------
SCHEMA = {"type": "object", "properties": {"label": {"enum": ["refund", "delivery", "other"]},
                                           "urgent": {"type": "boolean"}},
          "required": ["label", "urgent"], "additionalProperties": False}


def test_samples_under_a_json_schema_each_valid_on_the_shipped_model(tmp_path, ray_local):
    write_prompts(tmp_path / "in.parquet", ["My parcel never arrived.", "I want my money back."])
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
               generation={"n": 3, "max_tokens": 32, "max_denoising_steps": 4, "seed": 2},
               structured_output={"json_schema": SCHEMA},
               resources={"replicas": 1, "shard_rows": 8, "batch_size": 8})
    run_job(job, progress=False)
    t = read_results(str(tmp_path / "out"))
    _assert_samples_once(t, ["in.parquet#0", "in.parquet#1"], 3)
    for r in t.to_pylist():
        assert r["status"] == "ok", r["error"]
        got = json.loads(r["json"])
        assert set(got) == {"label", "urgent"} and got["label"] in SCHEMA["properties"]["label"]["enum"]


def test_the_synthetic_example_runs_on_the_shipped_model(tmp_path, ray_local):
    root = Path(__file__).parents[2]
    job = JobSpec.load(root / "jobs" / "examples" / "synthetic.yaml").model_dump(mode="json")
    job["input"]["path"] = str(root / job["input"]["path"])
    job["output"]["path"] = str(tmp_path / "out")
    m = run_job(job, progress=False)
    t = read_results(str(tmp_path / "out"))
    _assert_samples_once(t, [f"synthetic.jsonl#{i}" for i in range(3)], 4)
    enum = job["structured_output"]["json_schema"]["properties"]["label"]["enum"]
    for r in t.to_pylist():
        assert r["status"] == "ok", r["error"]
        got = json.loads(r["json"])
        assert set(got) == {"label", "urgent"} and got["label"] in enum and isinstance(got["urgent"], bool)
    assert m["rows"] == 12 and m["rows_by_status"]["ok"] == 12


def test_knobs_on_the_shipped_model(tmp_path, ray_local):
    from engine.fast import Engine, Request
    from engine.params import GenerationParams, temperature_schedule
    from model.tokenizer import encode_prompt
    from pipeline.model_path import load_model_and_tokenizer
    from pipeline.spec import ModelSpec

    prompts = ["Write a short note about the sea.", "List three fruits."]
    write_prompts(tmp_path / "in.parquet", prompts)
    gen = {"max_tokens": 32, "max_denoising_steps": 4, "seed": 3, "temperature": 0.7, "logprobs": True,
           "n": 2}
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), generation=gen,
               resources={"replicas": 1, "shard_rows": 8, "batch_size": 8})
    run_job(job, progress=False)
    t = read_results(str(tmp_path / "out"))
    assert t.schema.field("logprobs").type == pa.list_(pa.float32())
    model, tok, _ = load_model_and_tokenizer(ModelSpec())
    base = GenerationParams.from_model(model, max_new_tokens=32, max_denoising_steps=4)
    t_max, t_min = temperature_schedule(0.7, base.t_max, base.t_min)
    params = base.with_(t_max=t_max, t_min=t_min)
    rows = t.to_pylist()
    want = [Request(f"{r['id']}/{r['sample_index']}", encode_prompt(tok, prompts[int(r["id"][-1])]),
                    r["seed"], params, logprobs=True) for r in rows]
    got = {c.id: c for c in Engine(model, max_batch_rows=8).run(want)}
    for r in rows:
        c = got[f"{r['id']}/{r['sample_index']}"]
        assert r["status"] == "ok", r["error"]
        assert r["text"] == tok.decode(c.token_ids, skip_special_tokens=True)
        assert len(r["logprobs"]) == len(c.token_ids) and r["logprobs"] == pytest.approx(c.logprobs, abs=1e-5)
        assert all(lp <= 0 for lp in r["logprobs"])
    # stop: the row's text ends before its first stop string; pick one the unstopped text contains
    text = rows[0]["text"]
    # seeds and weights are fixed, so this text is too: a word past its start always exists
    word = next((w for w in text.split() if len(w) >= 3 and text.index(w) > 0), None)
    assert word is not None, f"the shipped model's text has no word to stop at: {text!r}"
    stopped = {**job, "output": {"path": str(tmp_path / "stopped")},
               "generation": {**gen, "logprobs": False, "stop": [word]}}
    run_job(stopped, progress=False)
    s = {(r["id"], r["sample_index"]): r for r in read_results(str(tmp_path / "stopped")).to_pylist()}
    first = s[(rows[0]["id"], rows[0]["sample_index"])]
    assert first["status"] == "ok" and word not in first["text"] and text.startswith(first["text"])


def test_choice_scores_with_logprobs_on_the_shipped_model(tmp_path, ray_local):
    labels = ["refund", "delivery", "other"]
    write_prompts(tmp_path / "in.parquet", ["My parcel never arrived.", "I want my money back."])
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
               generation={"n": 2, "max_tokens": 16, "max_denoising_steps": 4, "logprobs": True},
               structured_output={"choice": labels},
               resources={"replicas": 1, "shard_rows": 8, "batch_size": 8})
    run_job(job, progress=False)
    t = read_results(str(tmp_path / "out"))
    _assert_samples_once(t, ["in.parquet#0", "in.parquet#1"], 2)
    for r in t.to_pylist():
        assert r["status"] == "ok", r["error"]
        scores = json.loads(r["json"])["scores"]  # the scores the choice hook computed, by label
        assert r["choice_scores"] == pytest.approx(
            [float("-inf") if scores[k] is None else scores[k] for k in labels], abs=1e-5)
        assert r["logprobs"] and all(lp <= 0 for lp in r["logprobs"])


def test_a_rows_own_stop_strings():
    from pipeline.row_settings import from_mapping, resolve

    given, err = from_mapping({"stop": ["END", "\n\n"], "max_tokens": 8}, "sp")
    assert err is None and resolve(given) == ({"stop": ["END", "\n\n"], "max_new_tokens": 8}, None, None)
    given, _ = from_mapping('{"stop": "END"}', "sp")
    assert resolve(given)[0] == {"stop": ["END"]}  # one string, as OpenAI's `stop` takes
    for bad in ([""], [1], {"a": 1}):
        given, _ = from_mapping({"stop": bad}, "sp")
        assert "sp.stop: expected a non-empty string or a list of them" in resolve(given)[2]


# -- the spec ------------------------------------------------------------------------------------------
def _parse(**generation) -> JobSpec:
    return JobSpec.parse({"input": {"path": "x", "prompt_column": "p"}, "output": "o",
                          "generation": generation})


def test_generation_knobs_in_the_spec():
    g = _parse(n=4, temperature=0.5, max_tokens=12, stop="END", logprobs=True).generation
    assert (g.n, g.stop, g.logprobs) == (4, ["END"], True)
    assert g.engine_overrides() == {"max_new_tokens": 12}  # temperature is mapped by the backend
    # knobs at defaults leave fingerprints be: the first version's form (test_spec_generation.py)
    first = dict.fromkeys(("max_new_tokens", "max_denoising_steps", "t_max", "t_min", "entropy_bound",
                           "stability_threshold", "confidence_threshold"))
    assert _parse().generation.fingerprint_dict() == {**first, "seed": 0}
    with pytest.raises(SpecError, match=r"temprature: unknown field \(did you mean 'temperature'"):
        _parse(temprature=0.5)
    with pytest.raises(SpecError, match=r"generation\.max_new_token: .*did you mean 'max_new_tokens'"):
        _parse(max_new_token=8)
    with pytest.raises(SpecError, match=r"generation\.max_tokens: max_tokens is max_new_tokens"):
        _parse(max_tokens=8, max_new_tokens=8)
    with pytest.raises(SpecError, match=r"generation\.temperature: temperature scales the t_max/t_min"):
        _parse(temperature=0.5, t_max=1.0)
    with pytest.raises(SpecError, match=r"generation\.n"):
        _parse(n=0)
    with pytest.raises(SpecError, match=r"generation\.temperature"):
        _parse(temperature=-1)
    with pytest.raises(SpecError, match="generation.stop: structured output decides where a row ends"):
        JobSpec.parse({"input": {"path": "x", "prompt_column": "p"}, "output": "o",
                       "generation": {"stop": ["}"]}, "structured_output": {"regex": "a+"}})
