"""Pipeline overhead: the whole pipeline (Ray actors, shard reads, Parquet writes, commits) vs the bare loop.

Two models on the same rows and the same job spec (so the same batch size, the default, and shard size),
local files, a local Ray started once (its start-up is reported, not charged):
  stub   : StubBackend with a fixed cost per row (time.sleep);
  engine : the real fast engine on the shipped small model (or the labelled random-weight fallback).
For each: the bare loop (read a shard, generate, in-process, no writes), the pipeline with 1 replica and
with 2, interleaved for --repeats rounds (the order flips every round so drift in machine load hits both
sides); every number printed is the median over the rounds.

What is measured (all from the run's own commit markers, wall-clock on this machine):
  model   = sum over shards of the seconds inside the backend (marker model_s);
  steady  = first shard start -> last commit marker created (marker file mtime), so it includes every
            read, prepare, write, fsync, commit and driver round trip, and the last shard's commit;
  overhead (the target, <= 5% of model time at the default batch size) = (steady - model) / model,
            1 replica: the time the pipeline spends outside the model as a share of model time;
  vs bare = (steady - bare wall) / bare model: the same against the bare loop's own timing;
  one-off = whole run_job wall - steady (plan, Ray actor start, model load, finalize): paid once per
            job / replica, not per row, so reported but not charged.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pipeline_overhead.py [--stub-rows 2048 --stub-cost 0.005]
        [--repeats 3] [--skip-engine]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_PCT = 5.0


def make_input(d: Path, n: int) -> str:
    words = "order refund parcel late broken screen charge twice address password invoice".split()
    prompts = [f"Ticket {i}: my {words[i % len(words)]} issue, please {words[(3 * i) % len(words)]} help"
               for i in range(n)]
    path = d / "in.parquet"
    pq.write_table(pa.table({"prompt": prompts}), path, row_group_size=128)
    return str(path)


def bare(spec_dict: dict, factory) -> dict:
    """The backend over the planned shards in this process: read, prepare, generate; no Ray, no writes."""
    from pipeline.generator import RowGenerator
    from pipeline.shards import list_inputs, plan_shards, read_shard
    from pipeline.spec import JobSpec

    spec = JobSpec.parse(spec_dict)
    gen = RowGenerator(spec, factory(spec))  # model load: not timed (nor is the pipeline's)
    gen.warm_up()  # the same one-off warm-up a replica does at start-up
    shards = plan_shards(list_inputs(spec.input.path), spec.resources.shard_rows)
    t0, model_s, rows = time.perf_counter(), 0.0, 0
    for s in shards:
        got = read_shard(s, gen.input_columns())
        out, st = gen.process(got.table, file_rel=s.file_rel, first_row=s.start, attempt=1,
                              unreadable=got.unreadable)
        model_s += st.model_s
        rows += out.num_rows
    return {"wall": time.perf_counter() - t0, "model_s": model_s, "rows": rows}


def pipeline(spec_dict: dict, factory, out: Path, replicas: int) -> dict:
    from pipeline.executor import run_job

    shutil.rmtree(out, ignore_errors=True)
    d = json.loads(json.dumps(spec_dict))
    d["output"]["path"], d["resources"]["replicas"] = str(out), replicas
    t0 = time.time()
    m = run_job(d, backend_factory=factory, progress=False)
    wall = time.time() - t0
    markers = list((out / "_commits").iterdir())
    commits = [json.loads(p.read_text()) for p in markers]
    model_s = sum(c["model_s"] for c in commits)
    steady = max(p.stat().st_mtime for p in markers) - min(c["started_at"] for c in commits)
    return {"wall": wall, "steady": steady, "model_s": model_s, "rows": m["rows"], "shards": len(commits)}


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure(name: str, spec_dict: dict, factory, tmp: Path, repeats: int) -> float:
    from pipeline.spec import JobSpec

    res = JobSpec.parse({**spec_dict, "output": {"path": str(tmp / "x")}}).resources
    runs: dict[str, list[dict]] = {"bare": [], "p1": [], "p2": []}
    for r in range(repeats):
        order = ["bare", "p1", "p2"] if r % 2 == 0 else ["p2", "p1", "bare"]
        for k in order:
            if k == "bare":
                runs[k].append(bare(spec_dict, factory))
            else:
                runs[k].append(pipeline(spec_dict, factory, tmp / f"{name}-{k}", int(k[1])))
        p1 = runs["p1"][-1]
        print(f"  round {r + 1}/{repeats}: bare {runs['bare'][-1]['wall']:.3f} s, 1 replica steady "
              f"{p1['steady']:.3f} s (model {p1['model_s']:.3f} s, overhead "
              f"{100 * (p1['steady'] - p1['model_s']) / p1['model_s']:.2f}%), 2 replicas steady "
              f"{runs['p2'][-1]['steady']:.3f} s", flush=True)
    b, p1, p2 = runs["bare"], runs["p1"], runs["p2"]
    assert all(x["rows"] == b[0]["rows"] for x in b + p1 + p2), "pipeline and bare saw different rows"
    ovh = [100 * (x["steady"] - x["model_s"]) / x["model_s"] for x in p1]
    vs_bare = [100 * (x["steady"] - y["wall"]) / y["model_s"] for x, y in zip(p1, b)]
    pct, pct_bare = statistics.median(ovh), statistics.median(vs_bare)
    print(f"\n== {name}: {b[0]['rows']} rows, batch_size {res.batch_size}, shard_rows {res.shard_rows} "
          f"({p1[0]['shards']} shards), median of {repeats} interleaved rounds ==")
    print(f"bare loop          : {med(b, 'wall'):8.3f} s  (model {med(b, 'model_s'):.3f} s)")
    print(f"pipeline 1 replica : {med(p1, 'steady'):8.3f} s steady (model {med(p1, 'model_s'):.3f} s; "
          f"outside the model {med(p1, 'steady') - med(p1, 'model_s'):.3f} s); whole run_job "
          f"{med(p1, 'wall'):.3f} s")
    print(f"pipeline 2 replicas: {med(p2, 'steady'):8.3f} s steady; whole run_job {med(p2, 'wall'):.3f} s")
    print(f"one-off per job (plan, actor start, model load, finalize), 1 replica: "
          f"{statistics.median(x['wall'] - x['steady'] for x in p1):.3f} s (not charged)")
    print(f"speed-up 2 replicas vs 1: steady {med(p1, 'steady') / med(p2, 'steady'):.2f}x, whole run "
          f"{med(p1, 'wall') / med(p2, 'wall'):.2f}x")
    print(f"vs bare loop: (steady 1 replica - bare wall) / bare model = {pct_bare:+.2f}%  "
          f"(rounds: {', '.join(f'{v:+.2f}' for v in vs_bare)})")
    print(f"OVERHEAD 1 replica: (steady - model) / model = {pct:.2f}% of model time  "
          f"(rounds: {', '.join(f'{v:.2f}' for v in ovh)}); target <= {TARGET_PCT:.0f}%: "
          f"{'MET' if pct <= TARGET_PCT else 'NOT MET'}")
    return pct


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stub-rows", type=int, default=2048)
    ap.add_argument("--stub-cost", type=float, default=0.005, help="seconds per row")
    ap.add_argument("--engine-rows", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--skip-engine", action="store_true")
    args = ap.parse_args()
    import ray

    from pipeline.backend import EngineBackendFactory, StubBackendFactory

    tmp = Path(tempfile.mkdtemp(prefix="dgbatch-bench-"))
    t0 = time.perf_counter()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s (not charged); cpus={os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    try:
        # Default resources (batch_size, shard_rows) except one CPU per replica.
        base = {"input": {"path": make_input(tmp, args.stub_rows), "prompt_column": "prompt"},
                "output": {"path": ""}, "resources": {"num_cpus_per_replica": 1}}
        measure(f"stub {args.stub_cost * 1000:.1f} ms/row", base,
                StubBackendFactory(cost_per_row_s=args.stub_cost), tmp, args.repeats)
        if not args.skip_engine:
            (tmp / "e").mkdir()
            eng = {"input": {"path": make_input(tmp / "e", args.engine_rows), "prompt_column": "prompt"},
                   "output": {"path": ""}, "generation": {"max_new_tokens": 32, "max_denoising_steps": 8},
                   "resources": {"num_cpus_per_replica": 1, "shard_rows": 16}}
            measure("engine, 32 new tokens", eng, EngineBackendFactory(), tmp, args.repeats)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
