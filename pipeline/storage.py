"""Object storage under one URL prefix: fsspec filesystems, S3 endpoints, atomic create, retries.

Owns `Storage` (a filesystem plus a root, every path relative to it) and the two properties the pipeline's
exactly-once guarantee rests on:
- `create(rel, data)` is first-writer-wins. On S3 it is a conditional PUT (`IfNoneMatch="*"`; S3 and moto
  answer the second writer with 412, which s3fs maps to FileExistsError). Locally the bytes go to a private
  temp file that is then hard-linked to the final name, which fails if the name exists, so readers never see
  a half-written object. Other filesystems fall back to check-then-write (documented as not atomic).
- transient errors (throttling, 5xx, dropped connections) are retried with exponential backoff and
  jitter; every write is either a fresh name or a first-writer-wins create, so a retry cannot duplicate.
Credentials are never passed here: s3fs and pyarrow read them from the environment / credential chain.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs

T = TypeVar("T")

# Substrings of error text that mark a retryable storage failure (S3 error codes and HTTP statuses).
_TRANSIENT_MARKERS = ("SlowDown", "Throttl", "RequestTimeout", "InternalError", "ServiceUnavailable",
                      "503", "500", "502", "504", "Connection reset", "Connection aborted", "timed out")


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error is worth retrying (throttling, 5xx, network); never for 4xx or local errors."""
    if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(m in text for m in _TRANSIENT_MARKERS)


def with_retries(fn: Callable[[], T], *, what: str, attempts: int = 6, base_s: float = 0.2,
                 cap_s: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn`, retrying transient storage errors with exponential backoff and full jitter."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if i == attempts - 1 or not is_transient(exc):
                raise
            sleep(random.uniform(0, min(cap_s, base_s * 2**i)))
    raise AssertionError("unreachable")


def filesystem(url: str, endpoint_url: str | None = None, options: dict[str, Any] | None = None
               ) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for any fsspec URL; S3 gets the endpoint and short timeouts."""
    opts = dict(options or {})
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("s3", "s3a"):
        if endpoint_url:
            opts.setdefault("endpoint_url", endpoint_url)
        # Fail fast on an unreachable endpoint instead of botocore's minute of silent retries; our own
        # with_retries handles throttling and 5xx above this.
        cfg = dict(opts.pop("config_kwargs", {}) or {})
        cfg.setdefault("connect_timeout", 5)
        cfg.setdefault("read_timeout", 60)
        cfg.setdefault("retries", {"max_attempts": 2, "mode": "standard"})
        opts["config_kwargs"] = cfg
    fs, path = url_to_fs(url, **opts)
    return fs, path


class Storage:
    """A filesystem rooted at a URL prefix; all paths are relative ('data/shard-x.parquet')."""

    def __init__(self, url: str, endpoint_url: str | None = None, options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.fs, root = filesystem(self.url, endpoint_url, options)
        self.root = root.rstrip("/")
        self.is_local = "file" in _protocols(self.fs)
        self.is_s3 = bool({"s3", "s3a"} & set(_protocols(self.fs)))

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def uri(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def invalidate(self) -> None:
        # s3fs caches listings; a resume or a commit check must see the bucket as it is now.
        self.fs.invalidate_cache()

    def exists(self, rel: str) -> bool:
        return with_retries(lambda: self.fs.exists(self.path(rel)), what=rel)

    def read_bytes(self, rel: str) -> bytes:
        return with_retries(lambda: self.fs.cat_file(self.path(rel)), what=rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Overwrite `rel` (only for files that are safe to rewrite: manifest, _SUCCESS)."""
        if self.is_local:
            self._local_atomic_replace(self.path(rel), data)
        else:
            with_retries(lambda: self.fs.pipe_file(self.path(rel), data), what=rel)

    def create(self, rel: str, data: bytes) -> bool:
        """Create `rel` only if it does not exist. True if we wrote it, False if another writer was first."""
        full = self.path(rel)
        if self.is_local:
            return self._local_create(full, data)
        if self.is_s3:
            def put() -> bool:
                try:
                    self.fs.pipe_file(full, data, mode="create")
                    return True
                except FileExistsError:
                    return False
            return with_retries(put, what=rel)
        # Filesystems without conditional writes: best effort (not atomic between concurrent writers).
        if self.exists(rel):
            return False
        with_retries(lambda: self.fs.pipe_file(full, data), what=rel)
        return True

    def list(self, rel_dir: str) -> list[str]:
        """Names (not paths) of the files directly under `rel_dir`; empty if it does not exist."""
        full = self.path(rel_dir)

        def ls() -> list[str]:
            try:
                entries = self.fs.ls(full, detail=False, refresh=True) if not self.is_local else \
                    self.fs.ls(full, detail=False)
            except FileNotFoundError:
                return []
            return sorted(os.path.basename(e.rstrip("/")) for e in entries)
        return with_retries(ls, what=rel_dir)

    def delete(self, rel: str) -> None:
        def rm() -> None:
            try:
                self.fs.rm_file(self.path(rel))
            except FileNotFoundError:
                pass
        with_retries(rm, what=rel)

    def check_writable(self) -> None:
        """Fail fast, naming the URL, if the output prefix cannot be reached or written."""
        probe = f"_probe-{uuid.uuid4().hex}"
        try:
            if self.is_local:
                os.makedirs(self.root, exist_ok=True)
            self.write_bytes(probe, b"")
            self.delete(probe)
        except Exception as exc:  # noqa: BLE001 - re-raised with the URL named
            from pipeline.spec import SpecError

            raise SpecError(f"output.path {self.url}: cannot write there: {type(exc).__name__}: {exc}") \
                from exc

    # -- local helpers -------------------------------------------------------------------------------
    @staticmethod
    def _tmp_name(full: str) -> str:
        d, b = os.path.split(full)
        return os.path.join(d, f".{b}.tmp-{uuid.uuid4().hex}")

    def _local_create(self, full: str, data: bytes) -> bool:
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = self._tmp_name(full)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, full)  # atomic, and fails with FileExistsError if the name is taken
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _local_atomic_replace(self, full: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = self._tmp_name(full)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, full)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)
