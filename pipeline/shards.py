"""Input shards: list the input files, cut them into row ranges (a pure function), read one range.

Inputs are Parquet, JSON Lines, CSV or OpenAI batch files (`input.format`; unset, a file's extension says:
.parquet/.pq, .jsonl/.ndjson, .csv, and a directory must hold one kind). A shard is (file, first row, row
count) with a stable id `<file index>-<first row>`; files are sorted, so the same inputs always give the
same shards. Cuts follow row groups where they can (reading a shard then touches only its own row groups)
and split a row group only when it is larger than `shard_rows`. A JSONL or CSV file is indexed once at
listing (pipeline/text_inputs.py): its "row groups" are runs of GROUP_ROWS rows with a seek point each,
and its columns' types are fixed for the whole file, which every shard of it carries, so a shard reads
the same table shape as a Parquet one. A JSONL/CSV file without rows is left out beside files with rows
(an empty JSONL part has no columns to check). Storage is touched here only to list and read inputs; the
output side is pipeline.sink's.

Reading never fails on undecodable bytes (a corrupt page in a file whose footer is fine): the healthy
path is one `read_row_groups` call; when that raises a decode error, the row groups are read one by one,
a bad one column by column, and a bad column chunk batch by batch, so the rows before the damage survive.
What cannot be decoded is null, and the row's reason is kept (`ShardRead.unreadable`): those rows become
error rows (pipeline.rows), the rest of the file is generated. Storage errors still retry or raise.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, replace

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.openai_batch import OPTIONAL as OPENAI_OPTIONAL
from pipeline.spec import SpecError
from pipeline.storage import filesystem, is_transient, with_retries
from pipeline.text_inputs import read_rows, scan

# File name endings of each format, for a format chosen by extension and for listing a directory.
EXTENSIONS = {"parquet": (".parquet", ".pq"), "jsonl": (".jsonl", ".ndjson"), "csv": (".csv",),
              "openai-batch": (".jsonl", ".ndjson")}


@dataclass(frozen=True)
class InputFile:
    path: str  # full URL, as given to the reader
    rel: str  # path relative to the input root: the part of row ids derived from the file
    row_groups: tuple[int, ...]  # rows per row group
    schema: pa.Schema  # the file's Arrow schema, from the footer read at listing (never read twice)
    format: str = "parquet"
    seeks: tuple[tuple[int, int], ...] = ()  # JSONL/CSV: (byte offset, line) of each row group's first row

    @property
    def num_rows(self) -> int:
        return sum(self.row_groups)


@dataclass(frozen=True)
class Shard:
    id: str
    file: str  # full URL
    file_rel: str
    start: int  # first row within the file
    num_rows: int
    format: str = "parquet"
    columns: str = ""  # JSONL/CSV: the file's columns and types, JSON [[name, type], ...] (text_inputs.py)
    seek: tuple[int, int, int] = (0, 0, 0)  # JSONL/CSV: (row, byte offset, line) of a row at or before start

    def __post_init__(self) -> None:
        object.__setattr__(self, "seek", tuple(self.seek))  # a list when read back from _plan.json

    def sub(self, start: int, num_rows: int) -> Shard:
        """A piece of this shard (rows [start, start+num_rows) of the file), used when bisecting."""
        assert self.start <= start and start + num_rows <= self.start + self.num_rows
        return replace(self, start=start, num_rows=num_rows)

    def to_json(self) -> dict:
        d = asdict(self)
        if self.format == "parquet":  # a Parquet shard's record stays what it always was
            for k in ("format", "columns", "seek"):
                d.pop(k)
        return d


def file_format(path: str, fmt: str | None) -> str | None:
    """The format of the file at `path`: `fmt` when given, else the one its name's ending says (or None)."""
    if fmt is not None:
        return fmt
    return next((k for k, ends in EXTENSIONS.items() if path.lower().endswith(ends)), None)


