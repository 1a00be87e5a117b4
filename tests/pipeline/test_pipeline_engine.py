"""The one end-to-end run with the real engine: the shipped small model (or the labelled random fallback)."""

from __future__ import annotations

import json

from pipeline_helpers import assert_exactly_once, spec, write_prompts

from pipeline import read_results
from pipeline.executor import run_job


def test_engine_end_to_end(tmp_path, ray_local):
    prompts = ["My parcel never arrived, what now?", None, "The blender broke after two days.",
               "word " * 140_000, "Can I change my delivery address?"]
    write_prompts(tmp_path / "in.parquet", prompts)
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
               generation={"max_new_tokens": 16, "max_denoising_steps": 4, "seed": 1},
               resources={"replicas": 1, "shard_rows": 8, "batch_size": 4})
    m = run_job(job, progress=False)
    t = read_results(str(tmp_path / "out"))
    assert_exactly_once(t, [f"in.parquet#{i}" for i in range(5)])
    rows = {r["id"]: r for r in t.to_pylist()}
    assert "prompt too long" in rows["in.parquet#3"]["error"] and "is null" in rows["in.parquet#1"]["error"]
    for i in (0, 2, 4):
        r = rows[f"in.parquet#{i}"]
        assert r["status"] == "ok" and r["num_tokens"] >= 1
        assert r["denoising_steps"] >= 1 and r["canvases"] >= 1
    assert m["rows_by_status"] == {"ok": 3, "invalid": 0, "error": 2} and m["tokens"] > 0
    label = json.loads((tmp_path / "out" / "_job.json").read_text())["model"]["label"]
    assert "shipped" in label or "RANDOM-WEIGHT" in label
