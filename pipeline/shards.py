"""Input shards: list the Parquet inputs, cut them into row ranges (a pure function), read one range.

A shard is (file, first row, row count) with a stable id `<file index>-<first row>`; files are sorted, so
the same inputs always give the same shards. Cuts follow row groups where they can (reading a shard then
touches only its own row groups) and split a row group only when it is larger than `shard_rows`.
Storage is touched here only to list and read inputs; the output side is pipeline.sink's.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.spec import SpecError
from pipeline.storage import filesystem, with_retries


@dataclass(frozen=True)
class InputFile:
    path: str  # full URL, as given to the reader
    rel: str  # path relative to the input root: the part of row ids derived from the file
    row_groups: tuple[int, ...]  # rows per row group

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
        files.append(InputFile(full, rel, tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))))
    return files


def read_metadata(fs: fsspec.AbstractFileSystem, path: str, url: str) -> pq.FileMetaData:
    try:
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).metadata
    except Exception as exc:  # noqa: BLE001 - corrupt or unreadable input fails the job up front
        raise SpecError(f"input file {url}: not a readable Parquet file: {type(exc).__name__}: {exc}") \
            from exc


def read_schema(url: str, endpoint_url: str | None = None, options: dict | None = None) -> pa.Schema:
    fs, path = filesystem(url, endpoint_url, options)
    try:
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).schema_arrow
    except Exception as exc:  # noqa: BLE001
        raise SpecError(f"input file {url}: not a readable Parquet file: {type(exc).__name__}: {exc}") \
            from exc


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


def read_shard(shard: Shard, columns: list[str], endpoint_url: str | None = None,
               options: dict | None = None) -> pa.Table:
    """Rows [start, start+num_rows) of the shard's file, reading only the row groups that hold them."""
    fs, path = filesystem(shard.file, endpoint_url, options)

    def read() -> pa.Table:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            md = pf.metadata
            offsets = [0]
            for i in range(md.num_row_groups):
                offsets.append(offsets[-1] + md.row_group(i).num_rows)
            end = shard.start + shard.num_rows
            first = bisect.bisect_right(offsets, shard.start) - 1
            last = bisect.bisect_left(offsets, end)
            groups = list(range(first, last))
            table = pf.read_row_groups(groups, columns=columns)
            return table.slice(shard.start - offsets[first], shard.num_rows)
    table = with_retries(read, what=shard.file)
    if table.num_rows != shard.num_rows:
        raise OSError(f"{shard.file}: expected {shard.num_rows} rows at {shard.start}, read "
                      f"{table.num_rows}; did the input change after planning?")
    return table
