"""`format` languages: one regex per format we generate, each a subset of what its checker accepts.

jsonschema's FormatChecker decides validity (constraints/output_check.py checks every output with it); which
formats it checks depends on the draft and on the installed packages (pyproject's test extra: fqdn,
rfc3986-validator, isoduration, webcolors, jsonpointer, uri-template; not rfc3987-syntax, so "iri" and
"iri-reference" are unchecked there, and their strings are URIs that the "uri" checks accept). Every regex
here is accepted by the checker of every draft that checks the format, so the draft does not matter:
- regex_atoms.FORMATS: date, time, date-time, email, uuid, ipv4 (days 01-28, no leap seconds).
- hosts are lowercase ASCII labels without hyphens, URIs are http(s) over unreserved characters, IPv6
  addresses are fully written.
- duration (drafts 2019-09 and 2020-12, `isoduration.parse_duration` plus "ends in a unit letter"): ISO 8601
  durations P[nY][nM][nD][T[nH][nM][nS]] with at least one part, or PnW, with integers of 1-4 digits
  (https://datatracker.ietf.org/doc/html/rfc3339#appendix-A).
- color (draft 3 only, webcolors: a CSS 2.1 name or #rgb / #rrggbb): lowercase hex codes and the 17 CSS 2.1
  names, valid where it is checked and plain strings elsewhere.
Draft 3 (whose `time` has no offset, and whose host-name / ip-address are checked) is refused as a whole:
constraints/drafts.py.
A format outside FORMATS that some draft checks (regex_atoms.CHECKED_FORMATS) is refused; any other format
is unchecked and left free.
"""

from __future__ import annotations

import functools

from constraints import regex_atoms as ra
from constraints.ecma_regex import parse_pattern

_LABEL = "[a-z][a-z0-9]{0,19}"
_HOST = rf"{_LABEL}(?:\.{_LABEL}){{0,3}}"
_SEGMENT = "[A-Za-z0-9._~-]"
_URI = rf"https?://{_HOST}(?::[1-9][0-9]{{0,3}})?(?:/{_SEGMENT}*)*(?:\?[A-Za-z0-9._~=&-]*)?"
_POINTER = "(?:/[A-Za-z0-9_.-]*)*"
_N = "(?:0|[1-9][0-9]{0,3})"
_DUR_DATE = f"(?:{_N}Y(?:{_N}M)?(?:{_N}D)?|{_N}M(?:{_N}D)?|{_N}D)"
_DUR_TIME = f"T(?:{_N}H(?:{_N}M)?(?:{_N}S)?|{_N}M(?:{_N}S)?|{_N}S)"
_CSS21 = (
    "aqua|black|blue|fuchsia|gray|green|lime|maroon|navy|olive|orange|purple|red|silver|teal|white|yellow"
)
FORMATS: dict[str, str] = {
    **ra.FORMATS,
    "hostname": _HOST,
    "idn-hostname": _HOST,
    "ipv6": "[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){7}",
    "uri": _URI,
    "iri": _URI,
    "uri-reference": rf"(?:{_URI}|/{_SEGMENT}+(?:/{_SEGMENT}*)*)",
    "iri-reference": rf"(?:{_URI}|/{_SEGMENT}+(?:/{_SEGMENT}*)*)",
    "uri-template": _URI,
    "json-pointer": _POINTER,
    # jsonschema's checker rejects a digit after a 0 anywhere in the number ("10"): no zeros after the first
    "relative-json-pointer": f"(?:0|[1-9]{{1,3}})(?:#|{_POINTER})",
    "regex": "[A-Za-z0-9 _]*",
    "duration": f"P(?:{_DUR_DATE}(?:{_DUR_TIME})?|{_DUR_TIME}|{_N}W)",
    "color": f"(?:#[0-9a-f]{{6}}|#[0-9a-f]{{3}}|{_CSS21})",
}


@functools.lru_cache(maxsize=256)
def format_node(fmt: str):
    """The AST (ecma_regex.py) of format `fmt`'s generated strings; `fmt` in FORMATS."""
    return parse_pattern(FORMATS[fmt], "#format")
