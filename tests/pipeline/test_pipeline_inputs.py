"""Input formats (issue 26 point 5): JSONL, CSV and OpenAI batch files, planned and read like Parquet.

Listing and reading on local files (pipeline/shards.py, pipeline/text_inputs.py), then whole jobs through
the real pipeline on a local Ray with the stub backend (the model does not matter to formats): a JSONL job
with a bad line, resumed; CSV and openai-batch jobs; a JSONL job on the S3 server on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pipeline_helpers import STUB, assert_exactly_once, spec

from pipeline import read_results
from pipeline.executor import run_job
from pipeline.plan import PLAN_FILE, Plan
from pipeline.rows import prepare_rows
from pipeline.shards import Shard, list_inputs, plan_shards, read_shard
from pipeline.spec import JobSpec, SpecError
from pipeline.text_inputs import GROUP_ROWS
from pipeline.validate import validate_job


def _jsonl(path: Path, lines: list) -> None:
    """Write lines: a dict is one JSON object, bytes are written as they are (with a newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((json.dumps(x).encode() if isinstance(x, dict) else x) + b"\n" for x in lines))


def _read_all(url: str, columns: list[str], shard_rows: int, fmt: str | None = None):
    shards = plan_shards(list_inputs(url, fmt=fmt), shard_rows)
    reads = [read_shard(s, columns) for s in shards]
    rows, bad = [], {}
    for s, r in zip(shards, reads):
        assert r.table.num_rows == s.num_rows and r.table.column_names == columns
        bad.update({s.start + k: why for k, why in r.unreadable.items()})
        rows += r.table.to_pylist()
    return shards, reads, rows, bad


# -- listing and reading -----------------------------------------------------------------------------
def test_jsonl_rows_types_and_bad_lines_across_shards(tmp_path):
    n = 2 * GROUP_ROWS + 300  # three seek groups, shards that start inside them
    lines: list = []
    want = []
    for i in range(n):
        if i == 5:
            lines.append(b'{"prompt": "unterminated')  # not valid JSON: a row that reads as nulls
            want.append(None)
        elif i == GROUP_ROWS + 7:
            lines.append(b"[1, 2]")  # JSON, but not an object
            want.append(None)
        elif i == 2 * GROUP_ROWS + 1:
            lines.append(b'{"prompt": "caf\xe9"}')  # Latin-1, not UTF-8
            want.append(None)
        else:
            row = {"prompt": f"p{i}", "n": i, "score": i / 2 if i % 3 else i, "meta": {"k": i},
                   "mixed": "s" if i % 2 else i}
            lines.append(json.dumps(row).encode())
            want.append(row)
        if i % 500 == 0:
            lines.append(b"   ")  # blank lines are not rows
    _jsonl(tmp_path / "in.jsonl", lines)
    f = list_inputs(str(tmp_path / "in.jsonl"))[0]
    assert f.format == "jsonl" and f.num_rows == n and f.row_groups == (GROUP_ROWS, GROUP_ROWS, 300)
    assert {x.name: str(x.type) for x in f.schema} == {"prompt": "string", "n": "int64", "score": "double",
                                                       "meta": "string", "mixed": "string"}
    cols = ["prompt", "n", "score", "meta", "mixed"]
    shards, reads, rows, bad = _read_all(str(tmp_path / "in.jsonl"), cols, 700)
    assert [s.num_rows for s in shards] == [700, 324, 700, 624]  # cut at the seek groups, like row groups
    assert all(r.table.schema == reads[0].table.schema for r in reads)  # one shape for every shard
    for i, (got, row) in enumerate(zip(rows, want)):
        if row is None:
            assert got == dict.fromkeys(cols), i
        else:
            assert got == {**row, "score": float(row["score"]), "meta": json.dumps(row["meta"]),
                           "mixed": row["mixed"] if isinstance(row["mixed"], str) else str(row["mixed"])}, i
    path = str(tmp_path / "in.jsonl")
    # the line numbers count the blank lines before them
    assert bad == {5: f"{path} line 7: not valid JSON (Unterminated string starting at: column 12)",
                   GROUP_ROWS + 7: f"{path} line {GROUP_ROWS + 11}: a JSON list, not an object",
                   2 * GROUP_ROWS + 1: f"{path} line {2 * GROUP_ROWS + 7}: not valid UTF-8 (invalid "
                                       "continuation byte at byte 15)"}
    # Planning is pure and survives _plan.json: a resumed run reads the same rows from the same seeks.
    again = plan_shards(list_inputs(path), 700)
    assert again == shards and [Shard(**json.loads(json.dumps(s.to_json()))) for s in shards] == shards
    assert shards[3].start == 1724 and shards[3].seek[0] == GROUP_ROWS  # starts inside the second group
    piece = read_shard(shards[3].sub(2024, 40), ["n"]).table.column("n").to_pylist()
    assert piece == [None if want[i] is None else i for i in range(2024, 2064)]  # a bisected piece


