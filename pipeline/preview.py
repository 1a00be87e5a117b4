"""A preview (`dgbatch run SPEC --limit N`, `dgbatch preview SPEC`): a job's first rows, run into scratch.

A preview is the real job made small, not a second code path. `run_job(spec, preview=Preview(rows,
scratch))` (pipeline/executor.py) runs `Preview.spec_for(spec)`, the spec with its output pointed at
`scratch` and one replica, through the whole pipeline: validation as for a real run (pipeline/validate.py;
a bad spec fails with the same message), then `Preview.check_output`, which checks the REAL output prefix
read-only for what a real run would refuse there (an overlap with the input, files that are not ours, a
different job: pipeline/prefix.py, pipeline/plan.py), then the plan cut to its first `rows` rows in plan
order (`Preview.first_rows`: ids and seeds are those of the real run), the same replicas, sink and
finalize. Nothing is written under the real output.path, not even the writability probe: the preview does
not prove that a real run could write there.

`preview_rows` reads back what the scratch prefix holds, with each row's prompt (the input read again and
prepared as the replica prepared it, pipeline/rows.py), and `format_preview` prints them as a table. The
caller owns the scratch directory (jobs/cmd_run.py makes a temporary one and deletes it after): it is
local to the driver, so on a multi-node cluster the one replica must be able to write the driver's disk
(a replica on another node makes finalize fail, naming the uncommitted shards, rather than lose rows).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pyarrow as pa

from pipeline.generator import job_columns
from pipeline.outputs import STATUSES
from pipeline.plan import PLAN_FILE, Plan, existing_plan, fingerprint_components
from pipeline.prefix import check_output_prefix
from pipeline.rows import PreparedRow, prepare_rows
from pipeline.shards import read_shard
from pipeline.sink import read_results
from pipeline.spec import JobSpec
from pipeline.storage import Storage
from pipeline.validate import Validated

DEFAULT_ROWS = 20


@dataclass(frozen=True)
class Preview:
    rows: int  # how many input rows, from the start of the plan
    scratch: str  # the prefix the preview writes instead of output.path (empty or absent)

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"a preview runs at least 1 row, got {self.rows}")

    def spec_for(self, spec: JobSpec) -> JobSpec:
        """The job the preview runs: output at the scratch prefix, one replica (the rows fit one shard
        or a few; one model load is the cheapest way through them). Everything that shapes a row's output
        is kept, so the plan fingerprint equals the real job's (pipeline/plan.py leaves replicas out)."""
        d = spec.model_dump(mode="json")
        d["output"] = {**d["output"], "path": self.scratch}
        d["resources"] = {**d["resources"], "replicas": 1}
        return JobSpec.parse(d)

    def check_output(self, spec: JobSpec, checked: Validated) -> None:
        """What a real run of `spec` would refuse at its output prefix, checked by reading only.

        `checked` is the validation of `spec_for(spec)`: its input files and model identity are the real
        job's, so the fingerprint compared with a plan already there is the real job's too."""
        st = spec.storage
        real = Storage(spec.output.path, st.endpoint_url, st.options)
        check_output_prefix(real, spec.input.path, checked.files, st.endpoint_url, st.options)
        existing_plan(real, fingerprint_components(spec, checked.files, checked.identity))

    def first_rows(self, plan: Plan) -> Plan:
        """The plan cut to its first `rows` rows, in plan order; the last shard kept is cut to a piece
        (same id, fewer rows), as bisection cuts one (pipeline/shards.py, `Shard.sub`)."""
        kept, left = [], self.rows
        for shard in plan.shards:
            if left <= 0:
                break
            kept.append(shard if shard.num_rows <= left else shard.sub(shard.start, left))
            left -= kept[-1].num_rows
        return dataclasses.replace(plan, shards=kept)


def preview_rows(spec: JobSpec, preview: Preview) -> tuple[pa.Table, list[str | None]]:
    """(the rows the preview committed under its scratch prefix in plan order, each row's prompt (a
    conversation as its turns) or None where the row could not be prepared). Reads the scratch prefix and
    the input, preparing rows with the replica's own call (pipeline/generator.py); writes nothing."""
    st = spec.storage
    table = read_results(preview.scratch, st.endpoint_url, st.options)
    scratch = Storage(preview.scratch, st.endpoint_url, st.options)
    plan = preview.first_rows(Plan.from_json(json.loads(scratch.read_bytes(PLAN_FILE))))
    so = spec.structured_output
    extra = (so.schema_column,) if so is not None and so.schema_column else ()
    prompts: list[str | None] = []
    for shard in plan.shards:
        got = read_shard(shard, job_columns(spec), st.endpoint_url, st.options)
        rows = prepare_rows(got.table, spec.input, job_seed=spec.generation.seed, file_rel=shard.file_rel,
                            first_row=shard.start, extra_columns=extra, unreadable=got.unreadable)
        # results hold generation.n rows (samples) per input row, in (input order, sample_index) order
        prompts += [p for r in rows for p in [_shown_prompt(r)] * spec.generation.n]
    if len(prompts) != table.num_rows:
        raise RuntimeError(f"preview: {table.num_rows} result rows but {len(prompts)} input rows read back")
    return table, prompts


def _shown_prompt(row: PreparedRow) -> str | None:
    """The prompt as the row's recipe made it: its text, or its conversation as `role: content` turns."""
    if row.prompt is not None or not row.messages:
        return row.prompt
    return " | ".join(f"{m['role']}: {m['content']}" for m in row.messages)


_WIDTHS = {"id": 28, "status": 7, "prompt": 44, "output": 72}


def _cell(value: object, width: int, *, keep_end: bool = False) -> str:
    """One line of at most `width` characters: newlines shown as \\n, the cut marked with '...'. With
    `keep_end` the cut is in the middle: a prompt's template usually opens every row alike, and the
    row's own text comes last."""
    text = "" if value is None else str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    if len(text) <= width:
        return text
    if keep_end:
        head = (width - 3) // 3
        return text[:head] + "..." + text[len(text) - (width - 3 - head):]
    return text[:width - 3] + "..."


def format_preview(table: pa.Table, prompts: list[str | None]) -> str:
    """The preview as a text table: one line per row (id, status, prompt, output), then a tally.

    The output cell is the row's `json` when structured output produced one, else its `text`; a row that
    is not ok shows its error after the text (an error row has no text). Long cells are cut to one line,
    a prompt in its middle (its start and its end show)."""
    has_json = "json" in table.column_names
    lines = ["  ".join(name.ljust(w) for name, w in _WIDTHS.items()).rstrip()]
    lines.append("  ".join("-" * w for w in _WIDTHS.values()))
    by_status = dict.fromkeys(STATUSES, 0)
    for row, prompt in zip(table.to_pylist(), prompts, strict=True):
        by_status[row["status"]] += 1
        out = row["json"] if has_json and row["json"] is not None else row["text"]
        if row["status"] != "ok":
            out = f"{out}  [{row['status']}: {row['error']}]" if out is not None else \
                f"[{row['status']}: {row['error']}]"
        cells = {"id": row["id"], "status": row["status"], "prompt": prompt, "output": out}
        lines.append("  ".join(_cell(cells[name], w, keep_end=name == "prompt").ljust(w)
                               for name, w in _WIDTHS.items()).rstrip())
    tally = ", ".join(f"{s} {n}" for s, n in by_status.items())
    lines.append(f"{table.num_rows} rows ({tally})")
    return "\n".join(lines)
