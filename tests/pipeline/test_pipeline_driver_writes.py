"""What the driver reads and writes itself, through pipeline/sink.py (no Ray): a bisected shard committed from
its pieces, the error rows of a row given up on, the marker check for a lost replica's queued commits; and
what a job reads and writes, known from its spec alone (pipeline/generator.py `job_columns`,
`output_schema`)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import STUB, spec

from pipeline.generator import RowGenerator, error_rows, job_columns, output_schema
from pipeline.outputs import RowResult, build_table
from pipeline.rows import prepare_rows, row_seed
from pipeline.shards import Shard
from pipeline.sink import commit_name, commit_pieces, data_name, given_up_rows, markers_exist
from pipeline.spec import JobSpec
from pipeline.storage import Storage


def _rows(ids: list[str], status: str, tokens: int) -> pa.Table:
    job = JobSpec.parse(spec("in", "out"))
    t = pa.table({"prompt": [f"p-{i}" for i in ids]})
    prepared = prepare_rows(t, job.input, job_seed=0, file_rel="f", first_row=0)
    results = [RowResult(status=status, text="x", num_tokens=tokens, denoising_steps=2) for _ in ids]
    return build_table(prepared, results, t.select([]), attempt=3, structured=False,
                       ids=pa.array(ids, pa.string()))


def test_commit_pieces_joins_in_order_and_first_writer_wins(tmp_path):
    storage = Storage(str(tmp_path / "out"))
    shard = Shard("00000-000000004", "file:///in.parquet", "in.parquet", 4, 3)
    pieces = [_rows(["a"], "ok", 5), _rows(["b", "c"], "error", 0)]
    assert commit_pieces(storage, shard, 7, pieces, "run-1")
    marker = json.loads(storage.read_bytes(commit_name(shard.id)))
    assert {k: marker[k] for k in ("shard_id", "file", "attempt", "rows", "rows_by_status", "tokens",
                                   "denoising_steps", "model_s", "replica_id", "duration_s", "bisected",
                                   "input", "run_id")} == {
        "shard_id": shard.id, "file": data_name(shard.id, 7), "attempt": 7, "rows": 3,
        "rows_by_status": {"ok": 1, "invalid": 0, "error": 2}, "tokens": 5, "denoising_steps": 6,
        "model_s": 0.0, "replica_id": "driver", "duration_s": 0.0, "bisected": True,
        "input": {"file": "file:///in.parquet", "start": 4, "num_rows": 3}, "run_id": "run-1"}
    written = pq.read_table(str(tmp_path / "out" / data_name(shard.id, 7)))
    assert written.column("id").to_pylist() == ["a", "b", "c"]
    # a later attempt of a committed shard loses: its file is removed, the marker is untouched
    assert not commit_pieces(storage, shard, 8, pieces, "run-2")
    assert not storage.exists(data_name(shard.id, 8))
    assert json.loads(storage.read_bytes(commit_name(shard.id)))["run_id"] == "run-1"


def test_given_up_rows_read_the_piece_again_for_ids_and_passthrough(tmp_path):
    pq.write_table(pa.table({"prompt": [f"p{i}" for i in range(6)], "key": pa.array(range(100, 106)),
                             "n": list(range(6))}), tmp_path / "in.parquet", row_group_size=2)
    job = JobSpec.parse(spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
                             input={"id_column": "key"}, output={"passthrough_columns": ["n"]}))
    piece = Shard("00000-000000000", str(tmp_path / "in.parquet"), "in.parquet", 0, 6).sub(3, 2)
    out = given_up_rows(job, piece, 9, "generation failed 2 times; last: died")
    assert out.schema.field("id").type == pa.int64() and out.column("id").to_pylist() == [103, 104]
    assert out.column("n").to_pylist() == [3, 4] and out.column("attempt").to_pylist() == [9, 9]
    assert out.column("status").to_pylist() == ["error", "error"]
    assert out.column("error").to_pylist() == [f"row {k}: generation failed 2 times; last: died"
                                               for k in (103, 104)]
    assert out.column("seed").to_pylist() == [row_seed(0, "103"), row_seed(0, "104")]


def test_markers_exist_counts_an_unanswerable_check_as_absent(tmp_path):
    storage = Storage(str(tmp_path / "out"))
    storage.create(commit_name("a"), b"{}")
    assert markers_exist(storage, ["a", "b"]) == {"a"}

    class Flaky(Storage):
        def exists(self, rel: str) -> bool:
            if rel == commit_name("a"):
                raise OSError("503 SlowDown")
            return super().exists(rel)
    flaky = Flaky(str(tmp_path / "out"))
    flaky.create(commit_name("c"), b"{}")
    assert markers_exist(flaky, ["a", "c"]) == {"c"}  # "a" is re-leased; first writer wins


@pytest.mark.parametrize(("over", "columns"), [
    ({}, ["prompt"]),
    ({"input": {"template": "{title}: {body} ({title})", "prompt_column": None, "id_column": "key"},
      "output": {"passthrough_columns": ["n", "key"]}}, ["title", "body", "key", "n"]),
    ({"input": {"id_column": "key"}, "output": {"passthrough_columns": ["n"]},
      "structured_output": {"schema_column": "schema"}}, ["prompt", "key", "n", "schema"]),
])
def test_job_columns_and_output_schema_come_from_the_spec(over, columns):
    job = JobSpec.parse(spec("in", "out", **over))
    assert job_columns(job) == columns  # prompt first, each column once
    assert RowGenerator(job, STUB(job)).input_columns() == columns
    table = pa.table({"prompt": ["hello", None], "title": ["t", "u"], "body": ["b", "c"],
                      "key": pa.array([7, 8], pa.int32()), "n": pa.array([1.5, 2.5]),
                      "schema": ['{"type": "string"}', "{}"]})
    got, _ = RowGenerator(job, STUB(job)).process(table.select(job_columns(job)), file_rel="in.parquet",
                                                  first_row=0, attempt=1)
    # the schema the manifest records is the one generated tables have, and the one error rows have
    assert output_schema(job, table.schema, "in.parquet") == got.schema
    errors = error_rows(job, table.select(job_columns(job)), file_rel="in.parquet", first_row=0, attempt=1,
                        message="x")
    assert errors.schema == got.schema
