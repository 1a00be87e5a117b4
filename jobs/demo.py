"""`make demo`: run jobs/examples/demo.yaml on a local Ray with local files, then show where the results are,
a few of them, and the throughput. Output goes to ./out/demo (replaced on each run: it is the demo's own)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _clear_previous_demo(out: Path) -> None:
    """Delete an earlier demo's output: only names a job writes (pipeline/prefix.py), never anything else;
    a prefix holding other files is then refused by the run, naming them."""
    from pipeline.prefix import is_ours

    for p in sorted(out.rglob("*"), reverse=True) if out.is_dir() else []:
        if p.is_file() and is_ours(p.relative_to(out).as_posix()):
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pipeline import read_results
    from pipeline.executor import run_job
    from pipeline.model_path import FALLBACK_LABEL, resolve_model_path
    from pipeline.spec import JobSpec

    spec = JobSpec.load(ROOT / "jobs" / "examples" / "demo.yaml")
    data = spec.model_dump(mode="json")
    data["input"]["path"] = str(ROOT / spec.input.path)
    out = Path(os.environ.get("DGBATCH_DEMO_OUT", ROOT / spec.output.path))
    data["output"]["path"] = str(out)
    _clear_previous_demo(out)
    path, label = resolve_model_path(spec.model)
    print(f"model: {path}\n       {label}")
    if label == FALLBACK_LABEL:
        print("       (a RANDOM-WEIGHT model: the texts below are noise; the pipeline is real)")
    t0 = time.time()
    manifest = run_job(data)
    wall = time.time() - t0
    table = read_results(str(out))
    print(f"\nresults: {out}  ({manifest['rows']} rows: {manifest['rows_by_status']})")
    print(f"read them with: python -c \"import pipeline; print(pipeline.read_results('{out}').to_pandas())\"")
    rows = table.to_pylist()
    for row in rows[:4]:
        text = (row["text"] or row["error"] or "").replace("\n", " ")
        print(f"  {row['id']} {row['status']}: {text[:90]}\n        expected: {row['expected']}")
    # The demo data carries the true labels, so show what the constraint and the model achieve together.
    exact = sum(r["status"] == "ok" and json.loads(r["json"]) == json.loads(r["expected"]) for r in rows)
    print(f"\nvalid JSON: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)}; "
          f"exact match with the true labels: {exact}/{len(rows)}")
    print(f"\n{manifest['rows']} rows in {wall:.1f}s = {manifest['rows'] / wall:.2f} rows/s end to end "
          f"(Ray start and model load included; {manifest['tokens']} tokens generated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
