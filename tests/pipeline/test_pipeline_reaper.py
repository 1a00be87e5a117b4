"""The local-Ray watchdog (pipeline/reaper.py): a SIGKILLed driver leaves no processes behind, a normal end
stops nothing, a joined cluster is never watched, and a recycled pid is never signalled.

Process trees are read from /proc here, independently of the module under test. Every process a test
starts is stopped by the test itself, by pid and start time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from pipeline_helpers import spec, wait_for, write_prompts

from pipeline import reaper

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the watchdog reads /proc (Linux)")


def _stat(pid: int) -> tuple[int, int, str] | None:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text(errors="replace").rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(rest[1]), int(rest[19]), rest[0]) if rest[0] not in ("Z", "X") else None


def _tree(root: int) -> dict[tuple[int, int], str]:
    """(pid, start) -> command line of every live process under `root`."""
    kids: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit() and (st := _stat(int(e))) is not None:
            kids.setdefault(st[0], []).append(int(e))
    out, todo = {}, [root]
    while todo:
        for pid in kids.get(todo.pop(), []):
            st = _stat(pid)
            if st is not None:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                out[(pid, st[1])] = cmd
                todo.append(pid)
    return out


def _alive(who: tuple[int, int]) -> bool:
    st = _stat(who[0])
    return st is not None and st[1] == who[1]


def _kill_all(procs) -> None:
    for who in procs:
        if _alive(who):
            try:
                os.kill(who[0], signal.SIGKILL)
            except ProcessLookupError:
                pass


# A driver with a plain process tree and no Ray: one child it had before Reaper() (not ours), then a child
# with a grandchild, a child that ignores SIGTERM, watch(), and one more child after watch() (found by the
# watchdog's refresh). It writes the pids it knows to OUT and, in "done" mode, calls done() when DONE exists.
_PLAIN_DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from pipeline.reaper import REFRESH_S, Reaper
    out, mode = sys.argv[1], sys.argv[2]
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    old = subprocess.Popen(sleep)
    r = Reaper()
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                               "time.sleep(600)"])
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    time.sleep(1.0)  # the grandchild exists
    r.watch()
    late = subprocess.Popen(sleep)
    time.sleep(3 * REFRESH_S)  # the watchdog has seen `late`
    info = {"old": old.pid, "reaper": r.pid, "parent": parent.pid, "stubborn": stubborn.pid, "late": late.pid}
    with open(out + ".tmp", "w") as f:
        json.dump(info, f)
    os.rename(out + ".tmp", out)
    if mode == "done":
        while not os.path.exists(out + ".done"):
            time.sleep(0.1)
        r.done()
        with open(out + ".finished", "w") as f:
            f.write("ok")
    time.sleep(600)
""")


def _start_plain_driver(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, dict, dict]:
    script = tmp_path / "driver.py"
    script.write_text(_PLAIN_DRIVER)
    info_path = tmp_path / "info.json"
    # stderr to a file: a pipe would stay open while any child that inherited it lives
    proc = subprocess.Popen([sys.executable, str(script), str(info_path), mode], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "driver.err").open("wb"),
                            start_new_session=True)
    wait_for(lambda: info_path.exists() or proc.poll() is not None, 60, "the driver's process tree")
    assert proc.poll() is None, (tmp_path / "driver.err").read_text()[-2000:]
    info = json.loads(info_path.read_text())
    return proc, info, _tree(proc.pid)


def _by_pid(tree: dict, pid: int) -> tuple[int, int]:
    (who,) = [w for w in tree if w[0] == pid]
    return who


