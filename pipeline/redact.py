"""What a secret looks like, and the scrubbing that keeps one out of everything the pipeline writes or logs.

Owns two things. (1) The shapes the job spec refuses outright (`url_credentials`, `is_credential_name`,
`is_auth_header`): credentials come from the environment or the credential chain only. (2) The second line
of defence, for text the spec check cannot see (error messages from libraries, free-text spec fields, the
environment): `scrub(text)` replaces secret-shaped substrings with `***` and `scrub_json(obj)` does that to
every string in a JSON-like object and blanks the values of credential-named keys.

What `scrub` redacts (and what it leaves alone on purpose):
- URL userinfo: `https://user:pass@host` -> `https://***@host` (only after `scheme://`; an e-mail address
  in prose, `alice@example.com`, is left alone: it is not a credential and is common in ordinary text);
- the token after `Bearer` (any case), and after `Basic` unless it is an ordinary lower-case word;
- the value of `Authorization:` / `Proxy-Authorization:` / `Cookie:` / `X-Api-Key:` / ... headers, and of
  credential assignments such as `aws_secret_access_key = ...`, `"password": "..."`, `AccountKey=...`;
- signed-URL query values: X-Amz-Signature/Credential/Security-Token, X-Goog-Signature/Credential, SAS
  `sig`, `token`, `access_token`, `Signature`, `AWSAccessKeyId`, `api_key` (the parameter name is kept);
- AWS access key ids (AKIA/ASIA + 16), Google API keys (AIza + 35), GitHub tokens (ghp_ ...), PEM private
  key blocks;
- the exact value of every environment variable whose name says it is a secret (SECRET, TOKEN, PASSWORD,
  PASSWD, CREDENTIAL, API_KEY, ACCESS_KEY; e.g. AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, RAY_AUTH_TOKEN),
  when it is at least 8 characters long (shorter values, like moto's "testing", would blank ordinary words).
Left alone: ordinary URLs (`s3://bucket/key`, `https://host/path?x=1`), row ids (`file.parquet#12`), and
field names such as `max_new_tokens` or `"tokens": 8`.

Speed: a few substring tests decide whether a text can hold a pattern at all, so a line without one costs
microseconds; the environment's secret names are cached (tests/pipeline/test_pipeline_secrets.py).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

REDACTED = "***"

# -- names ---------------------------------------------------------------------------------------------
# Option / header / field names that hold a credential, normalised (lower case, '-' -> '_').
_CREDENTIAL_NAMES = frozenset({
    "key", "secret", "token", "password", "passwd", "pwd", "auth", "sig", "signature", "credentials",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_security_token", "access_key",
    "secret_key", "session_token", "account_key", "sas_token", "sas", "connection_string",
    "authorization", "proxy_authorization", "cookie", "set_cookie", "x_api_key", "api_key", "apikey",
    "x_amz_security_token", "security_token", "access_token", "refresh_token", "id_token", "client_secret",
    "private_key",
})
_CREDENTIAL_NAME_PART = re.compile(
    r"secret|passw|credential|access_key|session_token|security_token|auth_token|access_token|refresh_token"
    r"|api_?key|private_key|account_?key|customer_?key|sas_token|authoriz|cookie|^x_goog_.*key$")
# Under a `headers` mapping any name that says one of these carries a credential.
_AUTH_HEADER_PART = re.compile(r"auth|token|key|secret|cookie|passw|credential|signature|session", re.I)

# Query parameters of signed / token-bearing URLs (pre-signed S3 and GCS URLs, Azure SAS, OAuth).
SECRET_QUERY_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
    "signature", "awsaccesskeyid", "sig", "token", "access_token", "refresh_token", "id_token", "api_key",
    "apikey", "password",
})

# Environment variable names whose values are secrets.
_ENV_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY", re.I)
_ENV_NOT_SECRET = re.compile(r"TOKENIZER", re.I)  # TOKENIZERS_PARALLELISM=false is no secret
_ENV_MIN_LEN = 8


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def is_credential_name(name: str) -> bool:
    """Whether a key (storage option, header, log field, JSON key) names a credential."""
    n = _norm(name)
    return n in _CREDENTIAL_NAMES or bool(_CREDENTIAL_NAME_PART.search(n))


def is_auth_header(name: str) -> bool:
    """Whether an HTTP header name (under a `headers` option) carries authentication."""
    return is_credential_name(name) or bool(_AUTH_HEADER_PART.search(str(name)))


def url_credentials(url: str) -> str | None:
    """What credential a URL carries ("user info (user:password@)" or "query parameter X"), else None.

    Only `scheme://` URLs are looked at: a local path may contain '@' or '?' (a glob) legitimately.
    The answer never contains the secret itself, so it can go into an error message.
    """
    if not isinstance(url, str) or "://" not in url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if "@" in parts.netloc:
        return "user info (user:password@)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in SECRET_QUERY_PARAMS:
            return f"query parameter {name!r}"
    return None


# -- text patterns -------------------------------------------------------------------------------------
# Cheap pre-check: a text whose lower-case form holds none of these cannot match any pattern below
# (substring tests are ~10x faster than one regex alternation over the same words).
_TRIGGERS = ("@", "-----begin", "bearer", "basic", "authoriz", "cookie", "api", "secret", "passw", "token",
             "credential", "signature", "sig=", "accountkey", "account_key", "private_key", "sharedaccess",
             "awsaccesskeyid", "akia", "asia", "aiza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_")

_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@\"'<>]+@")
_QUERY = re.compile(r"(?i)((?:[?&;]|&amp;)(?:" + "|".join(re.escape(p) for p in sorted(SECRET_QUERY_PARAMS))
                    + r")=)[^&\s\"'#<>]+")
# Header-style names: after ':' the value runs to the end of the line (an Authorization value has spaces
# and commas); after '=' (a query or an assignment) it ends at the next delimiter, like the names below.
_HEADER_NAMES = r"(?:proxy-)?authorization|set-cookie|cookie|x-api-key|x-amz-security-token|x-goog-api-key"
_ASSIGN_NAMES = (
    _HEADER_NAMES + r"|aws_secret_access_key|aws_session_token|aws_security_token|secret_access_key"
    r"|secretaccesskey|secret_key|session_token|security_token|sessiontoken|access_token|refresh_token|id_token|auth_token"
    r"|api_key|api-key|apikey|client_secret|password|passwd|account_key|accountkey|sharedaccesssignature"
    r"|sas_token|private_key|secret")
_NAME_START = r"(?<![A-Za-z0-9_\-])"
_QUOTED = r"(?:\"[^\"\r\n]*\"|'[^'\r\n]*')"
_HEADER = re.compile(rf"(?i){_NAME_START}({_HEADER_NAMES})([\"']?\s*:\s*)({_QUOTED}|[^\r\n]+)")
_ASSIGN = re.compile(rf"(?i){_NAME_START}({_ASSIGN_NAMES})([\"']?\s*[:=]\s*)({_QUOTED}|[^\s\"',;&}}\]\)]+)")
# The token after `Bearer` / `Basic`; an ordinary lower-case word after it ("the bearer of", "basic
# settings") is prose, not a token.
_PROSE_WORD = r"(?-i:(?![a-z]+(?![A-Za-z0-9\-._~+/=])))"
_BEARER = re.compile(rf"(?i)\b(bearer\s+){_PROSE_WORD}[A-Za-z0-9\-._~+/]+=*")
_BASIC = re.compile(rf"(?i)\b(basic\s+){_PROSE_WORD}[A-Za-z0-9+/]{{8,}}=*")
_TOKEN_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|\bAIza[0-9A-Za-z_\-]{35}\b|\bgh[pousr]_[A-Za-z0-9]{36,}\b")


def _quoted_value(m: re.Match) -> str:
    value = m.group(3)
    if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
        return f"{m.group(1)}{m.group(2)}{value[0]}{REDACTED}{value[0]}"
    return f"{m.group(1)}{m.group(2)}{REDACTED}"


# Names of the secret-named environment variables, re-listed when the number of variables changes and at
# least once a second (listing decodes every variable: ~50 us, too much for every log line); their values
# are read afresh on every call, so a changed value is redacted at once.
_env_names: dict[str, Any] = {"count": -1, "at": 0.0, "names": ()}


def env_secrets() -> list[str]:
    """Values of the secret-named environment variables of this process (8+ characters), longest first."""
    now = time.monotonic()
    if len(os.environ) != _env_names["count"] or now - _env_names["at"] > 1.0:
        _env_names.update(count=len(os.environ), at=now, names=tuple(
            k for k in os.environ if _ENV_SECRET_NAME.search(k) and not _ENV_NOT_SECRET.search(k)))
    vals = {v for k in _env_names["names"] if len(v := os.environ.get(k, "")) >= _ENV_MIN_LEN}
    return sorted(vals, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with every secret-shaped substring replaced by `***` (see the module docstring)."""
    if not isinstance(text, str) or not text:
        return text
    for value in env_secrets():  # first: a pattern below could cut a value in two and hide it from this
        if value in text:
            text = text.replace(value, REDACTED)
    low = text.lower()
    if not any(t in low for t in _TRIGGERS):
        return text
    text = _PEM.sub(REDACTED, text)
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _QUERY.sub(rf"\1{REDACTED}", text)
    text = _HEADER.sub(_quoted_value, text)
    text = _ASSIGN.sub(_quoted_value, text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _BASIC.sub(rf"\1{REDACTED}", text)
    return _TOKEN_SHAPES.sub(REDACTED, text)


def scrub_json(obj: Any) -> Any:
    """A copy of a JSON-like object with every string scrubbed and credential-named keys' values "***".

    Keys are kept as they are (a key is a field name, not data). Tuples and sets come back as lists.
    """
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: (REDACTED if v is not None and is_credential_name(str(k)) else scrub_json(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [scrub_json(v) for v in obj]
    return obj