def test_csv_quoting_types_and_bad_records(tmp_path):
    (tmp_path / "in.csv").write_bytes(
        b'\xef\xbb\xbfid,prompt,temp,len\n'
        b'007,"Hello, ""quoted""\nsecond line",0.5,16\n'
        b'8,plain,,32\n'
        b'\n'
        b'9,too,many,fields,here\n'
        b'10,last,2e-1,8')  # no final newline
    f = list_inputs(str(tmp_path / "in.csv"))[0]
    assert f.format == "csv" and f.num_rows == 4
    assert {x.name: str(x.type) for x in f.schema} == {"id": "string", "prompt": "string", "temp": "double",
                                                       "len": "int64"}
    _, _, rows, bad = _read_all(str(tmp_path / "in.csv"), ["id", "prompt", "temp", "len"], 2)
    assert rows == [{"id": "007", "prompt": 'Hello, "quoted"\nsecond line', "temp": 0.5, "len": 16},
                    {"id": "8", "prompt": "plain", "temp": None, "len": 32},
                    {"id": None, "prompt": None, "temp": None, "len": None},
                    {"id": "10", "prompt": "last", "temp": 0.2, "len": 8}]
    assert bad == {2: f"{tmp_path / 'in.csv'} line 6: 5 fields, the header has 4"}


def test_format_by_extension_or_input_format(tmp_path):
    _jsonl(tmp_path / "d" / "a.jsonl", [{"prompt": "x"}])
    (tmp_path / "d" / "b.csv").write_text("prompt\ny\n")
    (tmp_path / "d" / "notes.txt").write_text("not an input")
    with pytest.raises(SpecError, match=r"holds files of several formats \(csv, jsonl\); set input.format"):
        list_inputs(str(tmp_path / "d"))
    assert [f.rel for f in list_inputs(str(tmp_path / "d"), fmt="csv")] == ["b.csv"]
    with pytest.raises(SpecError, match=r"notes\.txt: cannot tell its format from its name"):
        list_inputs(str(tmp_path / "d" / "notes.txt"))
    (tmp_path / "rows.txt").write_text('{"prompt": "z"}\n')
    assert list_inputs(str(tmp_path / "rows.txt"), fmt="jsonl")[0].num_rows == 1
    (tmp_path / "noheader.csv").write_text("")
    with pytest.raises(SpecError, match=r"noheader\.csv: not a readable csv file: no CSV header$"):
        list_inputs(str(tmp_path / "noheader.csv"))
    with pytest.raises(SpecError, match=r"no JSONL files found$"):
        list_inputs(str(tmp_path / "d" / "absent.jsonl"), fmt="jsonl")
    (tmp_path / "d" / "empty.jsonl").write_text("\n")  # an empty part beside parts with rows adds nothing
    assert [f.rel for f in list_inputs(str(tmp_path / "d"), fmt="jsonl")] == ["a.jsonl"]
    assert list_inputs(str(tmp_path / "d" / "empty.jsonl"))[0].num_rows == 0


