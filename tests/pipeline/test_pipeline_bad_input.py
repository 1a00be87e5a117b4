"""Corrupt row groups never crash a job (the rows become error rows), and ids keep their input type.

`write_damaged` writes a Parquet file uncompressed and plain-encoded, so a value's bytes and a page's header
can be found and damaged in place while the footer stays intact (`list_inputs` and `validate` pass):
- "bad_value": a BYTE_ARRAY value's length prefix becomes huge (Arrow: "Invalid or truncated PLAIN-encoded
  BYTE_ARRAY data"); the rows of that column chunk before it still decode;
- "truncated_page": the page header claims one byte more than the page has (Arrow: "Page was smaller than
  expected"), a truncated data page in the middle of the file; none of that chunk decodes.
"""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import STUB, assert_exactly_once, spec

from pipeline import read_results
from pipeline.executor import run_job
from pipeline.generator import RowGenerator
from pipeline.ray_data import DiffusionGenerator
from pipeline.rows import output_ids, prepare_rows, row_seed
from pipeline.shards import is_decode_error, list_inputs, plan_shards, read_shard
from pipeline.sink import commit_name
from pipeline.spec import InputSpec, JobSpec, SpecError
from pipeline.storage import Storage
from pipeline.validate import check_unique_ids

COLUMNS = ["key", "sid", "prompt", "n"]


# -- damaged files ------------------------------------------------------------------------------------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def write_damaged(path: Path, table: pa.Table, *, row_group_size: int,
                  damage: list[tuple[str, str, int]]) -> None:
    """Write `table`, then apply `damage`: (kind, column, row) as in the module docstring.

    Without dictionaries, compression or statistics, a column chunk is one data page holding the plain
    values, so every offset found here is deterministic.
    """
    pq.write_table(table, str(path), row_group_size=row_group_size, compression="none", use_dictionary=False,
                   write_statistics=False)
    buf = bytearray(path.read_bytes())
    md = pq.ParquetFile(str(path)).metadata
    names = table.column_names
    for kind, column, row in damage:
        chunk = md.row_group(row // row_group_size).column(names.index(column))
        start, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
        if kind == "bad_value":
            value = table.column(column)[row].as_py().encode()
            at = buf.find(value, start, end)
            assert at > 0 and buf.find(value, at + 1, end) == -1, f"value of row {row} not unique in its page"
            assert struct.unpack("<i", buf[at - 4:at])[0] == len(value)
            buf[at - 4:at] = struct.pack("<i", 0x7FFFFF00)
        elif kind == "truncated_page":
            # PageHeader, Thrift compact: 1: type, 2: uncompressed_page_size, 3: compressed_page_size (i32s)
            assert buf[start] == 0x15
            _, i = _varint(buf, start + 1)
            for _field in (2, 3):
                assert buf[i] == 0x15
                raw, j = _varint(buf, i + 1)
                new = _encode_varint(((raw >> 1) + 1) << 1)  # zigzag: one byte more than the page holds
                assert len(new) == j - i - 1
                buf[i + 1:j] = new
                i = j
        else:
            raise ValueError(kind)
    path.write_bytes(bytes(buf))


def _table(n: int, *, raise_row: int | None = None) -> pa.Table:
    prompts = [f"prompt {i:04d}" for i in range(n)]
    if raise_row is not None:
        prompts[raise_row] = f"fail here __RAISE__ {raise_row:04d}"
    return pa.table({"key": pa.array(range(100, 100 + n), pa.int64()), "sid": [f"s{i:04d}" for i in range(n)],
                     "prompt": prompts, "n": pa.array(range(n), pa.int32())})


# rows 0-3 (group 0): the pages of both id columns truncated; rows 4-7: prompt of row 6 undecodable; rows
# 8-11: prompt's page truncated. A job reads only the columns it needs, so the id columns' damage hurts only
# the jobs that use them as id_column.
ID_DAMAGE = [("truncated_page", "key", 0), ("truncated_page", "sid", 0)]
PROMPT_DAMAGE = [("bad_value", "prompt", 6), ("truncated_page", "prompt", 8)]


def _bad_file(tmp_path: Path, *, damage: list | None = None, **kw) -> Path:
    path = tmp_path / "in" / "bad.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_damaged(path, _table(12, **kw), row_group_size=4,
                  damage=ID_DAMAGE + PROMPT_DAMAGE if damage is None else damage)
    return path


