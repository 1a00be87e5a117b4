"""Whole jobs on an S3 endpoint that fails: throttling and 5xx are retried, permanent errors fail cleanly.

The fault proxy (tests/pipeline/fault_proxy.py) sits in front of the moto server and answers some
requests itself, on a deterministic schedule keyed by (method, path): S3 errors (503 SlowDown, 503
ServiceUnavailable), a request that moto applied but whose answer is "lost" (replaced by a 500
InternalError, as when S3 commits a write and the connection then drops), or 403 AccessDenied once a
test revokes write access. The store is used with production settings (botocore's 3 attempts, s3fs's
SlowDown retries), so a fault reaches the pipeline's own retry loop only when it outlasts both.
Everything goes through the proxy: the driver, the replicas (separate Ray worker processes, which only
need the endpoint URL) and the readers; assertions look at the bucket directly. Loopback only, a few
dozen requests per test.
"""

from __future__ import annotations

import errno
import json
import re
from collections import Counter

import fsspec
import pytest
from fault_proxy import OUT, FaultProxy
from pipeline_helpers import STUB, assert_exactly_once, spec, write_prompts

from pipeline import read_results
from pipeline.executor import run_job
from pipeline.storage import is_transient, with_retries


@pytest.fixture(scope="module")
def proxy(s3_endpoint):
    server = FaultProxy(s3_endpoint).start()
    yield server
    server.stop()


_ONCE_ONLY = re.compile(r"/_commits/shard-[^/]*\.json$|/_plan\.json$")  # created first-writer-wins


def transient_faults(method: str, target: str, n: int) -> str:
    """Commit markers and the plan: the first PUT is applied but its answer lost, the next two get 503.
    That outlasts botocore's three attempts (s3fs retries only SlowDown), so the pipeline's own loop
    sends the fourth, which gets 412 from its own earlier write. Attempt files: lost, then 503, then
    botocore's third attempt meets its own object. The listing of `_commits/`: throttled, then refused
    twice, so the pipeline retries it too. _SUCCESS loses one answer; every third read of an input object
    is throttled. No more than this: each fault costs about 0.5-1 s of botocore's backoff."""
    if not OUT.search(target):
        return "slowdown" if method == "GET" and "?" not in target and n % 3 == 0 else "pass"
    if method == "PUT" and _ONCE_ONLY.search(target):
        return ("lost", "unavailable", "unavailable", "pass")[min(n, 3)]
    if method == "PUT" and "/data/" in target:
        return ("lost", "unavailable", "pass")[min(n, 2)]
    if method == "PUT" and target.endswith("/_SUCCESS"):
        return "lost" if n == 0 else "pass"
    if method == "GET" and "?" in target and "/_commits/" in target:
        return ("slowdown", "unavailable", "unavailable", "pass")[min(n, 3)]
    return "pass"


def test_translated_s3_errors_are_classified_and_named():
    # s3fs turns SlowDown / ServiceUnavailable / 503 into OSError(EBUSY, server message) and keeps the
    # ClientError only as __cause__ (or not at all, for HEAD): the errno and the cause must be enough.
    assert is_transient(OSError(errno.EBUSY, "Please reduce your request rate."))
    assert is_transient(OSError(getattr(errno, "EREMOTEIO", errno.EAGAIN), "We encountered an error"))
    wrapped = OSError(errno.EIO, "odd")
    wrapped.__cause__ = RuntimeError("An error occurred (SlowDown) when calling the PutObject operation")
    assert is_transient(wrapped) and not is_transient(OSError(errno.EIO, "odd"))
    assert not is_transient(PermissionError(errno.EACCES, "Access Denied"))
    with pytest.raises(PermissionError, match=r"^s3://b/out/x: \[Errno 13\] Access Denied$"):
        with_retries(lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Access Denied")),
                     what="s3://b/out/x", sleep=lambda s: None)
    with pytest.raises(OSError, match=r"^s3://b/out/x: .*Service Unavailable \(gave up after 3 attempts\)$"):
        with_retries(lambda: (_ for _ in ()).throw(OSError(errno.EBUSY, "Service Unavailable")),
                     what="s3://b/out/x", attempts=3, sleep=lambda s: None)


def _committed_files(fs, out: str) -> tuple[dict, list[str]]:
    markers = {p.rsplit("/", 1)[1]: fs.cat_file(p).decode() for p in fs.ls(f"{out}/_commits", refresh=True)}
    data = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{out}/data", refresh=True))
    return markers, data


def _ids(n: int) -> list[str]:
    return [f"p.parquet#{i}" for i in range(n)]