def test_openai_batch_lines_become_rows_or_error_rows():
    bodies = {
        "ok": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "S"},
                                                    {"role": "user", "content": "Q"}],
               "max_tokens": 16, "temperature": 0.5, "seed": 7, "n": 1, "top_p": 1},
        "alias": {"messages": [{"role": "user", "content": "Q"}], "max_completion_tokens": 8},
        "n2": {"messages": [{"role": "user", "content": "Q"}], "n": 2},
        "tools": {"messages": [{"role": "user", "content": "Q"}], "tools": [{"type": "function"}]},
        "nomsg": {"max_tokens": 4},
        "badseed": {"messages": [{"role": "user", "content": "Q"}], "seed": -1},
    }
    t = pa.table({"custom_id": list(bodies) + ["embed"], "method": ["POST"] * 7,
                  "url": ["/v1/chat/completions"] * 6 + ["/v1/embeddings"],
                  "body": [json.dumps(b) for b in bodies.values()] + ['{"input": "x"}']})
    inp = JobSpec.parse({"input": {"path": "b.jsonl", "format": "openai-batch"}, "output": "o"}).input
    assert inp.id_column == "custom_id"
    rows = {r.id: r for r in prepare_rows(t, inp, job_seed=0, file_rel="b.jsonl", first_row=0)}
    ok = rows["ok"]
    assert ok.error is None and ok.seed == 7 and ok.messages == [{"role": "system", "content": "S"},
                                                                 {"role": "user", "content": "Q"}]
    assert ok.settings == {"max_new_tokens": 16, "temperature": 0.5}  # model ignored, n/top_p at no-op values
    assert rows["alias"].settings == {"max_new_tokens": 8}
    assert rows["n2"].error == "b.jsonl row 2: body.n = 2 is not supported (only 1)"
    assert rows["tools"].error == "b.jsonl row 3: body.tools is not supported"
    assert rows["nomsg"].error == "b.jsonl row 4: body.messages is missing"
    assert rows["badseed"].error == "b.jsonl row 5: body.seed: expected an int >= 0, got -1"
    assert rows["embed"].error == ("b.jsonl row 6: url '/v1/embeddings' is not supported (only "
                                   "/v1/chat/completions)")
    for bad in ({"prompt_column": "p"}, {"id_column": "other"}, {"chat": False}):
        with pytest.raises(SpecError, match="openai-batch"):
            JobSpec.parse({"input": {"path": "b.jsonl", "format": "openai-batch", **bad}, "output": "o"})


# -- whole jobs ---------------------------------------------------------------------------------------
def _by_id(out: str, **kw) -> dict:
    """Output rows by id, without what varies between runs (attempt number, latency)."""
    return {r["id"]: {k: v for k, v in r.items() if k not in ("attempt", "latency_s")}
            for r in read_results(out, **kw).to_pylist()}


def test_jsonl_job_with_a_bad_line_then_resumed(tmp_path, ray_local):
    lines = [{"prompt": f"question {i}", "k": i} for i in range(11)]
    lines[4] = b'{"prompt": "broken", '
    _jsonl(tmp_path / "in" / "q.jsonl", lines)
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in"), str(out), output={"passthrough_columns": ["k"]})
    m = run_job(job, backend_factory=STUB, progress=False)
    t = read_results(str(out))
    assert_exactly_once(t, [f"q.jsonl#{i}" for i in range(11)])
    assert t.schema.field("k").type == pa.int64()  # a JSON int column stays int64 through the pipeline
    rows = _by_id(str(out))
    assert rows["q.jsonl#4"]["status"] == "error"
    assert rows["q.jsonl#4"]["error"].startswith(f"q.jsonl row 4: unreadable input: {tmp_path}/in/q.jsonl "
                                                 "line 5: not valid JSON")
    assert rows["q.jsonl#3"]["status"] == "ok" and rows["q.jsonl#3"]["text"].endswith("question 3")
    assert m["rows_by_status"] == {"ok": 10, "invalid": 0, "error": 1}
    plan = Plan.from_json(json.loads((out / PLAN_FILE).read_text()))
    assert plan.shards == plan_shards(list_inputs(str(tmp_path / "in")), 4)  # planned as a rerun plans it
    # Interrupt it after the fact: drop the end markers and half the commits, then run the same spec again.
    commits = sorted((out / "_commits").iterdir())
    for c in commits[::2]:
        (out / "data" / Path(json.loads(c.read_text())["file"]).name).unlink()
        c.unlink()
    (out / "_SUCCESS").unlink()
    (out / "_manifest.json").unlink()
    m2 = run_job(job, backend_factory=STUB, progress=False)
    assert m2["runs"][-1]["rows"] == sum(json.loads(c.read_text())["rows"] for c in commits[::2]) > 0
    assert _by_id(str(out)) == rows  # the redone shards' rows are the same rows, seeds and texts
    assert sorted(p.name for p in (out / "_commits").iterdir()) == [c.name for c in commits]


