"""No secret is ever written or printed: `pipeline.redact` (what a secret looks like, scrubbing), the job
spec's refusals, and a planting test that puts known secrets through every input a user controls and greps
every byte the job writes, logs or prints for them."""

from __future__ import annotations

import argparse
import json
import os
import secrets as stdlib_secrets
import string
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_helpers import spec, write_prompts

from pipeline.redact import (
    REDACTED,
    env_secrets,
    is_auth_header,
    is_credential_name,
    scrub,
    scrub_json,
    url_credentials,
)
from pipeline.spec import JobSpec, SpecError

ROOT = Path(__file__).resolve().parents[2]


def _planted(tag: str, n: int = 20) -> str:
    """A distinct secret-looking value: tag + random letters and digits (digits included: see _BEARER)."""
    body = "".join(stdlib_secrets.choice(string.ascii_letters + string.digits) for _ in range(n))
    return f"{tag}{body}9"


def _akia() -> str:
    return "AKIA" + "".join(stdlib_secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


# -- scrub: what is redacted ----------------------------------------------------------------------------
@pytest.mark.parametrize("template, expected", [
    ("endpoint http://KEY:{s}@minio:9000/bucket failed", "endpoint http://***@minio:9000/bucket failed"),
    ("s3://AKIDX:{s}@bucket/key", "s3://***@bucket/key"),
    ("header Authorization: Bearer {s}", "header Authorization: ***"),
    ("{{'Authorization': 'AWS4-HMAC-SHA256 Credential=x, Signature={s}'}}", "{'Authorization': '***'}"),
    ('{{"Proxy-Authorization": "Basic {s}"}}', '{"Proxy-Authorization": "***"}'),
    ("Cookie: session={s}; other=1", "Cookie: ***"),
    ("x-api-key={s}", "x-api-key=***"),
    ("token is Bearer {s}.", "token is Bearer ***"),
    ("login with Basic {s}", "login with Basic ***"),
    ("aws_secret_access_key = {s}", "aws_secret_access_key = ***"),
    ("AWS_SESSION_TOKEN={s} next", "AWS_SESSION_TOKEN=*** next"),
    ('{{"password": "{s}", "user": "bob"}}', '{"password": "***", "user": "bob"}'),
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={s};EndpointSuffix=x",
     "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=x"),
    ("GET https://b.s3.amazonaws.com/k?X-Amz-Credential={s}&X-Amz-Signature={s}&X-Amz-Security-Token={s}&n=1",
     "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&n=1"),
    ("https://acct.blob.core.windows.net/c/b?sv=2022&sig={s}&se=2030", "https://acct.blob.core.windows.net/c/b"
     "?sv=2022&sig=***&se=2030"),
    ("https://api.example.com/v1?access_token={s}", "https://api.example.com/v1?access_token=***"),
    ("https://h/x?a=1&amp;token={s}", "https://h/x?a=1&amp;token=***"),  # as html.escape leaves it
    ("-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----", "***"),
])
def test_scrub_redacts_secret_shapes(template, expected):
    s = _planted("sEcR")
    text = template.format(s=s)
    assert scrub(text) == expected
    assert s not in scrub(text)
    assert scrub(scrub(text)) == scrub(text)  # idempotent: records can be scrubbed more than once


def test_scrub_redacts_token_shapes_anywhere():
    akia, asia = _akia(), "ASIA" + _akia()[4:]
    google, github = "AIza" + "x" * 35, "ghp_" + "a1" * 18
    text = f"key id {akia}, temp {asia}; google {google} gh {github}"
    out = scrub(text)
    assert all(t not in out for t in (akia, asia, google, github)), out
    assert out == "key id ***, temp ***; google *** gh ***"


def test_scrub_redacts_values_of_secret_environment_variables(monkeypatch):
    s1, s2, s3 = _planted("env1"), _planted("env2"), _planted("env3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s1)
    monkeypatch.setenv("RAY_AUTH_TOKEN", s2)
    monkeypatch.setenv("MY_SERVICE_PASSWORD", s3)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "short")  # under 8 characters: would blank ordinary words
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-ish-value")  # a tokenizer switch, not a secret
    monkeypatch.setenv("DGBATCH_PLAIN_SETTING", "plain-value-123")
    out = scrub(f"boto said {s1} / {s2} and {s3}: short false-ish-value plain-value-123")
    assert out == "boto said *** / *** and ***: short false-ish-value plain-value-123"
    assert set(env_secrets()) >= {s1, s2, s3}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s1 + "X")  # a changed value is seen at once
    assert scrub(f"now {s1}X") == "now ***"


# -- scrub: what is left alone ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "s3://bucket/key/part-0001.parquet",
    "s3://bucket/data@2024/part-0.parquet",  # '@' in a path is not user info
    "https://host.example.com/path/file.parquet?versionId=3&x=1",
    "http://127.0.0.1:9000",
    "in.parquet#12 row 12: prompt column 'prompt' is null",
    '{"tokens": 8, "tokens_per_s": 12.5, "max_new_tokens": 64, "pad_token": 0}',
    "generation.max_new_tokens=64, eos token 1",
    "mail alice@example.com about it",  # e-mail in prose: not a credential, left as is
    "basic settings apply; the bearer of this letter; Asia/Tokyo",
    "stub backend asked to fail on row in.parquet#3",
    "",
])
def test_scrub_leaves_ordinary_text_alone(text):
    assert scrub(text) == text


