"""Chaos soak (issue 22 point 13): one stub-backend job over S3 on loopback while seeded faults fire.

A driver SUBPROCESS (tests/pipeline/pipeline_driver.py, joined to a local Ray) runs the job against a
moto S3 server behind the fault proxy (tests/pipeline/fault_proxy.py). The input holds poison rows (the
stub kills its process) and slow rows (the stub sleeps past `shard_timeout_s` on a row's first try: the
lease expires, the driver kills the replica). An injector thread driven by `random.Random(seed)` fires
S3 faults through the proxy (`fault_proxy.RandomFaults`: 503 SlowDown, 503 ServiceUnavailable, 500
InternalError, and "lost": a write applied whose answer becomes a 500), replica SIGKILLs (pids from the
stub's pid_dir, Ray workers at least 2 s old) and driver SIGKILLs at progress points drawn from the
seed, each followed at once by a rerun of the same command (a resume). S3 faults and replica kills stop
once `faults` have fired (faster while behind that budget relative to progress); the planned driver
kills still happen. Once a driver exits 0, reading moto directly: every input id exactly once
(`pipeline.read_results`); no partial files (every object under OUT/data named by a commit marker,
nothing but the known files elsewhere, `_SUCCESS` present); manifest totals equal the rows (`rows`, the
sums of `rows_by_status` and `files[].rows`; with per-run records, the sum of `runs[].rows` and one
`runs` entry per driver launch). The seed fixes the schedule (each S3 request's fate by its identity),
not how processes interleave; the workdir's events.log lists the faults as they fired.

    OMP_NUM_THREADS=1 .venv/bin/python bench/chaos.py --rows 2000 --faults 300 [--seed N] [--json]

The short form is tests/pipeline/test_pipeline_chaos.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "pipeline"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(TESTS))  # fault_proxy

import boto3  # noqa: E402
import fsspec  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from fault_proxy import FaultProxy, RandomFaults  # noqa: E402

from pipeline import read_results  # noqa: E402
from pipeline.shards import InputFile, plan_shards  # noqa: E402

KINDS = {  # fault key -> label in the table
    "slowdown": "S3 503 SlowDown", "unavailable": "S3 503 ServiceUnavailable",
    "internal": "S3 500 InternalError", "lost": "S3 write applied, answer lost (500)",
    "replica_kill": "replica SIGKILL", "driver_kill": "driver SIGKILL + rerun",
    "slow": "slow row outlives its lease", "poison": "poison row",
}
ROWS_PER_FILE, ROW_GROUP, SHARD_ROWS = 50, 8, 8
SHARD_TIMEOUT_S, SLOW_S = 4.0, 9.0
P_LOW, P_HIGH = 0.2, 0.5  # S3 fault probability on pace / behind the fault budget
REPLICA_SHARE = 0.05  # of the fault budget kept for replica kills (S3 faults stop short of it)
KILL_EVERY = (1.0, 3.0)  # seconds between replica kills (half that while behind)
RUN_RECORD = re.compile(r"^_runs/run-[^/]+\.json$")  # pipeline/runs.py: one record per driver run
MIN_REPLICA_AGE_S = 2.0  # younger replicas may not be ready yet: killing them is a start-up crash loop
_file_name = "part-{:03d}.parquet".format  # input file i


def input_ids(rows: int) -> list[str]:
    """The row ids of a `rows`-row input as write_input lays it out (pipeline/rows.py: <file>#<row>)."""
    return [f"{_file_name(i // ROWS_PER_FILE)}#{i % ROWS_PER_FILE}" for i in range(rows)]


def write_input(fs, bucket: str, rows: int, rng: random.Random, poison: int, slow: int
                ) -> tuple[dict[str, str], list[InputFile]]:
    """Prompt files under <bucket>/in/; returns ({planted row id: "poison" | "slow"}, the files)."""
    picks = rng.sample(range(rows), poison + slow)
    planted = {i: ("poison" if k < poison else "slow") for k, i in enumerate(picks)}
    marker = {"poison": " __POISON__", "slow": " __SLOW__"}
    files = []
    for f, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        n = min(ROWS_PER_FILE, rows - start)
        prompts = [f"ticket {start + i}: my parcel is late" + marker.get(planted.get(start + i), "")
                   for i in range(n)]
        with fs.open(f"{bucket}/in/{_file_name(f)}", "wb") as fh:
            pq.write_table(pa.table({"prompt": prompts}), fh, row_group_size=ROW_GROUP)
        groups = tuple(min(ROW_GROUP, n - g) for g in range(0, n, ROW_GROUP))
        files.append(InputFile(f"s3://{bucket}/in/{_file_name(f)}", _file_name(f), groups,
                               pa.schema([("prompt", pa.string())])))
    ids = input_ids(rows)
    return {ids[i]: kind for i, kind in planted.items()}, files


def _replica_pids(pid_dir: Path, min_age: float = 0.0) -> list[int]:
    """Live Ray worker processes that recorded themselves in pid_dir at least `min_age` seconds ago."""
    out, now = [], time.time()
    for p in pid_dir.iterdir() if pid_dir.exists() else []:
        try:  # a Ray worker's title starts "ray::" (never a recycled pid; a zombie's cmdline is empty)
            with open(f"/proc/{p.name}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::") and now - p.stat().st_mtime >= min_age:
                    out.append(int(p.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(out)


class Injector(threading.Thread):
    """Fires replica and driver kills and steers the S3 fault rate until `budget` faults have fired."""

    def __init__(self, rng: random.Random, policy: RandomFaults, budget: int, driver_kills: int, shards: int,
                 commits, pid_dir: Path, slow_dir: Path, poison: int, slow: int):
        super().__init__(name="chaos-injector", daemon=True)
        self.rng, self.policy, self.budget = rng, policy, budget
        self.poison, self.slow, self.replica_min = poison, slow, max(1, int(budget * REPLICA_SHARE))
        self.shards, self.commits, self.pid_dir, self.slow_dir = shards, commits, pid_dir, slow_dir
        self.thresholds = sorted(rng.uniform(0.1, 0.75) for _ in range(driver_kills))
        self.kills: Counter = Counter()
        self.lock = threading.Lock()
        self.driver: subprocess.Popen | None = None
        self.driver_started, self.driver_commits, self.driver_killed = 0.0, 0, False
        self.stop = threading.Event()
        self.events: list[tuple[float, str]] = []  # (unix time, what): the fault sequence, for a replay

    def counts(self) -> Counter:
        c = Counter(fault for *_, fault in list(self.policy.events)) + self.kills
        c["slow"] = len(list(self.slow_dir.iterdir())) if self.slow_dir.exists() else 0
        return c

    def launched(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.driver, self.driver_killed = proc, False
            self.driver_started, self.driver_commits = time.time(), self.commits()

    def run(self) -> None:
        next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY)
        while not self.stop.wait(0.25):
            c = self.counts()
            active = (total := sum(c.values()) + self.poison) < self.budget
            # S3 faults fill what the rest leaves of the budget, counting what is still to come: planned
            # driver kills, slow rows not yet reached, the replica kills' minimum share.
            others = c["replica_kill"] + c["driver_kill"] + c["slow"] + self.poison
            to_come = (len(self.thresholds) - c["driver_kill"] + self.slow - c["slow"]
                       + max(0, self.replica_min - c["replica_kill"]))
            self.policy.cap, self.policy.enabled = self.budget - others - to_come, active
            done = self.commits() / self.shards
            if active:  # S3 faults and replica kills, faster while behind the budget's pace
                behind = total < self.budget * min(1.0, done / 0.7 + 0.05)
                self.policy.p = P_HIGH if behind else P_LOW
                pids = _replica_pids(self.pid_dir, MIN_REPLICA_AGE_S) if time.monotonic() >= next_kill else []
                if pids:  # none up (a driver starting): the next tick tries again
                    with contextlib.suppress(ProcessLookupError):  # it may have died since
                        victim = self.rng.choice(pids)
                        os.kill(victim, signal.SIGKILL)  # a live Ray worker (checked)
                        self.kills["replica_kill"] += 1
                        self.events.append((time.time(), f"replica_kill pid {victim}"))
                    next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY) / (2 if behind else 1)
            pending = self.kills["driver_kill"] < len(self.thresholds)
            if pending and done >= self.thresholds[self.kills["driver_kill"]]:
                self._maybe_kill_driver()  # the planned driver kills happen even past the budget
            elif not active and not pending:
                return

    def _maybe_kill_driver(self) -> None:
        with self.lock:
            proc = self.driver
            if proc is None or proc.poll() is not None:
                return
            # Only a launch that has started its own replicas and seen a commit since: each launch then
            # makes progress (no kill loop) and has done work a per-run record would show.
            mine = any(p.stat().st_mtime >= self.driver_started for p in self.pid_dir.glob("*"))
            if not mine or self.commits() <= self.driver_commits:
                return
            self.driver_killed = True
            proc.kill()  # our own child (Popen signals only while it has not been reaped)
            self.kills["driver_kill"] += 1
            self.events.append((time.time(), f"driver_kill pid {proc.pid}"))


def run_chaos(seed: int, rows: int, faults: int, *, endpoint: str, ray_address: str, workdir: str | Path,
              driver_kills: int = 3, poison: int = 2, slow: int = 3, replicas: int = 4,
              cost_per_row_s: float = 0.01, timeout_s: float = 900.0, log=print) -> dict[str, Any]:
    """Run the soak once against a moto `endpoint` and a Ray cluster at `ray_address`; returns figures."""
    t_start, rng, work, bucket = time.monotonic(), random.Random(seed), Path(workdir), f"chaos-{seed}"
    pid_dir, slow_dir, s3 = work / "pids", work / "slow", boto3.client("s3", endpoint_url=endpoint)
    bucket += f"-{len(s3.list_buckets()['Buckets'])}"  # a fresh bucket, also for a rerun of the seed
    s3.create_bucket(Bucket=bucket)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, client_kwargs={"endpoint_url": endpoint})
    planted, files = write_input(fs, bucket, rows, rng, poison, slow)
    out = f"s3://{bucket}/out"

    def commits() -> int:
        return s3.list_objects_v2(Bucket=bucket, Prefix="out/_commits/").get("KeyCount", 0)

    proxy = FaultProxy(endpoint).start()
    policy = RandomFaults(seed, P_LOW, cap=0)  # the injector sets the cap as the run goes
    proxy.reset(policy)
    job = {"input": {"path": f"s3://{bucket}/in/", "prompt_column": "prompt"}, "output": {"path": out},
           "storage": {"endpoint_url": proxy.url},
           "resources": {"replicas": replicas, "num_cpus_per_replica": 0.5, "shard_rows": SHARD_ROWS,
                         "max_attempts": 2, "retry_backoff_s": 0.05, "shard_timeout_s": SHARD_TIMEOUT_S}}
    (work / "spec.json").write_text(json.dumps(job))
    factory = {"cost_per_row_s": cost_per_row_s, "slow_s": SLOW_S, "slow_dir": str(slow_dir)}
    cmd = [sys.executable, str(TESTS / "pipeline_driver.py"), str(work / "spec.json"), ray_address,
           str(pid_dir), json.dumps(factory)]
    inj = Injector(rng, policy, faults, driver_kills, len(plan_shards(files, SHARD_ROWS)), commits,
                   pid_dir, slow_dir, poison, slow)
    t_job = time.monotonic()
    inj.start()
    try:
        launches, failures, problems = _launch_until_done(cmd, work, inj, t_start + timeout_s, log)
    finally:
        inj.stop.set()
        inj.join(10)
        policy.enabled = False
    res = {"seed": seed, "bucket": bucket, "rows_in": rows, "faults_min": faults,
           "faults": {k: inj.counts()[k] for k in KINDS} | {"poison": poison},
           "driver_launches": len(launches), "driver_failures": failures, "launches": launches,
           "job_wall_s": round(time.monotonic() - t_job, 1), "workdir": str(work)}
    res["faults_total"] = sum(res["faults"].values())
    end = time.monotonic() + 60  # replicas of killed drivers may outlive them: check once all are gone
    while _replica_pids(pid_dir) and time.monotonic() < end:
        time.sleep(0.2)
    proxy.stop()
    events = inj.events + [(t, f"s3 {fault} {method} {target}") for t, method, target, fault in policy.events]
    (work / "events.log").write_text("".join(f"{t:.3f} {what}\n" for t, what in sorted(events)))
    if not problems:
        problems += verify(s3, fs, bucket, out, endpoint, input_ids(rows), planted, len(launches), res)
    if res["faults_total"] < faults:
        problems.append(f"only {res['faults_total']} faults fired before the job finished (minimum {faults})")
    res["problems"] = problems
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    return res


def _launch_until_done(cmd: list[str], work: Path, inj: Injector, deadline: float, log
                       ) -> tuple[list[dict], list[dict], list[str]]:
    """Run the driver until it exits 0, rerunning a killed one at once: (launches, failures, problems)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    launches, failures = [], []  # type: list[dict], list[dict]
    t0 = time.monotonic()
    while True:
        n = len(launches) + 1
        log_path = work / f"driver-{n}.log"
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        inj.launched(proc)
        t_launch = time.monotonic()
        try:
            rc = proc.wait(max(1.0, deadline - t_launch))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return launches, failures, [f"the job did not finish in time (launch {n}, driver log {log_path})"]
        launches.append({"launch": n, "at_s": round(t_launch - t0, 1), "ran_s": round(time.monotonic()
                         - t_launch, 1), "rc": rc, "killed": inj.driver_killed})
        if rc == 0:
            return launches, failures, []
        if not inj.driver_killed:
            tail = log_path.read_text(errors="replace")[-1500:]
            failures.append({"launch": n, "rc": rc, "log_tail": tail})
            log(f"[chaos] driver launch {n} failed on its own (rc {rc}); rerunning:\n{tail}")
            if len(failures) >= 3:
                return launches, failures, [f"{len(failures)} driver launches failed on their own"]


def verify(s3, fs, bucket: str, out: str, endpoint: str, ids: list[str], planted: dict[str, str],
           launches: int, res: dict) -> list[str]:
    """The exactly-once checks; fills res (rows_out, lost, duplicated, statuses) and returns problems."""
    problems = []
    try:
        table = read_results(out, endpoint_url=endpoint)
    except Exception as exc:  # noqa: BLE001 - e.g. a marker naming a deleted file: count what is readable
        problems.append(f"read_results({out}) failed: {type(exc).__name__}: {exc}")
        table = _readable(fs, bucket)
    got = Counter(table.column("id").to_pylist())
    lost, extra = sorted(set(ids) - set(got)), sorted(set(got) - set(ids))
    dup = sorted(k for k, c in got.items() if c > 1)
    res.update(rows_out=table.num_rows, lost=len(lost), duplicated=sum(got[k] - 1 for k in dup),
               rows_by_status=dict(Counter(table.column("status").to_pylist())))
    if lost or dup or extra:
        problems.append(f"rows lost {lost[:5]} ({len(lost)}), duplicated {dup[:5]} ({len(dup)}), "
                        f"unknown {extra[:5]}")
    status = dict(zip(table.column("id").to_pylist(), table.column("status").to_pylist()))
    if any(k == "poison" and status.get(i) != "error" for i, k in planted.items()):
        problems.append(f"poison rows not all error rows: { {i: status.get(i) for i in planted} }")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/"):
        keys += [o["Key"][len("out/"):] for o in page.get("Contents", [])]
    plan = json.loads(fs.cat_file(f"{bucket}/out/_plan.json"))
    markers = {k: json.loads(fs.cat_file(f"{bucket}/out/{k}")) for k in keys if k.startswith("_commits/")}
    want = {f"_commits/shard-{s['id']}.json" for s in plan["shards"]}
    if set(markers) != want:
        problems.append(f"commit markers {sorted(set(markers) ^ want)[:5]} differ from the plan's shards")
    named = {m["file"] for m in markers.values()}
    data = {k for k in keys if k.startswith("data/")}
    if data != named:
        problems.append(f"data files not named by a commit marker: {sorted(data - named)[:5]}; named but "
                        f"missing: {sorted(named - data)[:5]}")
    others = {k for k in set(keys) - data - set(markers) if not RUN_RECORD.match(k)}
    if others != {"_plan.json", "_job.json", "_manifest.json", "_SUCCESS"}:
        problems.append(f"objects under {out}: expected the plan, job, manifest, _SUCCESS and run records "
                        f"besides data and markers, found {sorted(others)}")
    if "_manifest.json" in keys:
        m = json.loads(fs.cat_file(f"{bucket}/out/_manifest.json"))
        totals = {"rows": m["rows"], "sum(rows_by_status)": sum(m["rows_by_status"].values()),
                  "sum(files[].rows)": sum(f["rows"] for f in m["files"])}
        res["manifest_totals"] = totals  # (filled in place below when the manifest has per-run records)
        if "runs" in m:  # per-run records (issue 22): every row counted by exactly one run
            totals["sum(runs[].rows)"] = sum(r["rows"] for r in m["runs"])
            if len(m["runs"]) != launches:
                problems.append(f"manifest has {len(m['runs'])} runs entries for {launches} driver launches")
        if set(totals.values()) != {len(ids)}:
            problems.append(f"manifest totals {totals} != {len(ids)} input rows")
    return problems


def _readable(fs, bucket: str) -> pa.Table:
    """The rows of every committed file that can still be read (when read_results itself fails)."""
    tables = [pa.table({"id": pa.array([], pa.string()), "status": pa.array([], pa.string())})]
    for p in fs.ls(f"{bucket}/out/_commits", refresh=True):
        try:
            name = json.loads(fs.cat_file(p))["file"]
            tables.append(pq.read_table(fs.open(f"{bucket}/out/{name}"), columns=["id", "status"]))
        except FileNotFoundError:
            continue
    return pa.concat_tables(tables)


FIGURES = {"rows_in": "rows in", "rows_out": "rows out", "lost": "rows lost", "duplicated": "rows duplicated",
           "rows_by_status": "rows by status", "manifest_totals": "manifest totals", "driver_launches":
           "driver launches", "job_wall_s": "job wall time (s)", "wall_s": "harness wall time (s)"}


def table(res: dict) -> str:  # two Markdown tables: faults injected, then the run's figures
    return "\n".join(["| fault | injected |", "|---|---|",
                      *(f"| {v} | {res['faults'][k]} |" for k, v in KINDS.items()),
                      f"| **total** | **{res['faults_total']}** (minimum {res['faults_min']}) |", "",
                      "| figure | value |", "|---|---|",
                      *(f"| {v} | {res.get(k, '-')} |" for k, v in FIGURES.items()),
                      f"| checks | {'; '.join(res['problems']) or 'all passed'} |"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed first)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--faults", type=int, default=300, help="minimum faults to fire before letting it finish")
    ap.add_argument("--driver-kills", type=int, default=5)
    ap.add_argument("--endpoint", default=None, help="an S3 endpoint (default: start a moto server)")
    ap.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start one)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"seed {seed}", flush=True)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",  # moto's dummies,
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",  # set before Ray
                 "OMP_NUM_THREADS": "1"}.items():  # starts, so its replicas inherit them
        os.environ.setdefault(k, v)
    if not os.environ.get("RAY_TMPDIR"):  # a private Ray directory, away from any other Ray on the box
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="dgbatch-chaos-ray-")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    moto, endpoint = None, args.endpoint
    if endpoint is None:
        from moto.server import ThreadedMotoServer

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        endpoint = "http://{}:{}".format(*moto.get_host_and_port())
    import ray

    if (address := args.ray_address) is None:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
    work = tempfile.mkdtemp(prefix="dgbatch-chaos-")
    try:
        res = run_chaos(seed, args.rows, args.faults, endpoint=endpoint, ray_address=address, workdir=work,
                        driver_kills=args.driver_kills, timeout_s=args.timeout)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if moto is not None:
            moto.stop()
    if not res["problems"]:
        shutil.rmtree(work, ignore_errors=True)
    print(f"seed {seed}: {args.rows} rows, at least {args.faults} faults"
          + (f"; driver logs kept in {work}" if res["problems"] else "") + "\n" + table(res))
    if args.json:
        print(json.dumps(res, indent=1))
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
