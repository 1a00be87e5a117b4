"""Pipeline overhead: the whole pipeline (Ray actors, shard reads, Parquet writes, commits) vs the bare loop.

Two models on the same rows, local files, a local Ray started once (its start-up is reported, not charged):
  stub   : StubBackend with a fixed cost per row (time.sleep), default batch size, default shard size;
  engine : the real fast engine on the shipped small model (or the labelled random-weight fallback).
For each: bare loop (the backend called in-process on the same shards), pipeline with 1 replica, with 2.
Overhead = (pipeline wall - bare wall) / bare wall at 1 replica; the per-shard replica overhead
(commit duration_s - model_s, i.e. read + prepare + write + commit) is reported as a share of model time.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pipeline_overhead.py [--stub-rows 2048 --stub-cost 0.005]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_input(d: Path, n: int) -> str:
    words = "order refund parcel late broken screen charge twice address password invoice".split()
    prompts = [f"Ticket {i}: my {words[i % len(words)]} issue, please {words[(3 * i) % len(words)]} help"
               for i in range(n)]
    path = d / "in.parquet"
    pq.write_table(pa.table({"prompt": prompts}), path, row_group_size=128)
    return str(path)


def bare(spec_dict: dict, factory) -> tuple[float, float]:
    """(wall, model seconds) of the backend over the planned shards in this process (after load)."""
    from pipeline.generator import RowGenerator
    from pipeline.shards import list_inputs, plan_shards, read_shard
    from pipeline.spec import JobSpec

    spec = JobSpec.parse(spec_dict)
    gen = RowGenerator(spec, factory(spec))
    shards = plan_shards(list_inputs(spec.input.path), spec.resources.shard_rows)
    t0, model_s = time.perf_counter(), 0.0
    for s in shards:
        table = read_shard(s, gen.input_columns())
        _, st = gen.process(table, file_rel=s.file_rel, first_row=s.start, attempt=1)
        model_s += st.model_s
    return time.perf_counter() - t0, model_s


def pipeline(spec_dict: dict, factory, out: Path, replicas: int) -> dict:
    from pipeline.executor import run_job

    shutil.rmtree(out, ignore_errors=True)
    d = json.loads(json.dumps(spec_dict))
    d["output"]["path"], d["resources"]["replicas"] = str(out), replicas
    t0 = time.perf_counter()
    m = run_job(d, backend_factory=factory, progress=False)
    wall = time.perf_counter() - t0
    commits = [json.loads(p.read_text()) for p in (out / "_commits").iterdir()]
    model_s = sum(c["model_s"] for c in commits)
    replica_overhead = sum(c["duration_s"] - c["model_s"] for c in commits)
    # Steady state: first shard start to last shard finish (actor start-up and model load excluded).
    steady = max(c["finished_at"] for c in commits) - min(c["started_at"] for c in commits)
    return {"wall": wall, "steady": steady, "model_s": model_s, "replica_overhead_s": replica_overhead,
            "rows": m["rows"]}


def report(name: str, b: tuple[float, float], p1: dict, p2: dict) -> None:
    bw, bm = b
    print(f"\n== {name} ==")
    print(f"bare loop          : {bw:8.2f} s  (model {bm:.2f} s)")
    share = 100 * p1["replica_overhead_s"] / max(1e-9, p1["model_s"])
    print(f"pipeline 1 replica : {p1['wall']:8.2f} s  (model {p1['model_s']:.2f} s, per-shard replica "
          f"overhead {p1['replica_overhead_s']:.3f} s = {share:.2f}% of model time)")
    print(f"pipeline 2 replicas: {p2['wall']:8.2f} s")
    print(f"steady state (first shard start -> last commit): 1 replica {p1['steady']:.2f} s, "
          f"2 replicas {p2['steady']:.2f} s")
    print(f"overhead, steady 1 replica vs bare: {100 * (p1['steady'] - bw) / bw:+.2f}%;  whole run incl. "
          f"Ray actor start + model load: {100 * (p1['wall'] - bw) / bw:+.2f}%")
    print(f"speed-up 2 replicas vs 1: steady {p1['steady'] / p2['steady']:.2f}x, "
          f"whole run {p1['wall'] / p2['wall']:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stub-rows", type=int, default=2048)
    ap.add_argument("--stub-cost", type=float, default=0.005, help="seconds per row")
    ap.add_argument("--engine-rows", type=int, default=48)
    ap.add_argument("--skip-engine", action="store_true")
    args = ap.parse_args()
    import ray

    from pipeline.backend import EngineBackendFactory, StubBackendFactory

    tmp = Path(tempfile.mkdtemp(prefix="dgbatch-bench-"))
    t0 = time.perf_counter()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s (not charged); cpus={os.cpu_count()}")
    try:
        base = {"input": {"path": make_input(tmp, args.stub_rows), "prompt_column": "prompt"},
                "output": {"path": ""}, "resources": {"num_cpus_per_replica": 1}}
        stub = StubBackendFactory(cost_per_row_s=args.stub_cost)
        b = bare(base, stub)
        report(f"stub: {args.stub_rows} rows x {args.stub_cost * 1000:.1f} ms, batch_size 16, shard_rows 256",
               b, pipeline(base, stub, tmp / "o1", 1), pipeline(base, stub, tmp / "o2", 2))
        if not args.skip_engine:
            (tmp / "e").mkdir()
            eng = {"input": {"path": make_input(tmp / "e", args.engine_rows), "prompt_column": "prompt"},
                   "output": {"path": ""}, "generation": {"max_new_tokens": 32, "max_denoising_steps": 8},
                   "resources": {"num_cpus_per_replica": 1, "shard_rows": 16}}
            factory = EngineBackendFactory()
            b = bare(eng, factory)
            report(f"engine: {args.engine_rows} rows, 32 new tokens, batch_size 16, shard_rows 16", b,
                   pipeline(eng, factory, tmp / "e1", 1), pipeline(eng, factory, tmp / "e2", 2))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