def list_inputs(url: str, endpoint_url: str | None = None, options: dict | None = None,
                fmt: str | None = None) -> list[InputFile]:
    """All input files under `url` (a file, a directory or a glob) with their row groups and schema.

    `fmt`: input.format (None: by extension; a directory must then hold one kind). Fails naming the URL
    when nothing matches or the format is unclear, and naming the file when one is not readable.
    """
    fs, path = filesystem(url, endpoint_url, options)
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    try:
        if any(c in path for c in "*?["):
            found = sorted(fs.glob(path))
            base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        elif with_retries(lambda: fs.isdir(path), what=url):
            ends = EXTENSIONS[fmt] if fmt else tuple(e for es in EXTENSIONS.values() for e in es)
            found = sorted(p for p in fs.find(path) if p.lower().endswith(ends))
            base = path.rstrip("/")
        elif with_retries(lambda: fs.exists(path), what=url):
            found, base = [path], path.rsplit("/", 1)[0]
        else:
            found, base = [], path
    except Exception as exc:  # noqa: BLE001 - re-raised naming the URL
        raise SpecError(f"input.path {url}: cannot list: {type(exc).__name__}: {exc}") from exc
    if not found:
        kind = {None: "Parquet", "parquet": "Parquet", "csv": "CSV"}.get(fmt, "JSONL")
        raise SpecError(f"input.path {url}: no {kind} files found"
                        + (" (nor .jsonl, .ndjson or .csv ones)" if fmt is None else ""))
    formats = {p: file_format(p, fmt) for p in found}
    unknown = [p for p, f in formats.items() if f is None]
    if unknown:
        raise SpecError(f"input file {protocol + unknown[0]}: cannot tell its format from its name; set "
                        "input.format (parquet, jsonl, csv or openai-batch)")
    kinds = sorted(set(formats.values()))
    if len(kinds) > 1:
        raise SpecError(f"input.path {url}: holds files of several formats ({', '.join(kinds)}); set "
                        "input.format or point input.path at one kind")
    files = []
    for p in found:
        full = protocol + p if protocol else p
        rel = p[len(base):].lstrip("/") if p.startswith(base) else p.rsplit("/", 1)[-1]
        if formats[p] != "parquet":
            files.append(index_text_file(fs, p, full, rel, formats[p]))
            continue
        md = read_metadata(fs, p, full)
        files.append(InputFile(full, rel, tuple(md.row_group(i).num_rows for i in range(md.num_row_groups)),
                               md.schema.to_arrow_schema()))
    if any(f.num_rows for f in files):  # an empty JSONL file has no columns to check: it adds nothing
        files = [f for f in files if f.num_rows or f.format == "parquet"]
    return files


def index_text_file(fs: fsspec.AbstractFileSystem, path: str, url: str, rel: str, fmt: str) -> InputFile:
    """A JSONL/CSV/openai-batch file read once through (text_inputs.scan). Transient storage errors are
    retried; anything else fails the job up front naming the file."""
    def read():
        with fs.open(path, "rb") as f:
            try:
                return scan(f, fmt, OPENAI_OPTIONAL if fmt == "openai-batch" else ())
            except ValueError as exc:  # the contents (a CSV header), not storage: returned, not retried
                return exc
    try:
        idx = with_retries(read, what=url)
    except Exception as exc:  # noqa: BLE001 - an unreadable input fails the job up front
        raise SpecError(f"input file {url}: cannot be read: {type(exc).__name__}: {exc}") from exc
    if isinstance(idx, ValueError):
        raise SpecError(f"input file {url}: not a readable {fmt} file: {idx}")
    return InputFile(url, rel, idx.row_groups, idx.schema, fmt, idx.seeks)


def read_metadata(fs: fsspec.AbstractFileSystem, path: str, url: str) -> pq.FileMetaData:
    """The file's Parquet footer. Transient storage errors are retried (with_retries); anything else,
    or a transient error past the retries, fails the job up front naming the file."""
    def read() -> pq.FileMetaData:
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).metadata
    try:
        return with_retries(read, what=url)
    except Exception as exc:  # noqa: BLE001 - corrupt or unreachable input fails the job up front
        what = "cannot be read" if is_transient(exc) else "not a readable Parquet file"
        raise SpecError(f"input file {url}: {what}: {type(exc).__name__}: {exc}") from exc


