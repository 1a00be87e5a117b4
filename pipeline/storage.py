"""Object storage under one URL prefix: fsspec filesystems, S3 endpoints, atomic create, retries.

Owns `Storage` (a filesystem plus a root, every path relative to it) and the two properties the pipeline's
exactly-once guarantee rests on:
- `create(rel, data)` is first-writer-wins. On S3 it is a conditional PUT (`IfNoneMatch="*"`; S3 and moto
  answer the second writer with 412, which s3fs maps to FileExistsError). Locally the bytes go to a private
  temp file that is then hard-linked to the final name, which fails if the name exists, so readers never see
  a half-written object. Other filesystems fall back to check-then-write (documented as not atomic).
- transient errors (throttling, 5xx, dropped connections) are retried with exponential backoff and
  jitter; every write is either a fresh name or a first-writer-wins create, so a retry cannot duplicate.
  A conditional PUT whose response was lost (S3 applied it, then a 5xx or a dropped connection reached
  us) meets its own object on the retry and gets 412: `create` then compares the stored bytes, so the
  writer that did win is not told it lost (which would make it delete the data file its marker names).
- an error that is given up on (permanent, or transient past the attempts) is re-raised, same type,
  with the URL in its message, so a failed job names what it could not reach.
Credentials are never passed here: s3fs and pyarrow read them from the environment / credential chain.
"""

from __future__ import annotations

import errno
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


# errnos that s3fs gives translated S3 errors: it maps SlowDown / ServiceUnavailable / 503 / 409 to EBUSY
# and InternalError / 500 to EREMOTEIO, keeping only the server's message ("Please reduce your request
# rate."), so after s3fs's own retries the S3 error code survives only as the errno.
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
                     errno.ECONNREFUSED, errno.EPIPE, getattr(errno, "EREMOTEIO", errno.EAGAIN)}


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error is worth retrying (throttling, 5xx, network); never for 4xx or local errors."""
    if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)):
        return False
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # the cause chain: s3fs keeps botocore's error there
        seen.add(id(cur))
        if isinstance(cur, (ConnectionError, TimeoutError)):
            return True
        if isinstance(cur, OSError) and cur.errno in _TRANSIENT_ERRNOS:
            return True
        text = f"{type(cur).__name__}: {cur}"
        if any(m in text for m in _TRANSIENT_MARKERS):
            return True
        cur = cur.__cause__
    return False


def with_retries(fn: Callable[[], T], *, what: str, attempts: int = 6, base_s: float = 0.2,
                 cap_s: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn`, retrying transient storage errors with exponential backoff and full jitter.

    `what` (a URL) is named in the error that is finally raised; its type is kept, so callers can still
    tell FileNotFoundError or PermissionError apart.
    """
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            transient = is_transient(exc)
            if i < attempts - 1 and transient:
                sleep(random.uniform(0, min(cap_s, base_s * 2**i)))
                continue
            named = _named(exc, what, f" (gave up after {i + 1} attempts)" if transient else "")
            if named is exc:
                raise
            raise named from exc
    raise AssertionError("unreachable")


def _named(exc: Exception, what: str, suffix: str) -> Exception:
    """`exc` with `what` in its message: a new exception of the same built-in type, or a note added."""
    if what in str(exc):
        return exc
    cls = type(exc)
    try:
        if cls.__module__ != "builtins":  # third-party types may not take a single message argument
            raise TypeError
        new = cls(f"{what}: {exc}{suffix}")
    except TypeError:
        exc.add_note(f"while accessing {what}{suffix}")
        return exc
    if isinstance(exc, OSError) and isinstance(new, OSError):
        new.errno = exc.errno
    return new


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
        return with_retries(lambda: self.fs.exists(self.path(rel)), what=self.uri(rel))

    def read_bytes(self, rel: str) -> bytes:
        return with_retries(lambda: self.fs.cat_file(self.path(rel)), what=self.uri(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Overwrite `rel` (only for files that are safe to rewrite: manifest, _SUCCESS)."""
        if self.is_local:
            self._local_atomic_replace(self.path(rel), data)
        else:
            with_retries(lambda: self.fs.pipe_file(self.path(rel), data), what=self.uri(rel))

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
                    # Maybe our own earlier PUT (response lost, retried by botocore or by us): the
                    # bytes tell. Marker bodies carry the attempt, replica and times, so another
                    # writer's never match ours.
                    return self._holds(full, data)
            return with_retries(put, what=self.uri(rel))
        # Filesystems without conditional writes: best effort (not atomic between concurrent writers).
        if self.exists(rel):
            return False
        with_retries(lambda: self.fs.pipe_file(full, data), what=self.uri(rel))
        return True

    def _holds(self, full: str, data: bytes) -> bool:
        """Whether the object at `full` holds exactly `data` (False if it vanished meanwhile)."""
        try:
            return self.fs.cat_file(full) == data
        except FileNotFoundError:
            return False

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
        return with_retries(ls, what=self.uri(rel_dir))

    def delete(self, rel: str) -> None:
        def rm() -> None:
            try:
                self.fs.rm_file(self.path(rel))
            except FileNotFoundError:
                pass
        with_retries(rm, what=self.uri(rel))

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
