"""Ray-free parts: spec checks, shard planning, row preparation, storage atomicity, retries, bisection."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_helpers import spec, write_prompts

from pipeline.coordinator import Coordinator
from pipeline.plan import load_or_create_plan
from pipeline.rows import prepare_rows, row_seed
from pipeline.shards import InputFile, Shard, list_inputs, plan_shards, read_shard
from pipeline.spec import InputSpec, JobSpec, SpecError
from pipeline.storage import Storage, is_transient, with_retries


# -- spec ---------------------------------------------------------------------------------------------
def test_spec_rejects_unknown_keys_and_names_them():
    with pytest.raises(SpecError, match=r"resources\.replica: unknown field"):
        JobSpec.parse(spec("in", "out", resources={"replica": 2}))


def test_spec_needs_exactly_one_prompt_source():
    with pytest.raises(SpecError, match="exactly one of prompt_column or template"):
        JobSpec.parse({"input": {"path": "x", "prompt_column": "a", "template": "{b}"},
                       "output": {"path": "o"}})
    with pytest.raises(SpecError, match="exactly one of prompt_column or template"):
        JobSpec.parse({"input": {"path": "x"}, "output": {"path": "o"}})


def test_spec_refuses_credentials_in_storage_options():
    with pytest.raises(SpecError, match=r"storage\.options\.secret is refused \(credentials\)"):
        JobSpec.parse(spec("in", "out", storage={"options": {"secret": "hunter2"}}))
    with pytest.raises(SpecError, match=r"aws_secret_access_key"):
        JobSpec.parse(spec("in", "out",
                           storage={"options": {"client_kwargs": {"aws_secret_access_key": "x"}}}))


def test_spec_structured_output_exactly_one_source():
    with pytest.raises(SpecError, match="exactly one of json_schema"):
        JobSpec.parse(spec("in", "out", structured_output={"regex": "a+", "choice": ["x"]}))
    ok = JobSpec.parse(spec("in", "out", structured_output={"choice": ["yes", "no"]}))
    assert ok.structured_output.choice == ["yes", "no"]
    assert ok.structured_output.steering == "off"
    steer = {"choice": ["y"], "steering": "valid_sampling"}
    steered = JobSpec.parse(spec("in", "out", structured_output=steer))
    assert steered.structured_output.steering == "valid_sampling"
    with pytest.raises(Exception, match="unknown option"):
        JobSpec.parse(spec("in", "out", structured_output={"choice": ["y"], "steering": "fast"}))


def test_spec_model_and_output_take_a_path_string(tmp_path):
    # `model: PATH` and `output: URL` are shorthand for {path: ...}; the long form still works
    p = tmp_path / "job.yaml"
    p.write_text("model: /models/dg\ninput: {path: x, prompt_column: p}\noutput: s3://bucket/run\n")
    short = JobSpec.load(p)
    assert short.model.path == "/models/dg" and short.model.dtype == "float32"
    assert short.output.path == "s3://bucket/run" and short.output.passthrough_columns == []
    long = {"model": {"path": "/models/dg"}, "input": {"path": "x", "prompt_column": "p"},
            "output": {"path": "s3://bucket/run"}}
    assert short == JobSpec.parse(long)
    with pytest.raises(SpecError, match=r"output: .*expected a path \(string\) or a mapping"):
        JobSpec.parse({"input": {"path": "x", "prompt_column": "p"}, "output": 3})


def test_spec_null_section_means_the_default(tmp_path):
    # `model:` with no value (YAML null) or JSON null means what leaving the key out means, for every
    # section with a default; a required section (output) stays required, with a message that says so
    p = tmp_path / "job.yaml"
    p.write_text("model:\ninput: {path: x, prompt_column: p}\noutput: {path: o, passthrough_columns: }\n"
                 "generation:\nresources:\nstorage: {endpoint_url: , options: }\nstructured_output:\n")
    omitted = JobSpec.parse({"input": {"path": "x", "prompt_column": "p"}, "output": {"path": "o"}})
    assert JobSpec.load(p) == omitted
    j = tmp_path / "job.json"
    j.write_text(json.dumps({"model": None, "input": {"path": "x", "prompt_column": "p"},
                             "output": {"path": "o"}, "generation": None,
                             "resources": {"custom_resources": None}, "storage": None,
                             "structured_output": None}))
    assert JobSpec.load(j) == omitted
    assert omitted.model.path is None and omitted.resources.replicas == 1 and omitted.storage.options == {}
    with pytest.raises(SpecError, match=r"output: "):
        JobSpec.parse({"input": {"path": "x", "prompt_column": "p"}, "output": None})


def test_spec_loads_yaml_and_reports_file(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("input: {path: x, prompt_column: p}\noutput: {path: o}\ngeneration: {max_new_tokens: 0}\n")
    with pytest.raises(SpecError, match=r"(?s)job\.yaml.*generation\.max_new_tokens"):
        JobSpec.load(p)


def test_template_columns_and_passthrough_clash():
    assert InputSpec(path="x", template="Q: {title} / {body} {title}").template_columns() == ["title", "body"]
    with pytest.raises(SpecError, match="clash with output columns"):
        JobSpec.parse(spec("in", "out", output={"passthrough_columns": ["status"]}))


# -- shards -------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=6), min_size=1, max_size=4),
       st.integers(1, 40))
def test_plan_shards_covers_every_row_once(files, shard_rows):
    inputs = [InputFile(f"/d/f{i}.parquet", f"f{i}.parquet", tuple(rgs), pa.schema([]))
              for i, rgs in enumerate(files)]
    shards = plan_shards(inputs, shard_rows)
    assert len({s.id for s in shards}) == len(shards)
    assert shards == plan_shards(inputs, shard_rows)  # pure and stable
    for f in inputs:
        mine = [s for s in shards if s.file == f.path]
        assert mine[0].start == 0
        for a, b in zip(mine, mine[1:]):
            assert a.start + a.num_rows == b.start
        assert mine[-1].start + mine[-1].num_rows == f.num_rows
        assert all(0 < s.num_rows <= shard_rows for s in mine)


def test_read_shard_reads_the_right_rows(tmp_path):
    write_prompts(tmp_path / "a.parquet", [f"p{i}" for i in range(23)], row_group_size=5)
    files = list_inputs(str(tmp_path))
    assert files[0].row_groups == (5, 5, 5, 5, 3)
    shards = plan_shards(files, 7)
    reads = [read_shard(s, ["prompt"]) for s in shards]
    assert all(r.unreadable == {} for r in reads)  # a healthy file: nothing to salvage
    got = [r for read in reads for r in read.table.column("prompt").to_pylist()]
    assert got == [f"p{i}" for i in range(23)]
    piece = read_shard(shards[1].sub(shards[1].start + 2, 3), ["n"]).table.column("n").to_pylist()
    assert piece == list(range(shards[1].start + 2, shards[1].start + 5))


def test_corrupt_parquet_is_named(tmp_path):
    write_prompts(tmp_path / "good.parquet", ["a"])
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SpecError, match=r"bad\.parquet: not a readable Parquet file"):
        list_inputs(str(tmp_path))
    with pytest.raises(SpecError, match="no Parquet files found"):
        list_inputs(str(tmp_path / "nothing-*.parquet"))


# -- rows ---------------------------------------------------------------------------------------------
def test_prepare_rows_bad_rows_become_errors():
    t = pa.table({"prompt": [b"ok", None, b"   ", b"\xff\xfe", b"fine"]})
    rows = prepare_rows(t, InputSpec(path="x", prompt_column="prompt"), job_seed=3, file_rel="f.parquet",
                        first_row=10)
    assert [r.prompt for r in rows] == ["ok", None, None, None, "fine"]
    assert "f.parquet row 11" in rows[1].error and "is null" in rows[1].error
    assert "row 12" in rows[2].error and "empty" in rows[2].error
    assert "row 13" in rows[3].error and "UTF-8" in rows[3].error
    assert [r.id for r in rows] == [f"f.parquet#{i}" for i in range(10, 15)]
    assert rows[0].seed == row_seed(3, "f.parquet#10") != row_seed(4, "f.parquet#10")


def test_prepare_rows_template_and_id_column():
    t = pa.table({"title": ["A", "B", None], "body": ["x", "y", "z"], "key": ["k1", None, "k3"]})
    inp = InputSpec(path="x", template="{title}: {body}", id_column="key")
    rows = prepare_rows(t, inp, job_seed=0, file_rel="f", first_row=0)
    assert rows[0].prompt == "A: x" and rows[0].id == "k1"
    assert rows[1].error and "id column 'key' is null" in rows[1].error
    assert rows[2].error and "template column 'title' is null" in rows[2].error


# -- storage ------------------------------------------------------------------------------------------
def _race(storage: Storage, n: int = 8) -> list[bool]:
    wins: list[bool] = []
    barrier = threading.Barrier(n)

    def go(i: int) -> None:
        barrier.wait()
        wins.append(storage.create("_commits/x.json", json.dumps({"writer": i}).encode()))
    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins


def test_create_is_first_writer_wins_locally(tmp_path):
    s = Storage(str(tmp_path / "out"))
    assert sorted(_race(s)) == [False] * 7 + [True]
    assert "writer" in json.loads(s.read_bytes("_commits/x.json"))
    assert s.list("_commits") == ["x.json"]  # no temp files left behind


def test_create_is_first_writer_wins_on_s3(bucket, s3_endpoint):
    s = Storage(f"{bucket}/out", endpoint_url=s3_endpoint)
    assert sorted(_race(s)) == [False] * 7 + [True]


def test_retries_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("An error occurred (SlowDown) when calling PutObject: 503 Please reduce your rate")
        return "ok"
    assert with_retries(flaky, what="x", sleep=lambda s: None) == "ok" and len(calls) == 3
    assert not is_transient(FileNotFoundError("nope"))
    with pytest.raises(PermissionError):
        with_retries(lambda: (_ for _ in ()).throw(PermissionError("403")), what="x", sleep=lambda s: None)


def test_plan_refuses_a_different_job_in_the_same_prefix(tmp_path):
    write_prompts(tmp_path / "in.parquet", ["a", "b", "c"])
    files = list_inputs(str(tmp_path / "in.parquet"))
    out = Storage(str(tmp_path / "out"))
    s1 = JobSpec.parse(spec(str(tmp_path / "in.parquet"), str(tmp_path / "out")))
    plan, created = load_or_create_plan(out, s1, files, {})
    again, created2 = load_or_create_plan(out, s1, files, {})
    assert created and not created2 and again.fingerprint == plan.fingerprint
    s2 = JobSpec.parse(spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), generation={"seed": 7}))
    with pytest.raises(SpecError, match=r"holds a different job.*changed: generation"):
        load_or_create_plan(out, s2, files, {})


# -- coordinator --------------------------------------------------------------------------------------
def test_coordinator_bisects_a_poison_row_down_to_one_error_row():
    shard = Shard("s", "f", "f", 0, 8)
    clock = [0.0]
    c = Coordinator([shard], max_attempts=2, backoff_s=0.0, clock=lambda: clock[0])
    poison, crashes, finished = 5, 0, None
    while not c.done:
        u = c.next()
        assert u is not None
        rows = range(u.piece.start, u.piece.start + u.piece.num_rows)
        if poison in rows:
            crashes += 1
            if c.failed(u) == "give_up":
                finished = c.piece_done(u, pa.table({"r": [f"error{poison}"]}))
        elif u.mode == "commit":
            c.committed(u)
        else:
            finished = c.piece_done(u, pa.table({"r": [str(r) for r in rows]}))
        if finished:
            tables, attempt = finished
            c.committed(u)
    got = [r for t in tables for r in t.column("r").to_pylist()]
    assert got == ["0", "1", "2", "3", "4", "error5", "6", "7"]
    assert crashes == 2 + 1 + 1 + 2  # whole shard twice, the 4-row and 2-row pieces once, the row twice
    assert attempt > 1


def test_cli_validate_names_the_missing_column(tmp_path, capsys):
    import argparse

    from jobs import cmd_validate

    write_prompts(tmp_path / "in.parquet", ["a", "b", "c"])
    good = tmp_path / "good.yaml"
    good.write_text(f"input: {{path: {tmp_path}/in.parquet, prompt_column: prompt}}\n"
                    f"output: {{path: {tmp_path}/out}}\nresources: {{shard_rows: 2}}\n")
    assert cmd_validate.run(argparse.Namespace(spec=str(good))) == 0
    assert "3 rows, 2 shards" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("prompt_column: prompt", "prompt_column: body"))
    assert cmd_validate.run(argparse.Namespace(spec=str(bad))) == 2
    assert "missing column 'body'" in capsys.readouterr().err
