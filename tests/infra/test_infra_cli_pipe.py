"""`dgbatch ... | head`: a reader that closes stdout early ends the command quietly (exit 141, no traceback),
through the one guard in jobs/cli.py main, with real pipes and the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs import cli

REPO = Path(__file__).resolve().parents[2]
DGBATCH = str(Path(sys.executable).with_name("dgbatch"))
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's code, whichever checkout the venv installed


@pytest.fixture
def big_run(make_run) -> Path:
    """A finished run whose `status --json` is ~1 MiB (a long manifest file list): far more than a pipe
    holds, so the writer is still writing when `head` exits."""
    root, _ = make_run("big", shards=2, rows=3)
    manifest = json.loads((root / "_manifest.json").read_text())
    manifest["files"] = [f"data/shard-{i:07d}.attempt-1.parquet" for i in range(25000)]
    (root / "_manifest.json").write_text(json.dumps(manifest))
    return root


def test_status_json_into_head_ends_quietly(big_run):
    out = subprocess.run(["bash", "-c", f'set -o pipefail; "{DGBATCH}" status --json "{big_run}" | head -1'],
                         capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO)
    assert out.stdout == "{\n"
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 141  # pipefail: dgbatch's own status, as for `cat big | head -1`


def test_reader_gone_before_any_output(make_run):
    """The read end is closed before the command writes a byte: the first write fails."""
    root, _ = make_run("small", shards=2, rows=3)
    for args in (["status", "--json", str(root)], ["status", str(root)]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            proc = subprocess.run([DGBATCH, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                  timeout=120, env=ENV, cwd=REPO)
        finally:
            os.close(write_end)
        assert proc.returncode == 141, proc.stderr[-3000:]
        assert proc.stderr == "", proc.stderr[-3000:]


def test_a_broken_pipe_elsewhere_keeps_its_traceback(tmp_path, monkeypatch):
    """Only a closed stdout is quiet: a BrokenPipeError from anything else (a storage socket) is raised."""
    (tmp_path / "cmd_boom.py").write_text(textwrap.dedent("""
        def add_parser(parser):
            pass

        def run(args):
            raise BrokenPipeError(32, "Broken pipe (a storage connection)")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "boom", ("cmd_boom", "raises"))
    with pytest.raises(BrokenPipeError, match="storage connection"):
        cli.main(["boom"])
