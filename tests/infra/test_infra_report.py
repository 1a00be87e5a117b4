"""The run report on synthetic runs laid out as the sink writes them: finished, in progress, empty."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jobs.cli import main as cli_main
from pipeline.report import error_kind, write_report
from pipeline.report.data import load_run


def _images(index: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', index.read_text())


def test_finished_run_report(make_run):
    root, info = make_run(shards=6, rows=10)
    index = Path(write_report(str(root)))
    assert index == root / "_report" / "index.html"
    page = index.read_text()
    imgs = _images(index)
    # Every chart the page references exists and is a PNG; all the charts are there.
    assert {"throughput.png", "status_counts.png", "tokens_per_forward.png", "denoising_steps.png",
            "per_replica.png", "errors.png"} <= set(imgs)
    for name in imgs:
        assert (index.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert ">finished<" in page
    assert "6 of 6" in page and f"{info['rows']} of {info['rows']}" in page  # zombie attempt not counted
    for status, n in info["status"].items():
        assert f"<td>rows {status}</td><td>{n} (" in page
    # The resolved spec and the manifest are on the page; the planned shards table too.
    assert "max_new_tokens: 64" in page and "prompt_column: prompt" in page
    assert "replica_seconds: 170.0" in page
    assert page.count("<td>committed</td>") == 6
    # Errors grouped by kind, with an example; HTML in data is escaped.
    assert "<td>PromptTooLong</td><td>3</td>" in page and "<td>schema</td><td>2</td>" in page


def test_in_progress_run_report(make_run):
    root, info = make_run(shards=8, rows=5, committed=3, finished=False)
    index = Path(write_report(str(root)))
    page = index.read_text()
    assert ">in progress<" in page and "3 of 8" in page and "15 of 40" in page
    assert "no _manifest.json yet" in page
    assert page.count("<td>pending</td>") == 5
    for name in _images(index):
        assert (index.parent / name).is_file()
    assert "max_new_tokens: 64" in page  # the spec comes from _job.json before any manifest exists


def test_run_with_nothing_committed_and_refresh(make_run):
    root, _ = make_run(shards=3, rows=4, committed=0, finished=False, zombie=False)
    index = Path(write_report(str(root)))
    assert "No shard committed yet" in index.read_text()
    assert _images(index) == []
    # Rerunning later refreshes the page and its charts.
    make_run(shards=3, rows=4, committed=3, finished=True, zombie=False)
    write_report(str(root))
    assert "throughput.png" in _images(index)


def test_data_is_escaped_and_bad_markers_are_reported(make_run):
    root, _ = make_run(shards=2, rows=4, finished=False, zombie=False)
    (root / "_commits" / "shard-99999.json").write_text("{not json")
    index = Path(write_report(str(root)))
    page = index.read_text()
    assert "<b>hello</b>" not in page  # row text is never rendered raw (nor at all)
    assert "shard-99999.json: unreadable JSON" in page


def test_only_files_named_by_markers_are_read(make_run):
    root, info = make_run(shards=4, rows=5)
    snap = load_run(str(root))
    assert snap.rows.num_rows == info["rows"]
    assert sorted(snap.rows.column("id").to_pylist()) == sorted(f"f0-{i}" for i in range(20))
    assert {c.file for c in snap.commits} == {json.loads(p.read_text())["file"]
                                               for p in (root / "_commits").glob("*.json")}


@pytest.mark.parametrize(("a", "b"), [
    ("PromptTooLong: prompt of 900 tokens", "PromptTooLong: prompt of 12000 tokens"),
    ("prompt of 900 tokens exceeds 512", "prompt of 77 tokens exceeds 512"),
    ("column 'x' is null", "column 'yy' is null"),
])
def test_error_kind_groups_messages_that_differ_only_in_values(a, b):
    assert error_kind(a) == error_kind(b)
    assert error_kind("TimeoutError: x") != error_kind("ValueError: x")


def test_cli_report(make_run, capsys, tmp_path):
    root, _ = make_run(shards=2, rows=3)
    assert cli_main(["report", str(root), "--report-dir", str(tmp_path / "elsewhere")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "elsewhere" / "index.html")
    assert "2 of 2" in (tmp_path / "elsewhere" / "index.html").read_text()
    assert cli_main(["report", str(root / "missing")]) == 1
    assert "output prefix does not exist" in capsys.readouterr().err


def test_report_of_a_run_on_s3(s3_out, capsys):
    url, endpoint, info = s3_out
    # Through the CLI, into the bucket next to the run (the default place).
    assert cli_main(["report", url, "--endpoint-url", endpoint]) == 0
    assert capsys.readouterr().out.strip() == f"{url}/_report/index.html"
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    page = fs.cat_file("runs/out/_report/index.html").decode()
    assert ">in progress<" in page and f"{info['rows']} of 20" in page
    for name in re.findall(r'<img src="([^"]+)"', page):
        assert fs.cat_file(f"runs/out/_report/{name}")[:4] == b"\x89PNG"