# -- read_shard salvage -------------------------------------------------------------------------------
def test_damaged_file_passes_listing_but_its_row_groups_do_not_decode(tmp_path):
    path = _bad_file(tmp_path)
    assert list_inputs(str(path))[0].row_groups == (4, 4, 4)  # footer intact: validate cannot see it
    pf = pq.ParquetFile(str(path))
    with pytest.raises(pa.ArrowInvalid, match="BYTE_ARRAY"):
        pf.read_row_group(1, columns=["prompt"])
    with pytest.raises(OSError, match="Page was smaller"):
        pf.read_row_group(2, columns=["prompt"])
    with pytest.raises(OSError, match="Page was smaller"):
        pf.read_row_group(0, columns=["sid"])


def test_read_shard_salvages_what_decodes(tmp_path):
    path = _bad_file(tmp_path)
    healthy = pq.read_table(str(path), columns=["n"]).to_pylist()
    shards = plan_shards(list_inputs(str(path)), 4)
    reads = [read_shard(s, COLUMNS) for s in shards]
    want_schema = pq.ParquetFile(str(path)).schema_arrow
    for r in reads:
        assert r.table.num_rows == 4 and r.table.schema == pa.schema([want_schema.field(c) for c in COLUMNS])
    got = pa.concat_tables([r.table for r in reads])
    assert got.select(["n"]).to_pylist() == healthy  # undamaged columns read whole
    assert got.column("key").to_pylist() == [None] * 4 + list(range(104, 112))
    assert got.column("prompt").to_pylist() == [f"prompt {i:04d}" for i in range(6)] + [None] * 6
    assert got.column("sid").to_pylist() == [None] * 4 + [f"s{i:04d}" for i in range(4, 12)]

    assert sorted(reads[0].unreadable) == [0, 1, 2, 3]
    both = reads[0].unreadable[0].split("; ")  # two unreadable cells in the row: both named
    assert [w.split(" row group 0 ")[1].split(":")[0] for w in both] == ["column 'key'", "column 'sid'"]
    assert all("OSError" in w for w in both)
    assert sorted(reads[1].unreadable) == [2, 3]  # rows 4 and 5 came before the damaged value
    why = reads[1].unreadable[2]
    assert why.startswith(f"{path} row group 1 column 'prompt': ArrowInvalid: ") and "BYTE_ARRAY" in why
    assert sorted(reads[2].unreadable) == [0, 1, 2, 3]
    assert "row group 2 column 'prompt'" in reads[2].unreadable[3]

    # Only the columns asked for matter; a piece counts offsets from its own first row.
    piece = read_shard(shards[0].sub(0, 4), ["prompt"])
    assert piece.unreadable == {}  # no id column asked for: group 0 reads whole
    span = read_shard(shards[1].sub(5, 3), ["key", "prompt"])
    assert span.table.column("key").to_pylist() == [105, 106, 107]
    assert span.table.column("prompt").to_pylist() == ["prompt 0005", None, None]
    assert sorted(span.unreadable) == [1, 2]


def test_salvage_in_a_large_row_group_keeps_every_row_before_the_damage(tmp_path):
    path = tmp_path / "big.parquet"
    write_damaged(path, _table(3000), row_group_size=3000, damage=[("bad_value", "prompt", 2500)])
    got = read_shard(plan_shards(list_inputs(str(path)), 3000)[0], ["prompt", "key"])
    assert got.table.column("prompt").to_pylist() == [f"prompt {i:04d}" for i in range(2500)] + [None] * 500
    assert sorted(got.unreadable) == list(range(2500, 3000))
    assert got.table.column("key").to_pylist() == list(range(100, 3100))