def test_driver_sigkill_stops_what_it_started_and_nothing_else(tmp_path):
    proc, info, tree = _start_plain_driver(tmp_path, "kill")
    try:
        assert info["reaper"] is not None, "watch() started no watchdog although the driver started children"
        old, watchdog = _by_pid(tree, info["old"]), _by_pid(tree, info["reaper"])
        ours = [w for w in tree if w not in (old, watchdog)]
        # parent, its grandchild, stubborn, late: all under the driver, all started after Reaper()
        assert len(ours) == 4 and {info["parent"], info["stubborn"], info["late"]} <= {w[0] for w in ours}
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not any(_alive(w) for w in ours), 15,
                  lambda: f"the driver's processes to go: {[tree[w] for w in ours if _alive(w)]}")
        wait_for(lambda: not _alive(watchdog), 10, "the watchdog to exit")
        assert _alive(old), "the watchdog stopped a process the driver had before Reaper()"
        assert "died: stopped 4 processes" in (tmp_path / "driver.err").read_text()
    finally:
        proc.kill()
        _kill_all(tree)


def test_normal_end_stops_nothing(tmp_path):
    proc, info, tree = _start_plain_driver(tmp_path, "done")
    try:
        watchdog = _by_pid(tree, info["reaper"])
        (tmp_path / "info.json.done").touch()
        wait_for(lambda: (tmp_path / "info.json.finished").exists(), 30, "the driver's done()")
        assert not _alive(watchdog), "done() returned but the watchdog still runs"
        # Even once the driver dies after a normal end, what it left running is not ours to stop any more.
        proc.kill()
        proc.wait(10)
        time.sleep(3 * reaper.REFRESH_S + reaper.GRACE_S)
        rest = [w for w in tree if w != watchdog]
        assert all(_alive(w) for w in rest), [tree[w] for w in rest if not _alive(w)]
    finally:
        proc.kill()
        _kill_all(tree)


def test_no_watchdog_when_nothing_was_started():
    # What a driver joining a running cluster sees: ray.init starts no process under it.
    r = reaper.Reaper()
    r.watch()
    assert r.pid is None
    r.done()  # harmless


def test_a_recycled_pid_is_never_signalled():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        st = _stat(proc.pid)
        assert st is not None
        assert not reaper.send((proc.pid, st[1] + 1), signal.SIGKILL)  # same pid, another process's start
        assert reaper.teardown({(proc.pid, st[1] - 1)}, grace_s=0.1) == []
        time.sleep(0.2)
        assert proc.poll() is None
        assert reaper.send((proc.pid, st[1]), signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


_RAY_DRIVER = textwrap.dedent("""
    import json, sys
    from pipeline.backend import StubBackendFactory
    from pipeline.executor import run_job
    with open(sys.argv[1]) as f:
        job = json.load(f)
    run_job(job, backend_factory=StubBackendFactory(cost_per_row_s=0.2), ray_address=None, progress=False)
""")


@pytest.mark.slow
def test_sigkilled_driver_leaves_no_ray_processes(tmp_path):
    """run_job starts its own Ray (no address, private RAY_TMPDIR); SIGKILL the driver once it has committed
    something. Without the watchdog the dashboard and runtime-env agents outlived it by ~60 s."""
    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(60)])
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in.parquet"), str(out), resources={"shard_rows": 4, "custom_resources": {}})
    (tmp_path / "spec.json").write_text(json.dumps(job))
    (tmp_path / "driver.py").write_text(_RAY_DRIVER)
    ray_tmp = tempfile.mkdtemp(prefix="dgr-", dir="/tmp")  # short: Ray's socket paths must stay < 107 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    err = tmp_path / "driver.err"  # a file, not a pipe: Ray forwards worker logs to it and must never block
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "spec.json")],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err.open("wb"),
                            start_new_session=True)
    tree: dict = {}
    try:
        commits = out / "_commits"
        wait_for(lambda: proc.poll() is not None or (commits.exists() and any(commits.iterdir())), 180,
                  "a first commit")
        assert proc.poll() is None, err.read_text()[-3000:]
        tree = _tree(proc.pid)
        names = " ".join(tree.values())
        assert "gcs_server" in names and "raylet" in names and "DashboardAgent" in names, names
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not any(_alive(w) for w in tree), 20,
                  lambda: "the killed driver's processes to go: "
                  + "; ".join(cmd[:80] for w, cmd in tree.items() if _alive(w)))
        assert "died: stopped" in err.read_text()
    finally:
        proc.kill()
        _kill_all(tree)
        shutil.rmtree(ray_tmp, ignore_errors=True)
