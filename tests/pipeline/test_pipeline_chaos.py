"""The chaos soak's short form (bench/chaos.py, issue 22 point 13): 200 rows, at least 100 faults.

Replica and driver SIGKILLs, S3 errors and lost write answers through the fault proxy, a poison row and
slow rows, all drawn from one seed; then every id exactly once, no partial files, manifest totals equal
to the rows. The seed is fixed and named in every failure message; a failing schedule is replayed with
`DGBATCH_CHAOS_SEED=<n> pytest tests/pipeline/test_pipeline_chaos.py` (the failure also names the run's
workdir, whose events.log lists the faults as they fired and driver-<k>.log each driver's output).
About 60 s on the 2-core development box.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

SEED = int(os.environ.get("DGBATCH_CHAOS_SEED", "20261206"))
ROWS, FAULTS, DRIVER_KILLS = 200, 100, 2


def _load_chaos() -> ModuleType:
    """bench/chaos.py as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
    spec = importlib.util.spec_from_file_location("bench_chaos", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_chaos_soak_every_row_exactly_once(s3_endpoint, ray_local, tmp_path):
    chaos = _load_chaos()
    res = chaos.run_chaos(SEED, ROWS, FAULTS, endpoint=s3_endpoint,
                          ray_address=ray_local.get_runtime_context().gcs_address, workdir=tmp_path,
                          driver_kills=DRIVER_KILLS, poison=1, slow=2, timeout_s=400)
    brief = {k: v for k, v in res.items() if k != "driver_failures"}
    where = f"seed {SEED} (replay: DGBATCH_CHAOS_SEED={SEED}); {json.dumps(brief)}"
    assert not res["driver_failures"], f"{where}; a driver failed on its own: {res['driver_failures']}"
    assert not res["problems"], f"{where}; problems: {res['problems']}"
    assert (res["rows_out"], res["lost"], res["duplicated"]) == (ROWS, 0, 0), where
    faults = res["faults"]
    assert res["faults_total"] >= FAULTS, where
    assert all(faults[k] >= 1 for k in ("slowdown", "unavailable", "internal", "lost", "replica_kill",
                                         "slow", "poison")), where
    assert 1 <= faults["driver_kill"] <= DRIVER_KILLS, where
    assert res["driver_launches"] == faults["driver_kill"] + 1, where

    # The checks themselves can fail: an attempt file no marker names, and a marker naming another
    # shard's file (that shard's rows twice, its own rows lost), are both reported.
    import boto3
    import fsspec

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, client_kwargs={"endpoint_url": s3_endpoint})
    bucket, out = res["bucket"], f"s3://{res['bucket']}/out"
    markers = sorted(fs.ls(f"{bucket}/out/_commits", refresh=True))
    first, second = (json.loads(fs.cat_file(p)) for p in markers[:2])
    fs.pipe_file(f"{bucket}/out/data/shard-{first['shard_id']}.attempt-999.parquet", b"partial")
    fs.pipe_file(markers[0], json.dumps({**first, "file": second["file"]}).encode())
    doctored: dict = {}
    problems = chaos.verify(s3, fs, bucket, out, s3_endpoint, chaos.input_ids(ROWS), {},
                            res["driver_launches"], doctored)
    assert doctored["duplicated"] == second["rows"] and doctored["lost"] == first["rows"], doctored
    assert any("duplicated" in p for p in problems) and any("attempt-999" in p for p in problems), problems