def test_a_footer_that_stopped_decoding_makes_every_row_unreadable(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(_table(6), str(path), row_group_size=3)
    shard = plan_shards(list_inputs(str(path)), 3)[1]
    path.write_bytes(path.read_bytes()[:-4] + b"XXXX")  # the input changed after planning: no magic
    got = read_shard(shard, ["prompt", "key"])
    assert got.table.num_rows == 3 and got.table.column("prompt").null_count == 3
    assert sorted(got.unreadable) == [0, 1, 2] and f"{path}: footer: " in got.unreadable[0]


def test_storage_errors_still_raise_and_decode_errors_are_told_apart(tmp_path):
    path = _bad_file(tmp_path)
    shard = plan_shards(list_inputs(str(path)), 4)[1]
    path.unlink()
    with pytest.raises(FileNotFoundError):
        read_shard(shard, COLUMNS)
    assert is_decode_error(pa.ArrowInvalid("Invalid or truncated PLAIN-encoded BYTE_ARRAY data"))
    assert is_decode_error(OSError("Unexpected end of stream: Page was smaller (62) than expected (63)"))
    assert not is_decode_error(OSError(errno.EIO, "disk read error"))
    assert not is_decode_error(OSError("An error occurred (SlowDown): 503 Please reduce your rate"))
    assert not is_decode_error(PermissionError("403"))
    wrapped = OSError("read failed")
    wrapped.__cause__ = ConnectionResetError()
    assert not is_decode_error(wrapped)


def test_check_unique_ids_skips_unreadable_ids(tmp_path):
    path = _bad_file(tmp_path)
    files = list_inputs(str(path))
    check_unique_ids(JobSpec.parse(spec(str(path), "out", input={"id_column": "sid"})), files)
    write_damaged(tmp_path / "in" / "dup.parquet", _table(12), row_group_size=4,
                  damage=[("truncated_page", "sid", 0)])
    with pytest.raises(SpecError, match=r"id 's0004' appears twice"):  # readable ids are still checked
        check_unique_ids(JobSpec.parse(spec(str(tmp_path / "in"), "out", input={"id_column": "sid"})),
                         list_inputs(str(tmp_path / "in")))


# -- rows and ids -------------------------------------------------------------------------------------
def test_prepare_rows_makes_unreadable_rows_error_rows():
    t = pa.table({"prompt": ["a", None, None, "d"], "key": ["k0", "k1", None, "k3"]})
    why = {1: "x.parquet row group 0 column 'prompt': ArrowInvalid: bad", 2: "both columns"}
    rows = prepare_rows(t, InputSpec(path="x", prompt_column="prompt", id_column="key"), job_seed=5,
                        file_rel="f.parquet", first_row=20, unreadable=why)
    assert [r.error is None for r in rows] == [True, False, False, True]
    assert rows[1].error == f"f.parquet row 21: unreadable input: {why[1]}"
    assert rows[2].error == "f.parquet row 22: unreadable input: both columns"
    assert [r.id for r in rows] == ["k0", "k1", "f.parquet#22", "k3"]  # read ids kept, else derived
    assert rows[1].seed == row_seed(5, "k1") and rows[1].prompt is None


def test_output_ids_keep_the_id_column_type():
    def ids(values, type_, *, id_column="key"):
        t = pa.table({"prompt": ["p"] * len(values), "key": pa.array(values, type_)})
        inp = InputSpec(path="x", prompt_column="prompt", id_column=id_column)
        return output_ids(t, inp, prepare_rows(t, inp, job_seed=0, file_rel="f", first_row=3))

    got = ids([7, None, 2**40], pa.int64())
    assert got.type == pa.int64() and got.to_pylist() == [7, None, 2**40]
    assert ids([7, None], pa.int16()).type == pa.int16()
    got = ids(["a", None], pa.string())
    assert got.type == pa.string() and got.to_pylist() == ["a", "f#4"]
    assert ids(["a", None], pa.large_string()).to_pylist() == ["a", "f#4"]
    got = ids([b"\xff\x01", None], pa.binary())
    assert got.type == pa.binary() and got.to_pylist() == [b"\xff\x01", b"f#4"]
    assert ids(["a", "b"], pa.dictionary(pa.int8(), pa.string())).to_pylist() == ["a", "b"]
    derived = ids([1, 2], pa.int64(), id_column=None)
    assert derived.type == pa.string() and derived.to_pylist() == ["f#3", "f#4"]


def test_a_null_int_id_is_an_error_row_with_a_null_id():
    job = JobSpec.parse(spec("in", "out", input={"id_column": "key"}, output={"passthrough_columns": ["n"]}))
    t = pa.table({"prompt": ["a", "b", "c"], "key": pa.array([100, None, 102], pa.int64()), "n": [0, 1, 2]})
    out, stats = RowGenerator(job, STUB(job)).process(t, file_rel="f.parquet", first_row=10, attempt=1)
    assert out.schema.field("id").type == pa.int64()
    assert out.column("id").to_pylist() == [100, None, 102]
    assert out.column("status").to_pylist() == ["ok", "error", "ok"]
    assert out.column("error")[1].as_py() == "f.parquet row 11: id column 'key' is null"
    assert out.column("seed").to_pylist()[::2] == [row_seed(0, "100"), row_seed(0, "102")]  # seeds as before
    assert stats.by_status["error"] == 1


def test_ray_data_adapter_keeps_int_ids():
    gen = DiffusionGenerator({"input": {"prompt_column": "prompt", "id_column": "key"}}, backend_factory=STUB)
    out = gen(pa.table({"prompt": ["a", "b"], "key": pa.array([5, 9], pa.int64())}))
    assert out.schema.field("id").type == pa.int64() and out.column("id").to_pylist() == [5, 9]
    assert out.column("status").to_pylist() == ["ok", "ok"]
    assert out.column("seed").to_pylist() == [row_seed(0, "5"), row_seed(0, "9")]


# -- end to end ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("id_column", ["key", None, "sid"])
def test_job_with_corrupt_row_groups_finishes(tmp_path, ray_local, id_column):
    path = _bad_file(tmp_path)
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in"), str(out), input={"id_column": id_column},
               output={"passthrough_columns": ["n"]}, resources={"replicas": 1})
    m = run_job(job, backend_factory=STUB, progress=False)
    t = read_results(str(out))
    derived = [f"bad.parquet#{i}" for i in range(12)]
    # Unreadable ids: null in an int column (the message has the position), derived in a string column.
    want = {"key": [None] * 4 + list(range(104, 112)), None: derived,
            "sid": derived[:4] + [f"s{i:04d}" for i in range(4, 12)]}[id_column]
    assert t.num_rows == 12 and t.column("id").to_pylist() == want
    assert t.schema.field("id").type == (pa.int64() if id_column == "key" else pa.string())
    assert t.column("n").to_pylist() == list(range(12))  # passthrough read even where the prompt was not
    bad = {6, 7, 8, 9, 10, 11} | ({0, 1, 2, 3} if id_column else set())
    for i, row in enumerate(t.to_pylist()):
        if i in bad:
            assert row["status"] == "error", row
            prefix = f"bad.parquet row {i}: unreadable input: {path} row group {i // 4}"
            assert row["error"].startswith(prefix), row
        else:
            assert row["status"] == "ok" and row["error"] is None, row
    seeds = t.column("seed").to_pylist()
    # int ids seed from their text as before; a row without an id from its position
    assert seeds == [row_seed(0, derived[i] if v is None else str(v)) for i, v in enumerate(want)]
    assert m["rows_by_status"] == {"ok": 12 - len(bad), "invalid": 0, "error": len(bad)}

    # A rerun finishes too, also when it has to redo the damaged shards.
    run_job(job, backend_factory=STUB, progress=False)
    storage = Storage(str(out))
    for shard_id in ("00000-000000004", "00000-000000008"):
        storage.delete(commit_name(shard_id))
    storage.delete("_SUCCESS")
    run_job(job, backend_factory=STUB, progress=False)
    again = read_results(str(out))
    assert_exactly_once(again.filter(pc.is_valid(again.column("id"))), [v for v in want if v is not None])
    assert again.column("id").to_pylist() == want
    assert again.column("status").to_pylist() == t.column("status").to_pylist()