def plan_shards(files: list[InputFile], shard_rows: int) -> list[Shard]:
    """Cut files into shards of about `shard_rows` rows, on row-group boundaries where possible. Pure."""
    if shard_rows < 1:
        raise ValueError("shard_rows must be >= 1")
    shards: list[Shard] = []
    for fi, f in enumerate(files):
        first_rows = [0]  # each row group's first row
        for rg in f.row_groups:
            first_rows.append(first_rows[-1] + rg)
        columns = "" if f.format == "parquet" else json.dumps([[x.name, str(x.type)] for x in f.schema])

        def shard(start: int, n: int, fi=fi, f=f, first_rows=first_rows, columns=columns) -> Shard:
            if f.format == "parquet":
                return Shard(f"{fi:05d}-{start:09d}", f.path, f.rel, start, n)
            g = bisect.bisect_right(first_rows, start) - 1  # the group holding `start`: read from its seek
            return Shard(f"{fi:05d}-{start:09d}", f.path, f.rel, start, n, f.format, columns,
                         (first_rows[g], *f.seeks[g]))

        start, acc = 0, 0
        for rg in f.row_groups:
            if acc and acc + rg > shard_rows:  # close the open shard before this group overflows it
                shards.append(shard(start, acc))
                start, acc = start + acc, 0
            acc += rg
            while acc >= shard_rows:  # a big row group (or an exact fill) is cut by row ranges
                shards.append(shard(start, shard_rows))
                start, acc = start + shard_rows, acc - shard_rows
        if acc:
            shards.append(shard(start, acc))
    return shards


@dataclass(frozen=True)
class ShardRead:
    """Rows read from a file: one table row per input row, undecodable cells null, and why per row."""

    table: pa.Table
    unreadable: dict[int, str]  # row offset within `table` -> what could not be read (file, group, column)


def read_shard(shard: Shard, columns: list[str], endpoint_url: str | None = None,
               options: dict | None = None) -> ShardRead:
    """Rows [start, start+num_rows) of the shard's file, reading only the row groups that hold them.

    Undecodable data does not raise (see the module docstring); transient storage errors are retried and
    other storage errors raised, naming the file. A JSONL/CSV shard is read from its seek point.
    """
    fs, path = filesystem(shard.file, endpoint_url, options)
    if shard.format != "parquet":
        def read_text() -> ShardRead:
            with fs.open(path, "rb") as fh:
                got = read_rows(fh, shard.format, shard.file, tuple(map(tuple, json.loads(shard.columns))),
                                shard.seek, shard.start, shard.num_rows, columns)
            return ShardRead(got.table, got.unreadable)
        return with_retries(read_text, what=shard.file)

    def read() -> ShardRead:
        with fs.open(path, "rb") as fh:
            try:
                pf = pq.ParquetFile(fh)
            except Exception as exc:  # noqa: BLE001 - a footer that stopped decoding after planning
                if not is_decode_error(exc):
                    raise
                why = f"{shard.file}: footer: {type(exc).__name__}: {exc}"
                return ShardRead(pa.table({c: pa.nulls(shard.num_rows) for c in columns}),
                                 dict.fromkeys(range(shard.num_rows), why))
            md = pf.metadata
            offsets = [0]
            for i in range(md.num_row_groups):
                offsets.append(offsets[-1] + md.row_group(i).num_rows)
            end = shard.start + shard.num_rows
            first = bisect.bisect_right(offsets, shard.start) - 1
            last = bisect.bisect_left(offsets, end)
            got = read_row_groups(pf, list(range(first, last)), columns, what=shard.file)
            skip = shard.start - offsets[first]
            return ShardRead(got.table.slice(skip, shard.num_rows),
                             {r - skip: why for r, why in got.unreadable.items()
                              if skip <= r < skip + shard.num_rows})
    got = with_retries(read, what=shard.file)
    if got.table.num_rows != shard.num_rows:
        raise OSError(f"{shard.file}: expected {shard.num_rows} rows at {shard.start}, read "
                      f"{got.table.num_rows}; did the input change after planning?")
    return got


def read_file(f: InputFile, columns: list[str], endpoint_url: str | None = None, options: dict | None = None
              ) -> ShardRead:
    """`columns` of every row of one input file (what `dgbatch validate` reads to check ids)."""
    return read_shard(plan_shards([f], max(1, f.num_rows))[0], columns, endpoint_url, options) if f.num_rows \
        else ShardRead(f.schema.empty_table().select(columns), {})