def test_transient_storage_faults_are_retried_without_duplicates(bucket, s3_endpoint, proxy, ray_local):
    direct = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    write_prompts(f"{bucket}/in/p.parquet", [f"order {i} is late" for i in range(16)], row_group_size=4,
                  storage_options=direct)
    out = f"{bucket}/out"
    proxy.reset(transient_faults)
    job = spec(f"{bucket}/in/", out, storage={"endpoint_url": proxy.url}, resources={"shard_rows": 8})
    m = run_job(job, backend_factory=STUB, progress=False)

    faults = dict(proxy.faults)
    assert faults.get(("lost", "PUT", "commit"), 0) == 2, faults  # each marker PUT lost its first answer
    assert faults.get(("lost", "PUT", "out"), 0) == 2 + 2, faults  # data files, plan, _SUCCESS
    assert faults.get(("slowdown", "GET", "in"), 0) >= 2 and faults.get(("unavailable", "GET", "commit"))
    # Botocore makes at most three attempts: each marker PUT, the plan PUT and the first listing of
    # _commits/ were served at the fourth request or later, sent by the pipeline's own retry loop.
    ours = {t: c for (meth, t), c in proxy.seen.items()
            if (meth == "PUT" and _ONCE_ONLY.search(t)) or (meth == "GET" and "prefix=out/_commits/" in t)}
    assert len(ours) == 4 and min(ours.values()) >= 4, ours

    t = read_results(out, endpoint_url=proxy.url)
    assert_exactly_once(t, _ids(16))
    assert set(t.column("status").to_pylist()) == {"ok"}
    assert m["rows"] == 16 and m["rows_by_status"] == {"ok": 16, "invalid": 0, "error": 0}
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **direct)
    markers, data = _committed_files(fs, out)
    named = sorted(json.loads(v)["file"].split("/", 1)[1] for v in markers.values())
    assert len(markers) == m["shards"] == 2 and data == named  # no extra data files, none missing
    manifest = json.loads(fs.cat_file(f"{out}/_manifest.json"))
    assert [f["rows"] for f in manifest["files"]] == [8, 8] and manifest["rows"] == 16
    assert sorted(f["file"].split("/", 1)[1] for f in manifest["files"]) == named
    assert fs.exists(f"{out}/_SUCCESS")
    assert not [p for p in fs.ls(out, refresh=True) if "_probe-" in p]  # the writability probe is gone


def test_revoked_write_access_fails_the_job_naming_the_url_then_resumes(bucket, s3_endpoint, proxy,
                                                                        ray_local):
    direct = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    write_prompts(f"{bucket}/in/p.parquet", [f"review {i}" for i in range(16)], row_group_size=4,
                  storage_options=direct)
    out = f"{bucket}/out"
    markers_put = Counter()

    def revoke_after_one_commit(method: str, target: str, n: int) -> str:
        """Write access to the output prefix is lost for good once a shard is committed."""
        if method in ("PUT", "DELETE") and OUT.search(target):
            if markers_put["n"] >= 1:
                return "denied"
            if "/_commits/" in target:
                markers_put["n"] += 1
        return "pass"

    proxy.reset(revoke_after_one_commit)
    job = spec(f"{bucket}/in/", out, storage={"endpoint_url": proxy.url},
               resources={"shard_rows": 4, "max_attempts": 1})
    named = re.escape(f"{out}/") + r"(data|_commits)/shard-.*Access Denied"
    with pytest.raises(PermissionError, match=named):
        run_job(job, backend_factory=STUB, progress=False)
    assert proxy.faults[("denied", "PUT", "out")] >= 1

    fs = fsspec.filesystem("s3", skip_instance_cache=True, **direct)
    before, _ = _committed_files(fs, out)
    assert len(before) == 1 and not fs.exists(f"{out}/_SUCCESS")
    partial = read_results(out, endpoint_url=s3_endpoint)  # what was committed is whole and readable
    assert partial.num_rows == 4 and set(partial.column("id").to_pylist()) <= set(_ids(16))
    assert_exactly_once(partial, partial.column("id").to_pylist())

    proxy.reset(lambda method, target, n: "pass")  # access restored: the same command finishes the job
    m = run_job(job, backend_factory=STUB, progress=False)
    # The failed run could not record its end (writes were denied): it reads as interrupted.
    assert [r["rows"] for r in m["runs"]] == [4, 12] and m["runs"][0]["outcome"] == "interrupted"
    assert_exactly_once(read_results(out, endpoint_url=s3_endpoint), _ids(16))
    after, data = _committed_files(fs, out)
    assert all(after[k] == v for k, v in before.items())  # committed shards were not redone
    assert data == sorted(json.loads(v)["file"].split("/", 1)[1] for v in after.values())
