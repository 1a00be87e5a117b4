"""Per-sample overhead of `generation.n`: model time per prompt at n = 1 vs n = 4 (issue 26 point 2).

The pipeline's own path without Ray: `RowGenerator.process` (pipeline/generator.py) with the
`EngineBackend` (pipeline/backend.py) on the shipped small model, CPU, one thread, the same prompts and
spec but `generation.n`. Model time is the generator's `BatchStats.model_s` (seconds inside the backend:
tokenize, one `Engine.run` over every sample of the batch, decode). n = 4 samples of a prompt are 4 rows in
the engine batch, so the target is model time(n=4) <= 4 x model time(n=1) + 5% (ratio <= 4.2). For
reference, n = 1 on the prompts repeated 4 times (as many engine rows as n = 4, each its own row id and
seed) says how much of the ratio is the batch being 4x larger rather than anything per sample.
Interleaved for --repeats rounds (the order flips each round so drift in machine load hits both sides);
medians printed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/samples.py [--prompts 8] [--repeats 3] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DGBATCH_TORCH_THREADS", "1")

import pyarrow as pa  # noqa: E402

from pipeline.backend import EngineBackend  # noqa: E402
from pipeline.generator import RowGenerator  # noqa: E402
from pipeline.spec import JobSpec  # noqa: E402

PROMPTS = ["My parcel never arrived, what now?", "The blender broke after two days.",
           "Can I change my delivery address?", "I was charged twice for one order.",
           "How do I return a gift?", "The app logs me out every hour.",
           "My discount code does not work.", "Where is my refund?"]


STEPS: dict[int, int] = {}  # denoising steps summed over a run's rows, by config (the same every round)


def _model_s(gen: RowGenerator, table: pa.Table, key: int) -> float:
    _, stats = gen.process(table, file_rel="bench.parquet", first_row=0, attempt=0)
    if stats.by_status["error"]:
        raise RuntimeError(f"bench rows failed: {stats.by_status}")
    STEPS[key] = stats.denoising_steps
    return stats.model_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    table = pa.table({"prompt": prompts})

    def spec(n: int) -> JobSpec:
        # batch_size holds every sample, so n = 4 runs as one engine batch as the pipeline runs a shard
        return JobSpec.parse({"input": {"path": "x", "prompt_column": "prompt"}, "output": "o",
                              "generation": {"n": n, "max_tokens": args.max_tokens,
                                             "max_denoising_steps": args.steps, "seed": 0},
                              "resources": {"batch_size": 4 * args.prompts}})

    backend = EngineBackend(spec(1))  # one model; the generator's n is all that differs
    gens = {n: RowGenerator(spec(n), backend) for n in (1, 4)}
    tables = {1: table, 4: table, 0: pa.table({"prompt": prompts * 4})}  # 0: n = 1, 4x the prompts
    gens[0] = gens[1]
    _model_s(gens[4], table, 4)  # warm-up (first-call allocations at the largest batch), not counted
    times: dict[int, list[float]] = {1: [], 4: [], 0: []}
    for r in range(args.repeats):
        for n in ((1, 4, 0) if r % 2 == 0 else (0, 4, 1)):
            times[n].append(_model_s(gens[n], tables[n], n))
    t1, t4, t0 = (statistics.median(times[n]) for n in (1, 4, 0))
    ratio = t4 / t1
    print(f"prompts {args.prompts}, max_tokens {args.max_tokens}, steps {args.steps}, "
          f"repeats {args.repeats}, torch threads {os.environ['DGBATCH_TORCH_THREADS']}")
    print(f"n=1: model {t1:.3f} s ({t1 / args.prompts * 1e3:.1f} ms/prompt), row steps {STEPS[1]}")
    print(f"n=4: model {t4:.3f} s ({t4 / args.prompts * 1e3:.1f} ms/prompt), row steps {STEPS[4]}")
    print(f"n=1 on 4x prompts (as many engine rows as n=4): model {t0:.3f} s, row steps {STEPS[0]}, "
          f"n=4 / that = {t4 / t0:.3f}")
    print(f"ratio n=4 / n=1 = {ratio:.3f} (target <= 4.2: 4x + 5%) -> {'PASS' if ratio <= 4.2 else 'FAIL'}")


if __name__ == "__main__":
    main()
