"""No secret is ever written or printed: the job spec's refusals, and a planting test that puts known secrets
through every input a user controls and greps every byte the job writes, logs or prints for them (what a
secret looks like and how it is scrubbed: tests/pipeline/test_pipeline_redact.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_helpers import akia_key as _akia
from pipeline_helpers import planted_secret as _planted
from pipeline_helpers import spec, write_prompts

from pipeline.spec import JobSpec, SpecError

ROOT = Path(__file__).resolve().parents[2]


# -- (a) the spec refuses credentials, and never echoes them ---------------------------------------------
def _refused_cases() -> list[tuple[str, dict, str]]:
    """(name, spec overrides, secret): each override alone makes the spec invalid."""
    cases = []

    def add(name: str, build) -> None:
        s = _planted(name[:4])
        cases.append((name, build(s), s))
    add("endpoint_userinfo", lambda s: {"storage": {"endpoint_url": f"http://KEYID:{s}@minio:9000"}})
    add("endpoint_no_scheme", lambda s: {"storage": {"endpoint_url": f"KEYID:{s}@minio:9000"}})
    add("auth_header", lambda s: {"storage": {"options": {"headers": {"Authorization": f"Bearer {s}"}}}})
    add("nested_header", lambda s: {"storage": {"options": {"client_kwargs": {"headers": {"X-Auth": s}}}}})
    add("header_value", lambda s: {"storage": {"options": {"headers": {"X-Custom": f"Bearer {s}"}}}})
    add("header_pairs", lambda s: {"storage": {"options": {"headers": [["Cookie", s]]}}})
    add("cookie", lambda s: {"storage": {"options": {"Cookie": s}}})
    add("goog_key", lambda s: {"storage": {"options": {"X-Goog-Api-Key": s}}})
    add("amz_token", lambda s: {"storage": {"options": {"sse": {"X-Amz-Security-Token": s}}}})
    add("option_url", lambda s: {"storage": {"options": {"client_kwargs": {"endpoint_url": f"http://{s}@h"}}}})
    add("secret_key", lambda s: {"storage": {"options": {"secret": s}}})
    add("input_userinfo", lambda s: {"input": {"path": f"s3://AKID:{s}@bucket/in/"}})
    add("input_signed", lambda s: {"input": {"path": f"https://b.s3.amazonaws.com/in.parquet?X-Amz-Signature={s}"}})
    add("input_sas", lambda s: {"input": {"path": f"abfs://c/in.parquet?sv=1&sig={s}"}})
    add("output_userinfo", lambda s: {"output": {"path": f"s3://u:{s}@bucket/out"}})
    add("output_token", lambda s: {"output": {"path": f"gs://b/out?access_token={s}"}})
    add("model_userinfo", lambda s: {"model": {"path": f"https://u:{s}@models.example.com/dg"}})
    add("model_shorthand", lambda s: {"model": f"hf://u:{s}@host/dg"})
    add("model_not_a_path", lambda s: {"model": [f"http://u:{s}@h"]})
    add("schema_url", lambda s: {"structured_output": {"json_schema": f"https://u:{s}@h/schema.json"}})
    add("schema_signed", lambda s: {"structured_output": {"json_schema": f"https://h/s.json?token={s}"}})
    return cases


_FIELD = {"endpoint": "storage.endpoint_url", "auth": "storage.options.headers.Authorization",
          "nest": "storage.options.client_kwargs.headers.X-Auth", "head": "storage.options.headers",
          "cook": "storage.options.Cookie", "goog": "storage.options.X-Goog-Api-Key",
          "amz_": "storage.options.sse.X-Amz-Security-Token",
          "opti": "storage.options.client_kwargs.endpoint_url", "secr": "storage.options.secret",
          "inpu": "input.path", "outp": "output.path", "mode": "model",
          "sche": "structured_output.json_schema"}


@pytest.mark.parametrize("name, overrides, secret", _refused_cases(), ids=[c[0] for c in _refused_cases()])
def test_spec_refuses_credentials_naming_the_field_never_the_value(name, overrides, secret):
    with pytest.raises(SpecError) as info:
        JobSpec.parse(spec("in.parquet", "out", **overrides))
    msg = str(info.value)
    assert secret not in msg, msg
    field = next(v for k, v in _FIELD.items() if name.startswith(k))
    assert field in msg, msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # pydantic's error is not chained


def test_spec_syntax_errors_do_not_quote_the_offending_line(tmp_path):
    s = _planted("yml")
    p = tmp_path / "job.yaml"
    p.write_text(f"input: {{path: x, prompt_column: p}}\noutput: {{path: o}}\n"
                 f"storage: {{endpoint_url: http://k:{s}@h, options: [unclosed\n")
    with pytest.raises(SpecError, match=r"job\.yaml: not valid YAML: .*line \d+, column \d+") as info:
        JobSpec.load(p)
    assert s not in str(info.value) and info.value.__cause__ is None
    j = tmp_path / "job.json"
    j.write_text('{"storage": {"endpoint_url": "http://k:' + s + '@h"}, ')
    with pytest.raises(SpecError, match=r"job\.json: not valid JSON") as info:
        JobSpec.load(j)
    assert s not in str(info.value)


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "jobs.cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=cwd, env=env)


def test_cli_refuses_a_spec_with_credentials_and_writes_nothing(tmp_path):
    cases = _refused_cases()
    plant = {name: s for name, _, s in cases}
    out = tmp_path / "out"
    job = {"model": {"path": f"https://u:{plant['model_userinfo']}@models.example.com/dg"},
           "input": {"path": f"s3://AKID:{plant['input_userinfo']}@bucket/in/", "prompt_column": "prompt"},
           "output": {"path": str(out)},
           "structured_output": {"json_schema": f"https://u:{plant['schema_url']}@h/schema.json"},
           "storage": {"endpoint_url": f"http://KEYID:{plant['endpoint_userinfo']}@minio:9000",
                       "options": {"headers": {"Authorization": f"Bearer {plant['auth_header']}"}}}}
    used = [job["model"]["path"], job["input"]["path"], job["structured_output"]["json_schema"],
            job["storage"]["endpoint_url"], job["storage"]["options"]["headers"]["Authorization"]]
    planted = [s for s in plant.values() if any(s in u for u in used)]
    assert len(planted) == 5
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    (tmp_path / "job.json").write_text(json.dumps(job))
    for command in ("validate", "run"):
        for name in ("job.yaml", "job.json"):
            res = _run_cli(command, str(tmp_path / name), cwd=tmp_path)
            both = res.stdout + res.stderr
            assert res.returncode == 2, both
            for field in ("model.path", "input.path", "structured_output.json_schema", "storage.endpoint_url",
                          "storage.options.headers.Authorization"):
                assert field in res.stderr, res.stderr
            leaked = [s for s in planted if s in both]
            assert not leaked, both
            assert not out.exists(), f"dgbatch {command} {name} wrote under OUT"


# -- null sections -------------------------------------------------------------------------------------
# (in test_pipeline_units.py: test_spec_null_section_means_the_default)


# -- (b) an accepted job: nothing secret-shaped reaches any byte written, logged or printed --------------
def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def _leaks(secrets: dict[str, str], where: str, data: bytes, found: list[str]) -> None:
    for name, value in secrets.items():
        if value.encode() in data:
            found.append(f"{name} in {where}")


@pytest.fixture
def planted_env(aws_env, monkeypatch) -> dict[str, str]:
    """AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN set to planted values (moto accepts any). Requested before
    `ray_local`, so a Ray started by this test hands them to the replicas too."""
    values = {"env_secret_key": _planted("envk"), "env_session_token": _planted("envt")}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", values["env_secret_key"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", values["env_session_token"])
    return values


def test_planted_secrets_never_reach_outputs_logs_or_prints(tmp_path, planted_env, bucket, s3_endpoint,
                                                            ray_local, capfd):
    """The whole job, end to end, with secrets planted where the spec accepts them.

    Planted: (1) `input.template` free text carrying `Authorization: Bearer <s>` (the template is in the spec
    dump and in the plan's fingerprint components); (2) a storage option value shaped like an AWS key id
    under a non-secret name (`config_kwargs.user_agent_extra`); (3) AWS_SECRET_ACCESS_KEY and
    AWS_SESSION_TOKEN in the environment (moto takes any); (4) a backend error quoting a signed URL, a
    bearer token, a key id and the environment's secret key (the stub-like backend below raises it on rows
    marked __LEAK__; that row's prompt is never echoed because it fails). Prompts are long, so the stub's
    40-character echo of the prompt into `text` stops before the template's secret.
    Where a leak is found, the assertion names the file: OUT/_job.json and OUT/_report are written through
    pipeline/spec.py (public_dict) and pipeline/report/page.py; data files, markers, _plan.json,
    _manifest.json and the progress lines through pipeline/sink.py, plan.py, executor.py and outputs.py.
    """
    from jobs import cmd_report, cmd_status
    from pipeline.backend import StubBackendFactory
    from pipeline.executor import run_job
    from pipeline.report import write_report

    planted = {"template_bearer": _planted("tpl"), "option_akia": _akia(), **planted_env,
               "error_signature": _planted("sig"), "error_bearer": _planted("brr"), "error_akia": _akia()}
    # The error also quotes the environment's secret key: only its value says it is one (scrub by value).
    leak_error = (f"upstream 403 (secret {planted['env_secret_key']}) for https://b.s3.amazonaws.com/k"
                  f"?X-Amz-Credential={planted['error_akia']}&X-Amz-Signature={planted['error_signature']} "
                  f"Authorization: Bearer {planted['error_bearer']}")

    class LeakyStub:  # defined here so Ray ships it by value to the replica
        def __init__(self, message: str):
            self.message, self.stub = message, StubBackendFactory(cost_per_row_s=0.0)

        def __call__(self, job):
            inner, message = self.stub(job), self.message

            class Backend:
                def generate(self, rows):
                    if any("__LEAK__" in (r.prompt or "") for r in rows):
                        raise RuntimeError(message)
                    return inner.generate(rows)
            return Backend()

    prompts = [f"ticket {i}: my parcel has not arrived and nobody answers the phone" for i in range(8)]
    prompts[5] = "__LEAK__ " + prompts[5]
    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    write_prompts(f"{bucket}/in/p.parquet", prompts, storage_options=opts)
    out = tmp_path / "out"
    job = spec(f"{bucket}/in/", str(out), resources={"replicas": 1},
               input={"prompt_column": None,
                      "template": "{prompt} -- internal note: Authorization: Bearer "
                                  + planted["template_bearer"]},
               storage={"endpoint_url": s3_endpoint,
                        "options": {"config_kwargs": {"user_agent_extra": planted["option_akia"]}}})
    manifest = run_job(job, backend_factory=LeakyStub(leak_error), progress=True)
    assert manifest["rows_by_status"]["error"] == 1 and manifest["rows"] == 8
    write_report(str(out))
    assert cmd_status.run(argparse.Namespace(output=str(out), endpoint_url=None, json=True)) == 0
    assert cmd_status.run(argparse.Namespace(output=str(out), endpoint_url=None, json=False)) == 0
    assert cmd_report.run(argparse.Namespace(out=str(out), endpoint_url=None, report_dir=None)) == 0
    printed = capfd.readouterr()

    # The planted secrets did reach the job (else the greps below prove nothing).
    results = {}
    for p in (out / "data").glob("*.parquet"):
        results.update({r["id"]: r for r in pq.read_table(p).to_pylist()})
    assert results["p.parquet#5"]["status"] == "error" and results["p.parquet#5"]["error"]
    assert "p.parquet#5" in results["p.parquet#5"]["error"]  # still names the row after scrubbing

    found: list[str] = []
    for p in _files_under(out):
        _leaks(planted, str(p.relative_to(out)), p.read_bytes(), found)
        if p.suffix == ".parquet":  # compressed on disk: the decoded cells too
            _leaks(planted, f"{p.relative_to(out)} (decoded)", json.dumps(pq.read_table(p).to_pylist(),
                                                                            default=str).encode(), found)
    ray_dir = Path(os.environ["RAY_TMPDIR"])
    for p in _files_under(ray_dir):
        if p.stat().st_size < 64 << 20:
            _leaks(planted, f"Ray logs {p.relative_to(ray_dir)}", p.read_bytes(), found)
    _leaks(planted, "stdout", printed.out.encode(), found)
    _leaks(planted, "stderr", printed.err.encode(), found)
    report = (out / "_report" / "index.html").read_text()
    assert "Authorization: ***" in report and "X-Amz-Signature=***" in report  # spec and error are shown
    assert not found, "planted secrets leaked:\n  " + "\n  ".join(sorted(found))
