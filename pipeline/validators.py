"""Validators that regenerate: `structured_output.validator: "module:function"` and its retry loop.

Owns two things: the seed of a regeneration (`regeneration_seed`) and the loop that validates a batch's
outputs and regenerates the rejected ones together (`Validator.generate`). The callable is resolved by
pipeline/user_code.py, before any work by the job spec's check and again in each replica.

The callable is `fn(text: str, row: dict) -> None | True | False | str`: `text` is a sample's decoded output
(after it passed the structured-output check), `row` its input row as a dict of the columns the job reads
(prompt / template / messages / id / settings columns, passthrough columns, the schema column: pipeline/
generator.py `job_columns`; a column only the validator needs goes in `output.passthrough_columns`).
None or True accept; a string rejects with that message; False rejects with "validator rejected the
output". Anything else returned, or anything raised, is that row's error (status `error`, the message
naming the validator and the exception), never the job's.

A rejected sample is generated again with `regeneration_seed(sample seed, attempt)`, at most
`max_regenerations` times; each round sends every rejected sample of the batch to the backend in one call.
After the last regeneration a still-rejected sample is written with status `invalid`, its last text, and
the validator's last message. Only the validator's rejections regenerate: a sample whose output fails the
structured-output check or errors in the backend is written as it is, as without a validator. Seeds depend
only on the row's seed and the attempt, so a retried shard or a resumed job reproduces every attempt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

from pipeline.outputs import RowResult
from pipeline.rows import PreparedRow
from pipeline.user_code import load_callable

REJECTED = "validator rejected the output"

GenerateFn = Callable[[list[PreparedRow]], list[RowResult]]


def regeneration_seed(seed: int, attempt: int) -> int:
    """The seed of a sample's `attempt`-th generation (1-based) from its first seed: attempt 1 keeps it, the
    others hash (seed, "regenerate", attempt) to 63 bits, as pipeline/rows.py `sample_seed` does."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if attempt == 1:
        return seed
    digest = hashlib.blake2b(f"{seed}\x1fregenerate\x1f{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Validator:
    """A resolved `structured_output.validator` with its regeneration budget."""

    def __init__(self, name: str, max_regenerations: int):
        if max_regenerations < 0:
            raise ValueError(f"max_regenerations must be >= 0, got {max_regenerations}")
        self.name, self.max_regenerations = name, max_regenerations
        self.fn = load_callable(name)

    def check(self, text: str, row: dict) -> tuple[str, str | None]:
        """("ok", None), ("invalid", message) or ("error", message) for one output."""
        try:
            got = self.fn(text, dict(row))  # a copy: a validator that edits its row cannot touch the next
        except Exception as exc:  # noqa: BLE001 - a validator's failure is that row's error
            return "error", f"validator {self.name} raised {type(exc).__name__}: {exc}"
        if got is None or got is True:
            return "ok", None
        if got is False:
            return "invalid", REJECTED
        if isinstance(got, str):
            return "invalid", got or REJECTED
        return "error", (f"validator {self.name} returned a {type(got).__name__}; expected None or True "
                         "(accept), or False or a message string (reject)")

    def generate(self, generate: GenerateFn, rows: list[PreparedRow], inputs: Sequence[dict]
                 ) -> tuple[list[PreparedRow], list[RowResult]]:
        """Generate `rows` with `generate` (a backend's), validate, regenerate the rejected ones in one call
        per round. `inputs[row.index]` is a row's input row. Returns (rows, results) position for position:
        each row as last generated (its seed the one that made its text) and its result, whose
        `generations` says how many times it was generated."""
        rows, results = list(rows), _generate(generate, rows)
        first_seeds = [r.seed for r in rows]
        pending, attempt = list(range(len(rows))), 1
        while pending:
            retry = []
            for i in pending:
                res = results[i]
                res.generations = attempt
                if res.status != "ok":  # the structured-output check or the backend already failed it
                    continue
                status, message = self.check(res.text or "", inputs[rows[i].index])
                if status == "invalid" and attempt <= self.max_regenerations:
                    retry.append(i)
                elif status == "invalid":  # out of regenerations: the last text, the last message
                    res.status, res.error = "invalid", f"validator {self.name}: {message}"
                elif status == "error":  # the text stays: it is what made the validator fail
                    res.status, res.error = "error", message
            if not retry:
                break
            attempt += 1
            # from each sample's first seed, not chained: attempt k's seed does not depend on k-1's
            again = [replace(rows[i], seed=regeneration_seed(first_seeds[i], attempt)) for i in retry]
            for i, row, res in zip(retry, again, _generate(generate, again)):
                rows[i], results[i] = row, res
            pending = retry
        return rows, results


def _generate(generate: GenerateFn, rows: list[PreparedRow]) -> list[RowResult]:
    got = generate(rows)
    if len(got) != len(rows):
        raise RuntimeError(f"backend returned {len(got)} results for {len(rows)} rows")
    return got