def is_decode_error(exc: BaseException) -> bool:
    """Whether a Parquet read failed on the file's bytes (corrupt page, bad encoding), not on storage.

    Arrow raises decode failures as its own exceptions (ArrowInvalid, ...) or as a bare OSError with no
    errno ("Page was smaller than expected", "ZSTD decompression failed"). Errors of the file object
    itself (s3fs, local I/O) reach us as the original exception, with an errno or a cause.
    """
    if is_transient(exc):
        return False
    if isinstance(exc, pa.ArrowException):
        return True
    return type(exc) is OSError and exc.errno is None and exc.__cause__ is None


_BATCH_ROWS = 1024  # first salvage pass over a bad column chunk: cheap, finds the batch holding the damage
_MAX_BATCHES = 8192  # second pass, which pins the damage down: at most this many batches (~0.3 s)


def read_row_groups(pf: pq.ParquetFile, groups: list[int], columns: list[str], *, what: str) -> ShardRead:
    """`columns` of row groups `groups`, salvaging what decodes when something does not.

    Row offsets in the result count from the first of `groups`; `what` (the file URL) opens each reason.
    """
    try:
        return ShardRead(pf.read_row_groups(groups, columns=columns), {})
    except Exception as exc:  # noqa: BLE001 - classified: only decode errors are salvaged
        if not is_decode_error(exc):
            raise
    schema = pa.schema([pf.schema_arrow.field(c) for c in columns])
    parts: list[pa.Table] = []
    reasons: dict[int, list[str]] = {}
    base = 0
    for g in groups:
        n = pf.metadata.row_group(g).num_rows
        try:
            parts.append(pf.read_row_group(g, columns=columns))
        except Exception as exc:  # noqa: BLE001
            if not is_decode_error(exc):
                raise
            arrays = []
            for field in schema:
                arr, good, err = _salvage_column(pf, g, field, n)
                arrays.append(arr)
                if err is not None:
                    why = f"{what} row group {g} column {field.name!r}: {type(err).__name__}: {err}"
                    for r in range(base + good, base + n):
                        reasons.setdefault(r, []).append(why)
            parts.append(pa.Table.from_arrays(arrays, schema=schema))
        base += n
    table = pa.concat_tables(parts, promote_options="default") if parts else schema.empty_table()
    return ShardRead(table, {r: "; ".join(w) for r, w in reasons.items()})


def _salvage_column(pf: pq.ParquetFile, group: int, field: pa.Field, n: int
                    ) -> tuple[pa.ChunkedArray, int, Exception | None]:
    """(column padded with nulls to `n` rows, rows decoded, the decode error or None) for one chunk."""
    try:
        col = pf.read_row_group(group, columns=[field.name]).column(0)
        return col, n, None
    except Exception as exc:  # noqa: BLE001
        if not is_decode_error(exc):
            raise
        err: Exception = exc
    chunks, e = _batches(pf, group, field.name, _BATCH_ROWS, stop=n)
    good = sum(len(c) for c in chunks)
    err = e or err
    if good < n:
        # The damage lies in the batch after `good`. Decoding stops at the first bad value, so small
        # batches recover the rows before it; the batch size keeps this pass to _MAX_BATCHES batches.
        size = max(1, -(-(good + _BATCH_ROWS) // _MAX_BATCHES))
        if size < _BATCH_ROWS:
            finer, e2 = _batches(pf, group, field.name, size, stop=good + _BATCH_ROWS)
            if sum(len(c) for c in finer) > good:
                chunks, good, err = finer, sum(len(c) for c in finer), e2 or err
    chunks = [c.cast(field.type) if c.type != field.type else c for c in chunks]
    if good < n:
        chunks.append(pa.nulls(n - good, field.type))
        return pa.chunked_array(chunks, field.type), good, err
    return pa.chunked_array(chunks, field.type), n, None


def _batches(pf: pq.ParquetFile, group: int, column: str, size: int, stop: int
             ) -> tuple[list[pa.Array], Exception | None]:
    """The batches of one column chunk that decode, up to `stop` rows, and the error that ended them."""
    out: list[pa.Array] = []
    rows = 0
    try:
        for batch in pf.iter_batches(batch_size=size, row_groups=[group], columns=[column],
                                     use_threads=False):
            out.append(batch.column(0))
            rows += batch.num_rows
            if rows >= stop:
                break
    except Exception as exc:  # noqa: BLE001
        if not is_decode_error(exc):
            raise
        return out, exc
    return out, None