def test_csv_and_openai_batch_jobs(tmp_path, ray_local):
    (tmp_path / "t.csv").write_text("topic,len\nrivers,5\nbridges,\n,7\n")
    job = spec(str(tmp_path / "t.csv"), str(tmp_path / "o1"),
               input={"prompt_column": None, "template": "Write about {topic}.",
                      "generation_columns": {"max_tokens": "len"}})
    run_job(job, backend_factory=STUB, progress=False)
    rows = _by_id(str(tmp_path / "o1"))
    assert rows["t.csv#0"]["text"].endswith('Write about rivers. {"max_new_tokens": 5}')
    assert rows["t.csv#0"]["num_tokens"] == 5 and rows["t.csv#1"]["num_tokens"] == 8  # null: the job's
    assert rows["t.csv#2"]["error"] == "t.csv row 2: template column 'topic' is null"

    reqs = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "m", "messages": [{"role": "user", "content": f"Hello {i}"}],
                      "max_tokens": 3 + i}} for i in range(5)]
    reqs[2]["body"]["response_format"] = {"type": "json_object"}
    _jsonl(tmp_path / "batch.jsonl", reqs + [b"not json"])
    job = spec(str(tmp_path / "batch.jsonl"), str(tmp_path / "o2"),
               input={"prompt_column": None, "format": "openai-batch", "system": "Be brief."})
    m = run_job(job, backend_factory=STUB, progress=False)
    rows = _by_id(str(tmp_path / "o2"))
    assert sorted(rows) == sorted([f"req-{i}" for i in range(5)] + ["batch.jsonl#5"])
    assert rows["req-0"]["status"] == "ok" and rows["req-0"]["num_tokens"] == 3
    assert rows["req-0"]["text"].startswith("echo[")
    assert "system: Be brief.\nuser: Hello 0" in rows["req-0"]["text"]  # the system prompt opens it
    assert rows["req-2"]["error"] == "batch.jsonl row 2: body.response_format is not supported"
    assert "line 6: not valid JSON" in rows["batch.jsonl#5"]["error"]
    assert m["rows_by_status"] == {"ok": 4, "invalid": 0, "error": 2}


def test_jsonl_job_on_s3(bucket, s3_endpoint, ray_local):
    import fsspec

    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = fsspec.filesystem("s3", **opts)
    body = b"".join(json.dumps({"key": f"k{i}", "prompt": f"s3 prompt {i}"}).encode() + b"\n"
                    for i in range(9))
    for prefix in ("in", "dup"):
        fs.pipe(f"{bucket}/{prefix}/part-0.jsonl", body)
    last = b'{"key": "k9", "prompt": "last"}\n'
    fs.pipe(f"{bucket}/in/part-1.jsonl", last)
    fs.pipe(f"{bucket}/dup/part-1.jsonl", last + b'{"key": "k0", "prompt": "dup"}\n')
    job = spec(f"{bucket}/dup/", f"{bucket}/out", input={"id_column": "key"},
               storage={"endpoint_url": s3_endpoint}, resources={"replicas": 1})
    with pytest.raises(SpecError, match=r"input.id_column 'key': id 'k0' appears twice"):
        validate_job(JobSpec.parse(job), check_model=False, identity={})  # ids read through the JSONL reader
    job["input"]["path"] = f"{bucket}/in/"
    run_job(job, backend_factory=STUB, progress=False)
    t = read_results(f"{bucket}/out", endpoint_url=s3_endpoint)
    assert_exactly_once(t, [f"k{i}" for i in range(10)])
    assert set(t.column("status").to_pylist()) == {"ok"}


def test_validate_refuses_columns_of_the_wrong_type(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"conv": [1, 2], "t": [[0.5], [1.0]], "p": ["a", "b"]}), tmp_path / "in.parquet")
    base = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"))
    conv = JobSpec.parse({**base, "input": {"path": str(tmp_path / "in.parquet"), "messages_column": "conv"}})
    with pytest.raises(SpecError, match=r"column 'conv' \(needed by input.messages_column\) is int64, not a "
                                        r"conversation"):
        validate_job(conv, check_model=False, identity={})
    temp = JobSpec.parse({**base, "input": {"path": str(tmp_path / "in.parquet"), "prompt_column": "p",
                                            "generation_columns": {"temperature": "t"}}})
    with pytest.raises(SpecError, match=r"column 't' \(needed by input.generation_columns.temperature\) is "
                                        r"list<element: double>, not a number"):
        validate_job(temp, check_model=False, identity={})