def test_driver_gives_up_on_a_row_in_a_corrupt_row_group(tmp_path, ray_local):
    """Row 4 raises in the backend: its shard (rows 4-7, row 6 undecodable) is bisected down to row 4,
    which the driver reads again (through the salvage) to write its error row."""
    _bad_file(tmp_path, raise_row=4, damage=PROMPT_DAMAGE)
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in"), str(out), input={"id_column": "key"},
               output={"passthrough_columns": ["n"]})
    m = run_job(job, backend_factory=STUB, progress=False)
    t = read_results(str(out))
    assert t.schema.field("id").type == pa.int64() and t.column("id").to_pylist() == list(range(100, 112))
    rows = t.to_pylist()
    assert rows[4]["status"] == "error"
    assert rows[4]["error"].startswith("row 104: generation failed 2 times")
    assert "stub backend asked to fail" in rows[4]["error"]
    assert [r["status"] for r in rows[:6]] == ["ok"] * 4 + ["error", "ok"]
    assert all("unreadable input" in r["error"] for r in rows[6:])
    assert m["retries"] >= 4 and m["rows_by_status"]["error"] == 7


def test_planning_retries_a_transient_footer_read(tmp_path, monkeypatch):
    # Found by the chaos soak: one throttled footer read at planning time failed the whole job.
    import fsspec

    import pipeline.storage as storage_mod
    from pipeline.shards import read_metadata

    pq.write_table(pa.table({"prompt": ["a", "b"]}), tmp_path / "in.parquet")
    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    fs = fsspec.filesystem("file")
    real_open, calls = fs.open, []

    def flaky_open(path, mode="rb", **kw):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EBUSY, "Please reduce your request rate.")
        return real_open(path, mode, **kw)
    monkeypatch.setattr(fs, "open", flaky_open)
    assert read_metadata(fs, str(tmp_path / "in.parquet"), "s3://b/in.parquet").num_rows == 2
    assert len(calls) == 2
