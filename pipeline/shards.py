"""Input shards: list the Parquet inputs, cut them into row ranges (a pure function), read one range.

A shard is (file, first row, row count) with a stable id `<file index>-<first row>`; files are sorted, so
the same inputs always give the same shards. Cuts follow row groups where they can (reading a shard then
touches only its own row groups) and split a row group only when it is larger than `shard_rows`.
Storage is touched here only to list and read inputs; the output side is pipeline.sink's.

Reading never fails on undecodable bytes (a corrupt page in a file whose footer is fine): the healthy
path is one `read_row_groups` call; when that raises a decode error, the row groups are read one by one,
a bad one column by column, and a bad column chunk batch by batch, so the rows before the damage survive.
What cannot be decoded is null, and the row's reason is kept (`ShardRead.unreadable`): those rows become
error rows (pipeline.rows), the rest of the file is generated. Storage errors still retry or raise.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.spec import SpecError
from pipeline.storage import filesystem, is_transient, with_retries


@dataclass(frozen=True)
class InputFile:
    path: str  # full URL, as given to the reader
    rel: str  # path relative to the input root: the part of row ids derived from the file
    row_groups: tuple[int, ...]  # rows per row group
    schema: pa.Schema  # the file's Arrow schema, from the footer read at listing (never read twice)

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

    def sub(self, start: int, num_rows: int) -> Shard:
        """A piece of this shard (rows [start, start+num_rows) of the file), used when bisecting."""
        assert self.start <= start and start + num_rows <= self.start + self.num_rows
        return Shard(self.id, self.file, self.file_rel, start, num_rows)

    def to_json(self) -> dict:
        return asdict(self)


def list_inputs(url: str, endpoint_url: str | None = None, options: dict | None = None) -> list[InputFile]:
    """All Parquet files under `url` (a file, a directory or a glob), with their row-group sizes.

    Fails naming the URL when nothing matches, and naming the file when one is not readable Parquet.
    """
    fs, path = filesystem(url, endpoint_url, options)
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    try:
        if any(c in path for c in "*?["):
            found = sorted(fs.glob(path))
            base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        elif with_retries(lambda: fs.isdir(path), what=url):
            found = sorted(p for p in fs.find(path) if p.endswith(".parquet") or p.endswith(".pq"))
            base = path.rstrip("/")
        elif with_retries(lambda: fs.exists(path), what=url):
            found, base = [path], path.rsplit("/", 1)[0]
        else:
            found, base = [], path
    except Exception as exc:  # noqa: BLE001 - re-raised naming the URL
        raise SpecError(f"input.path {url}: cannot list: {type(exc).__name__}: {exc}") from exc
    if not found:
        raise SpecError(f"input.path {url}: no Parquet files found")
    files = []
    for p in found:
        full = protocol + p if protocol else p
        rel = p[len(base):].lstrip("/") if p.startswith(base) else p.rsplit("/", 1)[-1]
        md = read_metadata(fs, p, full)
        files.append(InputFile(full, rel, tuple(md.row_group(i).num_rows for i in range(md.num_row_groups)),
                               md.schema.to_arrow_schema()))
    return files


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
        start, acc = 0, 0
        for rg in f.row_groups:
            if acc and acc + rg > shard_rows:  # close the open shard before this group overflows it
                shards.append(Shard(f"{fi:05d}-{start:09d}", f.path, f.rel, start, acc))
                start, acc = start + acc, 0
            acc += rg
            while acc >= shard_rows:  # a big row group (or an exact fill) is cut by row ranges
                shards.append(Shard(f"{fi:05d}-{start:09d}", f.path, f.rel, start, shard_rows))
                start, acc = start + shard_rows, acc - shard_rows
        if acc:
            shards.append(Shard(f"{fi:05d}-{start:09d}", f.path, f.rel, start, acc))
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
    other storage errors raised, naming the file.
    """
    fs, path = filesystem(shard.file, endpoint_url, options)

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