def test_scrub_returns_a_text_without_triggers_untouched():
    line = '{"ts": "2024-01-01T00:00:00.000+00:00", "level": "info", "msg": "shard committed", "rows": 4}'
    assert scrub(line) is line  # the fast path: no pattern ran, no copy was made


def test_scrub_json_scrubs_strings_and_blanks_credential_named_keys():
    s = _planted("js")
    obj = {"spec": {"input": {"template": f"Use Bearer {s} for {{prompt}}"},
                    "options": {"headers": {"Authorization": s, "User-Agent": "dg"}, "password": s,
                                "X-Goog-Api-Key": s, "nothing": None}},
           "files": [f"http://u:{s}@h/x", 3, 2.5, True, None], "tokens": 7, "max_new_tokens": 5}
    before = json.dumps(obj)
    out = scrub_json(obj)
    assert json.dumps(obj) == before  # the input is not modified
    assert s not in json.dumps(out)
    assert out["spec"]["input"]["template"] == "Use Bearer *** for {prompt}"
    assert out["spec"]["options"]["headers"] == {"Authorization": REDACTED, "User-Agent": "dg"}
    assert out["spec"]["options"]["password"] == REDACTED
    assert out["spec"]["options"]["X-Goog-Api-Key"] == REDACTED
    assert out["spec"]["options"]["nothing"] is None
    assert out["files"] == ["http://***@h/x", 3, 2.5, True, None]
    assert out["tokens"] == 7 and out["max_new_tokens"] == 5


def test_names_and_urls():
    for name in ("Authorization", "proxy-authorization", "Cookie", "X-Amz-Security-Token", "x-api-key",
                 "api_key", "apikey", "X-Goog-Api-Key", "aws_secret_access_key", "secret", "token",
                 "connection_string", "client_secret", "SSECustomerKey"):
        assert is_credential_name(name), name
    for name in ("tokens", "max_new_tokens", "endpoint_url", "region_name", "signature_version", "anon",
                 "User-Agent", "client_kwargs", "SSEKMSKeyId"):
        assert not is_credential_name(name), name
    assert is_auth_header("X-Auth-User") and is_auth_header("X-Session-Id") and not is_auth_header("Accept")
    assert url_credentials("https://u:p@host/x") == "user info (user:password@)"
    assert url_credentials("https://u@host/x") == "user info (user:password@)"
    assert url_credentials("s3://b/k?X-Amz-Signature=abc") == "query parameter 'X-Amz-Signature'"
    assert url_credentials("https://a.blob.core.windows.net/c?sig=abc&sv=1") == "query parameter 'sig'"
    for ok in ("s3://bucket/in/part-?.parquet", "/data/run@2024/x", "s3://b/data@v2/x", "http://h:9000",
               "https://h/x?versionId=1", "relative/path"):
        assert url_credentials(ok) is None, ok


def test_log_lines_are_scrubbed_and_stay_json():
    import io

    from pipeline.logs import get_logger

    s = _planted("log")
    stream = io.StringIO()
    log = get_logger("secrets-test", stream=stream).bind(shard="s1", attempt=1)
    log.warning("PUT https://b.s3.amazonaws.com/k?X-Amz-Signature=%s failed", s,
                extra={"url": f"http://u:{s}@h", "headers": {"Authorization": f"Bearer {s}"}, "tokens": 4})
    try:
        raise RuntimeError(f"Authorization: Bearer {s}")
    except RuntimeError:
        log.exception("shard failed")
    text = stream.getvalue()
    assert s not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["msg"] == "PUT https://b.s3.amazonaws.com/k?X-Amz-Signature=*** failed"
    assert first["url"] == "http://***@h" and first["headers"]["Authorization"] == REDACTED
    assert first["tokens"] == 4 and first["shard"] == "s1"
    assert "RuntimeError: Authorization: ***" in second["exc"]


def test_cli_prints_unexpected_errors_as_a_scrubbed_traceback(monkeypatch, capsys, tmp_path):
    from jobs import cmd_report, cmd_status

    s = _planted("cli")

    def boom(*args, **kwargs):
        raise RuntimeError(f"cannot reach https://b.s3.amazonaws.com/x?X-Amz-Signature={s}")
    monkeypatch.setattr("pipeline.sink.status", boom)
    monkeypatch.setattr("pipeline.report.write_report", boom)
    assert cmd_status.run(argparse.Namespace(output=str(tmp_path), endpoint_url=None, json=False)) == 1
    assert cmd_report.run(argparse.Namespace(out=str(tmp_path), endpoint_url=None, report_dir=None)) == 1
    got = capsys.readouterr()
    assert s not in got.out + got.err
    assert "Traceback" in got.err and "dgbatch status: failed: RuntimeError" in got.err
    reach = "cannot reach https://b.s3.amazonaws.com/x?X-Amz-Signature=***"
    assert f"dgbatch report: failed: RuntimeError: {reach}" in got.err


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
