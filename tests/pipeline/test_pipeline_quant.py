"""`model.quantization` in a job: the shipped small model quantized on load runs end to end exactly once; the
setting is part of the plan fingerprint; a bad combination fails at validate, before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pipeline_helpers import assert_exactly_once, spec, validate_cli, write_prompts

from pipeline import read_results
from pipeline.executor import run_job
from pipeline.model_path import shipped_dir

FP8_QC = {"quant_method": "compressed-tensors", "quantization_status": "compressed", "ignore": [],
          "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float",
                                                                      "strategy": "channel"}}}}


def test_quantized_job_end_to_end_and_fingerprinted(tmp_path, ray_local, capsys):
    write_prompts(tmp_path / "in.parquet", ["My parcel never arrived.", "The blender broke.", "Refund?"])
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), model={"quantization": "w4a16"},
               generation={"max_new_tokens": 16, "max_denoising_steps": 4, "seed": 1},
               resources={"replicas": 1, "shard_rows": 8, "batch_size": 4})
    code, out = validate_cli(tmp_path, job, capsys)
    assert code == 0 and "model.quantization: w4a16" in out, out
    m = run_job(job, progress=False)
    assert_exactly_once(read_results(str(tmp_path / "out")), [f"in.parquet#{i}" for i in range(3)])
    assert m["rows_by_status"]["ok"] == 3
    written = json.loads((tmp_path / "out" / "_job.json").read_text())
    assert written["spec"]["model"]["quantization"] == "w4a16"
    # the same prefix with other weights (unquantized) is another job: refused before any work
    job["model"] = {"quantization": None}
    code, out = validate_cli(tmp_path, job, capsys)
    assert code == 2 and "different job" in out, out


def _model_dir(tmp_path: Path, qc: dict) -> Path:
    d = tmp_path / "model"
    shutil.copytree(shipped_dir(), d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "quantization_config": qc}))
    return d


@pytest.mark.parametrize("qc,quantization,needle", [
    (FP8_QC, "fp8", "already quantized (fp8)"),
    ({**FP8_QC, "quant_method": "modelopt"}, None, "quant_method: 'modelopt'"),
])
def test_validate_refuses_bad_quantization_before_work(tmp_path, capsys, qc, quantization, needle):
    write_prompts(tmp_path / "in.parquet", ["a"])
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
               model={"path": str(_model_dir(tmp_path, qc)), "quantization": quantization})
    code, out = validate_cli(tmp_path, job, capsys)
    assert code == 2 and needle in out, out
    assert not (tmp_path / "out").exists()


def test_spec_accepts_only_on_load_schemes(tmp_path, capsys):
    write_prompts(tmp_path / "in.parquet", ["a"])
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), model={"quantization": "nvfp4"})
    code, out = validate_cli(tmp_path, job, capsys)
    assert code == 2 and "model.quantization" in out, out
