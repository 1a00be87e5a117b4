"""`pipeline.redact`: what a secret looks like and how text, JSON, log lines and tracebacks are scrubbed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from pipeline_helpers import akia_key as _akia
from pipeline_helpers import planted_secret as _planted

from pipeline.redact import (
    REDACTED,
    env_secrets,
    is_auth_header,
    is_credential_name,
    scrub,
    scrub_json,
    url_credentials,
)

ROOT = Path(__file__).resolve().parents[2]


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
